import { expect } from 'chai';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { MetadataUpdate } from '../../broker/metadata-follower';
import { NoopProducerGuard, ReplicaManager } from '../../broker/replica';
import type { ProducerGuardContext } from '../../broker/replica';
import { silentLogger } from '../../shared/log';
import { MetadataDelta, MetadataImage } from '../../shared/metadata';
import type { MetadataRecord } from '../../shared/metadata';

// A broker handed many replicas in one metadata batch (a restart, a takeover, thousands of
// topics created) opens them a bounded number at a time, each once, with the
// tail-cache share of the whole batch, and a later metadata change looks only at the topics
// it touched (not at every hosted partition).

const KIB = 1024;
const TOPICS = 40;
const topicId = (i: number): string => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

function createTopics(from: number, to: number): MetadataRecord[] {
  const out: MetadataRecord[] = [];
  for (let i = from; i < to; i++) {
    out.push({ type: 'Topic', name: `t${i}`, topicId: topicId(i), reason: '', timestampMs: 0 });
    out.push({ type: 'Partition', topicId: topicId(i), partition: 0, replicas: [1], isr: [1], leader: 1, leaderEpoch: 0, partitionEpoch: 0 });
  }
  return out;
}

function update(previous: MetadataImage, records: MetadataRecord[], offset: number): MetadataUpdate {
  const delta = new MetadataDelta(previous);
  delta.replayBatch(records, offset);
  return { previous, image: delta.apply(), localChanges: delta.localChanges(1), fromSnapshot: false, touchedTopicIds: delta.touchedTopicIds() };
}

describe('ReplicaManager: opening many replicas at once', function () {
  this.timeout(60_000);
  let dataDir: string;
  let rm: ReplicaManager;
  let inFlight = 0;
  let inFlightMax = 0;
  const opened: string[] = [];

  beforeEach(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-rm-open-'));
    inFlight = 0;
    inFlightMax = 0;
    opened.length = 0;
    rm = new ReplicaManager({
      brokerId: 1,
      dataDir,
      logger: silentLogger(),
      alterPartition: () => Promise.reject(new Error('not in this test')),
      brokerEpoch: () => 1,
      isFenced: () => false,
      openConcurrencyMax: 4,
      tailCacheTotalBytes: TOPICS * 128 * KIB,
      // Counts the opens in progress: the guard is made inside a partition's open section.
      producerGuardFactory: async (ctx: ProducerGuardContext) => {
        inFlight++;
        inFlightMax = Math.max(inFlightMax, inFlight);
        opened.push(ctx.topicName);
        await new Promise((r) => setTimeout(r, 2));
        inFlight--;
        return new NoopProducerGuard();
      },
    });
  });

  afterEach(async () => {
    await rm.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('opens at most openConcurrencyMax at once, each of them once, each with the share of the whole batch', async () => {
    const u = update(MetadataImage.EMPTY, createTopics(0, TOPICS), 1);
    rm.onMetadataUpdate(u);
    await rm.settled();
    expect(rm.replicas().filter((r) => r.role === 'leader')).to.have.length(TOPICS);
    expect(inFlightMax, 'opens in progress at once').to.equal(4);
    expect(rm.openConcurrencyPeak).to.equal(4);
    expect([...opened].sort(), 'each opened once').to.deep.equal(u.localChanges.leaders.map((c) => c.topicName).sort());
    // 40 replicas share 40 x 128 KiB: each log got 128 KiB when it opened, not the share of
    // the replicas hosted so far (2 MiB for the first ones), so no resize is pending.
    expect(rm.tailCacheShareBytes()).to.equal(128 * KIB);
    for (let i = 0; i < TOPICS; i++) expect(rm.lookup(`t${i}`, 0)!.p!.log.config.tailCacheBytes, `t${i}`).to.equal(128 * KIB);
  });

  it('a metadata change looks at the hosted partitions of the topics it touched only, and still applies a config change', async () => {
    const first = update(MetadataImage.EMPTY, createTopics(0, TOPICS), 1);
    rm.onMetadataUpdate(first);
    await rm.settled();
    const scansBefore = rm.configScans;

    // An ISR change of one topic and a config change of another: two hosted partitions looked at, not 40.
    const second = update(
      first.image,
      [
        { type: 'PartitionChange', topicId: topicId(3), partition: 0, isr: [1], reason: 'test', timestampMs: 1 },
        { type: 'Config', resourceType: 'topic', resourceName: 't7', key: 'segment.bytes', value: String(1024 * KIB), reason: 'test', timestampMs: 1 },
      ],
      2,
    );
    rm.onMetadataUpdate(second);
    await rm.settled();
    expect(rm.configScans - scansBefore).to.equal(2);
    expect(rm.lookup('t7', 0)!.p!.log.config.segmentBytes).to.equal(1024 * KIB);
    expect(rm.lookup('t8', 0)!.p!.log.config.segmentBytes).to.not.equal(1024 * KIB);

    // Topics created elsewhere (not hosted here) cost no look at the 40 hosted ones either.
    const third = update(second.image, [{ type: 'Topic', name: 'other', topicId: topicId(999), reason: '', timestampMs: 0 }, { type: 'Partition', topicId: topicId(999), partition: 0, replicas: [2], isr: [2], leader: 2, leaderEpoch: 0, partitionEpoch: 0 }], 3);
    rm.onMetadataUpdate(third);
    expect(rm.configScans - scansBefore).to.equal(2);
  });

  it('a partition removed while it waited for an open slot is never opened', async () => {
    const first = update(MetadataImage.EMPTY, createTopics(0, TOPICS), 1);
    rm.onMetadataUpdate(first);
    // Same batch of work queued: delete the last topic before its turn comes.
    const removal = update(first.image, [{ type: 'RemoveTopic', topicId: topicId(TOPICS - 1), reason: 'gone', timestampMs: 1 }], 2);
    rm.onMetadataUpdate(removal);
    await rm.settled();
    expect(opened).to.not.include(`t${TOPICS - 1}`);
    expect(rm.replicas()).to.have.length(TOPICS - 1);
    expect(fs.existsSync(path.join(dataDir, 'logs', `t${TOPICS - 1}-0-${topicId(TOPICS - 1)}`))).to.equal(false);
  });
});
