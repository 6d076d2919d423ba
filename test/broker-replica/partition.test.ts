import { expect } from 'chai';
import { Partition, PartitionDeps, IsrChangeRequest } from '../../broker/replica/partition';
import { NoopProducerGuard } from '../../broker/replica/producer-guard';
import { PartitionLog, decodeRecordBatches, encodeRecordBatch, validateRecordBatch, splitBatches } from '../../broker/log';
import { FlotillaError } from '../../shared/errors/error-codes';
import { DEFAULT_TOPIC_CONFIG } from '../../shared/metadata';
import type { PartitionState, TopicConfig } from '../../shared/metadata';
import { silentLogger } from '../../shared/log';
import { ManualClock, cleanupDirs, tempDir } from '../broker-log/helpers';
import { seededRandom as rng } from '../support/seeded-random';

// Partition (broker/replica/partition.ts) without gRPC: replicas in one process, each with a
// real PartitionLog in a temp dir, a manual clock, and a fake controller for AlterPartition.
// A "fetch" is what the Broker service and the fetcher do, called directly.

const LAG_MS = 10_000;

class FakeController {
  readonly requests: IsrChangeRequest[] = [];
  state: PartitionState;
  constructor(replicas: number[], leader: number) {
    this.state = { partition: 0, replicas, isr: [...replicas], leader, leaderEpoch: 0, partitionEpoch: 0 };
  }
  /** While set, answers wait for release() (an AlterPartition in flight). */
  held: (() => void)[] | null = null;
  release(): void {
    for (const r of this.held?.splice(0) ?? []) r();
    this.held = null;
  }
  /** While true, a change is committed but its answer is lost (the caller sees a timeout). */
  loseAnswers = false;
  /** While set, a committed change is followed at once by a move of leadership to this broker (preferred election), and the answer is that newer state. */
  thenElect: number | null = null;
  async alter(req: IsrChangeRequest): Promise<PartitionState> {
    this.requests.push(req);
    if (this.held !== null) await new Promise<void>((resolve) => this.held!.push(resolve));
    if (req.partitionEpoch !== this.state.partitionEpoch) return Promise.reject(new FlotillaError('STALE_PARTITION_EPOCH', 'stale'));
    this.state = { ...this.state, isr: [...req.newIsr], partitionEpoch: this.state.partitionEpoch + 1 };
    if (this.loseAnswers) return Promise.reject(new FlotillaError('REQUEST_TIMED_OUT', 'fake: the answer was lost; it may or may not have been applied'));
    if (this.thenElect !== null) this.state = { ...this.state, leader: this.thenElect, leaderEpoch: this.state.leaderEpoch + 1, partitionEpoch: this.state.partitionEpoch + 1 };
    return Promise.resolve(this.state);
  }
}

interface Replica {
  id: number;
  dir: string;
  p: Partition;
}

/** Follower truncations on divergence, over the whole file (the seeded tests must cause some). */
let divergenceTruncations = 0;
const countingLogger = (): ReturnType<typeof silentLogger> => {
  const base = silentLogger();
  const info = base.info.bind(base);
  base.info = ((obj: unknown, msg?: string) => {
    if (typeof msg === 'string' && msg.includes('log diverges from leader')) divergenceTruncations++;
    return info(obj as object, msg);
  }) as typeof base.info;
  return base;
};

async function openReplica(id: number, dir: string, controller: FakeController, clock: ManualClock, config: TopicConfig): Promise<Replica> {
  const log = await PartitionLog.open({ dir, nowMs: clock.nowMs });
  const deps: PartitionDeps = {
    brokerId: id,
    nowMs: clock.nowMs,
    logger: countingLogger(),
    replicaLagTimeMaxMs: LAG_MS,
    alterIsr: (req) => controller.alter(req),
    isBrokerUnfenced: () => true,
    onProgress: () => undefined,
    ackWaiters: { count: 0 },
  };
  const p = new Partition('00000000-0000-0000-0000-000000000001', 't', 0, log, new NoopProducerGuard(), { ...controller.state, leader: -1, leaderEpoch: -1, partitionEpoch: -1 }, config, deps);
  await p.applyMetadata(controller.state, config);
  return { id, dir, p };
}

function batchOf(values: string[]): { records: Buffer; headers: ReturnType<typeof validateRecordBatch>[] } {
  const records = encodeRecordBatch({ records: values.map((v, i) => ({ value: Buffer.from(v), timestampMs: 1_000 + i })) });
  return { records, headers: splitBatches(records).map(validateRecordBatch) };
}

/** One follower fetch round against `leader`, as the service and the fetcher do it. */
async function fetchRound(follower: Replica, leader: Replica): Promise<void> {
  const pos = follower.p.fetchPosition();
  const divergence = leader.p.onFollowerFetch(follower.id, pos.fetchOffset, pos.lastFetchedEpoch);
  let records: Buffer = Buffer.alloc(0);
  if (divergence === null) {
    try {
      records = (await leader.p.read(pos.fetchOffset, 64 * 1024, 'logEnd')).records;
    } catch (e) {
      if (e instanceof FlotillaError && e.name === 'OFFSET_OUT_OF_RANGE') {
        await follower.p.onFetchOutOfRange(leader.id, leader.p.leaderEpoch, leader.p.logStartOffset, leader.p.logEndOffset);
        return;
      }
      throw e;
    }
  }
  await follower.p.applyFetched(leader.id, leader.p.leaderEpoch, pos.fetchOffset, { records, highWatermark: leader.p.highWatermark, divergence });
}

/** Replicates one batch to both followers, then lets 3 fall behind until it leaves the ISR. */
async function shrinkThirdAway(leader: Replica, f2: Replica, f3: Replica, clock: ManualClock, b: ReturnType<typeof batchOf>): Promise<void> {
  await leader.p.appendAsLeader(b.records, b.headers, 1);
  await fetchRound(f2, leader);
  await fetchRound(f3, leader);
  clock.advance(LAG_MS + 1);
  await fetchRound(f2, leader);
  await fetchRound(f2, leader);
  leader.p.maybeShrinkIsr();
  await settle(leader);
  expect(leader.p.isr).to.deep.equal([1, 2]);
}

/** Lets an AlterPartition answer reach the partition's section and run. */
async function settle(r: Replica): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve));
  await r.p.exclusive(async () => undefined);
}

async function allBytes(r: Replica): Promise<Buffer> {
  const parts: Buffer[] = [];
  let next = r.p.logStartOffset;
  for (let i = 0; i < 10_000 && next < r.p.logEndOffset; i++) {
    const res = await r.p.read(next, 1 << 20, 'logEnd');
    parts.push(res.records);
    next = res.nextOffset;
  }
  return Buffer.concat(parts);
}


describe('broker/replica Partition', function () {
  this.timeout(60_000);
  const opened: Replica[] = [];
  afterEach(async () => {
    for (const r of opened.splice(0)) await r.p.close();
    await cleanupDirs();
  });

  async function trio(config: Partial<TopicConfig> = {}): Promise<{ controller: FakeController; clock: ManualClock; r: Replica[]; config: TopicConfig }> {
    const controller = new FakeController([1, 2, 3], 1);
    const clock = new ManualClock();
    const full = { ...DEFAULT_TOPIC_CONFIG, ...config };
    const r = [];
    for (const id of [1, 2, 3]) r.push(await openReplica(id, await tempDir('replica'), controller, clock, full));
    opened.push(...r);
    return { controller, clock, r, config: full };
  }

  it('the high watermark is the minimum log end offset over the ISR, and consumers never read at or above it', async () => {
    const { r } = await trio();
    const [leader, f2, f3] = r as [Replica, Replica, Replica];
    const b = batchOf(['a', 'b', 'c']);
    await leader.p.appendAsLeader(b.records, b.headers, -1);
    expect(leader.p.highWatermark).to.equal(0);
    expect((await leader.p.read(0, 1 << 20, 'highWatermark')).records.length).to.equal(0);
    await fetchRound(f2, leader); // f2 gets the batch
    await fetchRound(f2, leader); // and reports its new end
    expect(leader.p.highWatermark, 'f3 has not fetched').to.equal(0);
    await fetchRound(f3, leader);
    await fetchRound(f3, leader);
    expect(leader.p.highWatermark).to.equal(3);
    const more = batchOf(['d']);
    await leader.p.appendAsLeader(more.records, more.headers, -1);
    const visible = decodeRecordBatches((await leader.p.read(0, 1 << 20, 'highWatermark')).records).flatMap((x) => x.records.map((y) => y.offset));
    expect(visible).to.deep.equal([0, 1, 2]);
  });

  it('acks=all: NOT_ENOUGH_REPLICAS before appending when the ISR is below min.insync.replicas, and the high watermark does not advance while it is', async () => {
    const { r, controller, config } = await trio({ minInsyncReplicas: 2 });
    const [leader, f2] = r as [Replica, Replica, Replica];
    controller.state = { ...controller.state, isr: [1], partitionEpoch: 1 };
    await leader.p.applyMetadata(controller.state, config);
    const b = batchOf(['x']);
    expect(() => leader.p.checkLeaderForAppend(-1)).to.throw(FlotillaError).with.property('name', 'NOT_ENOUGH_REPLICAS');
    const endBefore = leader.p.logEndOffset;
    await leader.p.appendAsLeader(b.records, b.headers, -1).then(
      () => expect.fail('appended'),
      (e: FlotillaError) => expect(e.name).to.equal('NOT_ENOUGH_REPLICAS'),
    );
    expect(leader.p.logEndOffset).to.equal(endBefore);
    // acks=1 still appends, but the high watermark stays while the ISR is below min.insync.
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    expect(leader.p.logEndOffset).to.equal(1);
    expect(leader.p.highWatermark).to.equal(0);
    controller.held = [];
    await fetchRound(f2, leader);
    await fetchRound(f2, leader);
    // f2 caught up: the leader asks to add it; until the controller agrees, the committed ISR
    // is still [1], below min.insync.replicas, so the high watermark stays.
    expect(controller.requests.map((q) => q.newIsr)).to.deep.equal([[1, 2]]);
    expect(leader.p.pendingIsrChange).to.deep.equal([1, 2]);
    expect(leader.p.highWatermark).to.equal(0);
    controller.release();
    await settle(leader);
    expect(leader.p.isr).to.deep.equal([1, 2]);
    expect(leader.p.highWatermark).to.equal(1);
  });

  it('an acks=all write waits for the high watermark; a shrink below min.insync answers NOT_ENOUGH_REPLICAS_AFTER_APPEND', async () => {
    const { r, controller, config } = await trio({ minInsyncReplicas: 2 });
    const [leader, f2, f3] = r as [Replica, Replica, Replica];
    const b = batchOf(['y']);
    const a1 = await leader.p.appendAsLeader(b.records, b.headers, -1);
    const w1 = leader.p.waitForCommit(a1.lastOffset, 60_000);
    for (const f of [f2, f3]) {
      await fetchRound(f, leader);
      await fetchRound(f, leader);
    }
    expect(await w1).to.equal(null);
    const a2 = await leader.p.appendAsLeader(b.records, b.headers, -1);
    const w2 = leader.p.waitForCommit(a2.lastOffset, 60_000);
    controller.state = { ...controller.state, isr: [1], partitionEpoch: 1 };
    await leader.p.applyMetadata(controller.state, config);
    expect((await w2)?.name).to.equal('NOT_ENOUGH_REPLICAS_AFTER_APPEND');
  });

  it('an ISR member that does not catch up for replica.lag.time.max.ms is shrunk away via AlterPartition with a reason, and rejoins only by catching up', async () => {
    const { r, controller, clock, config } = await trio();
    const [leader, f2, f3] = r as [Replica, Replica, Replica];
    const b = batchOf(['1', '2']);
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await fetchRound(f2, leader);
    await fetchRound(f3, leader);
    clock.advance(LAG_MS / 2);
    await fetchRound(f2, leader); // f2 keeps fetching and is caught up; f3 stops
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await fetchRound(f2, leader);
    await fetchRound(f2, leader);
    clock.advance(LAG_MS / 2 + 1);
    leader.p.maybeShrinkIsr();
    expect(controller.requests).to.have.length(1);
    expect(controller.requests[0]!.newIsr).to.deep.equal([1, 2]);
    expect(controller.requests[0]!.reason).to.match(/replica 3 has not caught up for \d+ ms \(replica.lag.time.max.ms=10000/);
    await settle(leader); // the answer is applied in the partition's section
    expect(leader.p.isr).to.deep.equal([1, 2]);
    // A fetch that does not reach the high watermark does not bring it back.
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await fetchRound(f2, leader);
    await fetchRound(f2, leader);
    expect(leader.p.highWatermark).to.equal(6);
    const pos = f3.p.fetchPosition();
    expect(pos.fetchOffset).to.be.below(leader.p.highWatermark);
    leader.p.onFollowerFetch(3, pos.fetchOffset, pos.lastFetchedEpoch);
    expect(controller.requests).to.have.length(1);
    // Catching up does.
    for (let i = 0; i < 3; i++) await fetchRound(f3, leader);
    expect(controller.requests).to.have.length(2);
    expect(controller.requests[1]!.newIsr).to.deep.equal([1, 2, 3]);
    expect(controller.requests[1]!.reason).to.match(/replica 3 caught up/);
    await settle(leader);
    expect(leader.p.isr).to.deep.equal([1, 2, 3]);
    void config;
  });

  it('an ISR expansion whose AlterPartition outcome is unknown keeps counting the new member for the high watermark until metadata says (chaos seed 7 lost acked records)', async () => {
    const { r, controller, clock, config } = await trio();
    const [leader, f2, f3] = r as [Replica, Replica, Replica];
    const b = batchOf(['1', '2']);
    await shrinkThirdAway(leader, f2, f3, clock, b);
    // 3 catches up; the expansion commits at the controller but its answer is lost.
    controller.loseAnswers = true;
    for (let i = 0; i < 3; i++) await fetchRound(f3, leader);
    expect(controller.requests.at(-1)!.newIsr).to.deep.equal([1, 2, 3]);
    expect(controller.state.isr, 'committed at the controller').to.deep.equal([1, 2, 3]);
    await settle(leader);
    const f3End = f3.p.fetchPosition().fetchOffset;
    // More records, replicated to 2 only: the HW must not pass what 3 has, since the
    // controller may (and here does) count 3 in the ISR and could make it leader.
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await fetchRound(f2, leader);
    await fetchRound(f2, leader);
    expect(leader.p.highWatermark, 'HW bounded by the uncertain member').to.be.at.most(f3End);
    // The metadata update settles it: 3 is in the ISR; once it fetches, the HW moves on.
    await leader.p.applyMetadata(controller.state, config);
    await fetchRound(f3, leader);
    await fetchRound(f3, leader);
    expect(leader.p.highWatermark).to.equal(leader.p.logEndOffset);
  });

  it('an ISR expansion answered with a newer leader epoch keeps counting the new member for the high watermark (chaos seed 719644404 lost acked records)', async () => {
    const { r, controller, clock } = await trio();
    const [leader, f2, f3] = r as [Replica, Replica, Replica];
    const b = batchOf(['1', '2']);
    await shrinkThirdAway(leader, f2, f3, clock, b);
    // 3 catches up; the controller commits [1,2,3] and at once makes 3 leader (preferred
    // election): the answer is that newer state, which this leader cannot apply.
    controller.thenElect = 3;
    // 3 fetches until the expansion is asked for, then stops (it is the leader now, in its view).
    for (let i = 0; i < 3 && !controller.requests.at(-1)!.newIsr.includes(3); i++) await fetchRound(f3, leader);
    expect(controller.requests.at(-1)!.newIsr).to.deep.equal([1, 2, 3]);
    expect(controller.state).to.include({ leader: 3, leaderEpoch: 1 });
    await settle(leader);
    const f3End = f3.p.fetchPosition().fetchOffset;
    // Until its metadata catches up, the old leader takes acks=1 writes replicated to 2 only:
    // its HW must not pass what 3 (the new leader) holds.
    await leader.p.appendAsLeader(b.records, b.headers, 1);
    await fetchRound(f2, leader);
    await fetchRound(f2, leader);
    expect(leader.p.highWatermark, 'HW bounded by the new leader').to.be.at.most(f3End);
  });

  for (const seed of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) {
    it(`seed ${seed}: after any sequence of leader changes, partial replication and restarts, no committed record is lost and all replicas end byte-identical`, async () => {
      const random = rng(seed);
      const { r, controller, clock, config } = await trio();
      const replicas = r;
      let leader = replicas[0]!;
      const committed = new Map<number, string>(); // offset -> value, below some high watermark once
      let n = 0;
      const noteCommitted = async (): Promise<void> => {
        const hw = leader.p.highWatermark;
        const res = decodeRecordBatches(Buffer.concat(await readRange(leader, 0, hw)));
        for (const batch of res) for (const rec of batch.records) if (rec.offset < hw) committed.set(rec.offset, rec.value!.toString());
      };
      for (let step = 0; step < 60; step++) {
        const x = random();
        if (x < 0.4) {
          const b = batchOf([...Array(1 + Math.floor(random() * 3))].map(() => `v${n++}`));
          await leader.p.appendAsLeader(b.records, b.headers, 1);
        } else if (x < 0.75) {
          const followers = replicas.filter((q) => q !== leader);
          await fetchRound(followers[Math.floor(random() * followers.length)]!, leader);
          await noteCommitted();
        } else if (x < 0.92) {
          // Clean election: any replica holding everything committed (what the ISR guarantees).
          const candidates = replicas.filter((q) => q.p.logEndOffset >= leader.p.highWatermark);
          const next = candidates[Math.floor(random() * candidates.length)]!;
          controller.state = { ...controller.state, leader: next.id, leaderEpoch: controller.state.leaderEpoch + 1, partitionEpoch: controller.state.partitionEpoch + 1 };
          for (const q of replicas) await q.p.applyMetadata(controller.state, config);
          leader = next;
        } else {
          // Restart a follower: close its log and open it again (recovery, epoch checkpoint).
          const i = 1 + Math.floor(random() * 2);
          const victim = replicas.filter((q) => q !== leader)[i - 1]!;
          await victim.p.close();
          const reopened = await openReplica(victim.id, victim.dir, controller, clock, config);
          replicas[replicas.indexOf(victim)] = reopened;
          opened.push(reopened);
        }
      }
      // Heal: followers fetch until nothing changes (bounded).
      for (let round = 0; round < 50; round++) for (const f of replicas.filter((q) => q !== leader)) await fetchRound(f, leader);
      await noteCommitted();
      const leaderBytes = await allBytes(leader);
      for (const q of replicas) expect((await allBytes(q)).equals(leaderBytes), `replica ${q.id} vs leader ${leader.id}`).to.equal(true);
      const finalRecords = new Map<number, string>();
      for (const b of decodeRecordBatches(leaderBytes)) for (const rec of b.records) finalRecords.set(rec.offset, rec.value!.toString());
      for (const [offset, value] of committed) expect(finalRecords.get(offset), `committed offset ${offset}`).to.equal(value);
    });
  }
});

describe('broker/replica Partition (seeded runs, checked)', () => {
  it('the seeded leader-change runs above made followers truncate diverged logs (they test what they claim)', () => {
    expect(divergenceTruncations).to.be.greaterThan(0);
  });
});

async function readRange(r: Replica, from: number, to: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let next = Math.max(from, r.p.logStartOffset);
  for (let i = 0; i < 10_000 && next < to; i++) {
    const res = await r.p.read(next, 1 << 20, 'logEnd');
    if (res.records.length === 0) break;
    out.push(res.records);
    next = res.nextOffset;
  }
  return out;
}
