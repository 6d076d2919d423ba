import { expect } from 'chai';
import { Flotilla } from '../../client';
import { StickyPartitioner, murmur2, partitionForKey, toPositive } from '../../client/partitioner';
import { FakeCluster } from './fake-broker';

// Key placement must be Kafka's default, byte for byte: a key written by a Java producer and
// one written by Flotilla's client land on the same partition.

// Kafka's own vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java
// testMurmur2), plus one-byte and five-byte keys (a tail of length 1) that Akka checks
// against Kafka's implementation.
const KAFKA_MURMUR2: [string, number][] = [
  ['21', -973932308],
  ['foobar', -790332482],
  ['a-little-bit-long-string', -985981536],
  ['a-little-bit-longer-string', -1486304829],
  ['lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8', -58897971],
  ['abc', 479470107],
  ['1', -1993445489],
  ['12345', -1188365604],
];

describe('client: partitioner', () => {
  for (const [key, hash] of KAFKA_MURMUR2) {
    it(`murmur2("${key}") equals Kafka's Utils.murmur2: ${hash}`, () => {
      expect(murmur2(Buffer.from(key))).to.equal(hash);
    });
  }

  it('keyed placement is toPositive(murmur2(key)) % partitions: the sign bit cleared, not Math.abs', () => {
    // toPositive(-790332482) = 1357151166; Math.abs would give 790332482 and partition 2.
    expect(toPositive(-790332482)).to.equal(1357151166);
    expect(partitionForKey(Buffer.from('foobar'), 3)).to.equal(0);
    expect(partitionForKey(Buffer.from('abc'), 6)).to.equal(3);
    expect(partitionForKey(Buffer.from('a-little-bit-long-string'), 3)).to.equal(2);
    expect(partitionForKey(Buffer.from('21'), 6)).to.equal(0);
  });

  it('keyless records stick to one partition until its batch closes, then move to another', () => {
    let r = 0;
    const seq = [0.5, 0.0, 0.99, 0.4];
    const sticky = new StickyPartitioner(() => seq[r++ % seq.length]!);
    const first = sticky.partition('t', 4);
    expect(first).to.equal(2);
    expect(sticky.partition('t', 4), 'same partition while the batch is open').to.equal(first);
    sticky.onBatchClosed('t', first, 4);
    const second = sticky.partition('t', 4);
    expect(second).to.not.equal(first);
    sticky.onBatchClosed('t', 3, 4); // another partition's batch: no change
    expect(sticky.partition('t', 4)).to.equal(second);
    for (let i = 0; i < 20; i++) {
      const before = sticky.partition('t', 4);
      sticky.onBatchClosed('t', before, 4);
      expect(sticky.partition('t', 4), 'never the same partition twice in a row').to.not.equal(before);
    }
  });

  describe('end to end against a fake broker', function () {
    this.timeout(20_000);
    let cluster: FakeCluster;
    beforeEach(async () => {
      cluster = await FakeCluster.start({ brokers: 2, topics: { keyed: 6 } });
    });
    afterEach(() => cluster.stop());

    it("a keyed record is stored in Kafka's partition for its key", async () => {
      const producer = new Flotilla({ brokers: cluster.addresses }).producer({ lingerMs: 0 });
      await producer.connect();
      try {
        const [md] = await producer.send({ topic: 'keyed', messages: [{ key: 'abc', value: 'v' }] });
        expect(md!.partition).to.equal(3);
        expect(cluster.values('keyed', 3)).to.deep.equal(['v']);
        const explicit = await producer.send({ topic: 'keyed', messages: [{ key: 'abc', value: 'w', partition: 5 }] });
        expect(explicit[0]!.partition, 'an explicit partition wins over the key').to.equal(5);
      } finally {
        await producer.disconnect();
      }
    });
  });
});
