import { expect } from 'chai';
import { Flotilla } from '../../client';
import { encodeRecordBatch } from '../../shared/records';
import { FakeCluster } from './fake-broker';

// Admin.fetchTopicOffsets against fake brokers: it keeps answering after leadership moves.

describe('client: admin fetchTopicOffsets', function () {
  this.timeout(20_000);
  let cluster: FakeCluster;
  beforeEach(async () => {
    cluster = await FakeCluster.start({ brokers: 2, topics: { t: 1 } });
  });
  afterEach(() => cluster.stop());

  it('follows a leader change between calls (a long-lived admin does not keep asking the former leader)', async () => {
    const admin = new Flotilla({ brokers: cluster.addresses }).admin();
    try {
      const leader = cluster.partition('t', 0).leader;
      expect(await admin.fetchTopicOffsets('t', 5_000)).to.deep.equal([{ partition: 0, high: 0, low: 0 }]);
      cluster.moveLeader('t', 0, cluster.brokers.find((b) => b.id !== leader)!.id);
      cluster.append('t', 0, encodeRecordBatch({ records: [{ value: Buffer.from('a'), timestampMs: 1 }, { value: Buffer.from('b'), timestampMs: 2 }] }));
      expect(await admin.fetchTopicOffsets('t', 5_000)).to.deep.equal([{ partition: 0, high: 2, low: 0 }]);
    } finally {
      await admin.close();
    }
  });

  it('low is the log start offset and high the high watermark (one partition asked twice in a ListOffsets is answered by position)', async () => {
    const admin = new Flotilla({ brokers: cluster.addresses }).admin();
    try {
      for (let i = 0; i < 3; i++) cluster.append('t', 0, encodeRecordBatch({ records: [{ value: Buffer.from(`v${i}`), timestampMs: i }] }));
      cluster.truncateBefore('t', 0, 1);
      expect(await admin.fetchTopicOffsets('t', 5_000)).to.deep.equal([{ partition: 0, high: 3, low: 1 }]);
    } finally {
      await admin.close();
    }
  });
});
