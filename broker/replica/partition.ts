import { strict as assert } from 'node:assert';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { partitionLabel } from '../../shared/metadata';
import type { PartitionState, TopicConfig } from '../../shared/metadata';
import { RecordBatchHeader, splitBatches, readBatchHeader } from '../../shared/records/record-batch';
import type { LogReadResult, PartitionLog, ReadIsolation } from '../log';
import type { ProducerGuard } from './producer-guard';

// One hosted partition replica (Kafka's cluster/Partition.scala): its log, its role as of the
// metadata applied, and — while it leads — what replication needs: each follower's log end
// offset and last-caught-up time, the high watermark, the ISR changes it asks the controller
// for, and the acks=all requests waiting for the high watermark.
//
// Serialization: every operation that changes the log or the role (leader append with its
// ProducerGuard check, follower append, truncation, role change, close) runs in one serial
// section per partition (`exclusive`), in arrival order. Reads do not take the section (the
// log orders them itself). Follower-fetch bookkeeping on the leader is synchronous.
//
// High watermark (leader): min log end offset over the *maximal* ISR — the committed ISR plus
// a member an in-flight AlterPartition is adding (KIP-497: the leader may count a new member
// only once the controller agrees, but must already wait for it), and one a failed request
// may have added (until metadata shows the outcome) — and it never advances while
// the committed ISR is smaller than min.insync.replicas (stricter than Kafka: a write can
// become visible only once it is on min.insync.replicas replicas). Follower log end offsets
// count only from fetches in the current leader epoch that passed the divergence check.
//
// Divergence (KIP-101/KIP-279/KIP-595): a follower sends its log end offset and the epoch of
// its last batch; the leader answers a DivergingEpoch when its own log for that epoch ends
// earlier, or when it does not have that epoch; the follower truncates to
// min(leader's end offset, its own end offset for that epoch) and tries again. Epochs or
// offsets strictly decrease each round, so it converges to the common prefix. Nothing uses the
// high watermark for truncation (the KIP-101 bug).

export type Role = 'leader' | 'follower' | 'none';

export interface FollowerState {
  /** Log end offset from its last accepted fetch in this leader epoch; -1 = unknown yet. */
  leo: number;
  /** Last time its fetch reached the leader's log end as of its previous fetch (Kafka's rule). */
  lastCaughtUpMs: number;
  lastFetchLeaderLeo: number;
  lastFetchMs: number;
}

export interface IsrChangeRequest {
  readonly topicName: string;
  readonly partition: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly newIsr: readonly number[];
  readonly reason: string;
}

export interface PartitionDeps {
  readonly brokerId: number;
  readonly nowMs: () => number;
  readonly logger: Logger;
  readonly replicaLagTimeMaxMs: number;
  /** AlterPartition through the controller; resolves with the committed partition state. */
  readonly alterIsr: (req: IsrChangeRequest) => Promise<PartitionState>;
  /** Whether a broker may join an ISR (registered and unfenced in the image). */
  readonly isBrokerUnfenced: (brokerId: number) => boolean;
  /** The log end offset or high watermark moved, or the role changed (wakes delayed fetches). */
  readonly onProgress: (p: Partition) => void;
  /** Counts acks=all waiters across partitions (the purgatory bound lives in the manager). */
  readonly ackWaiters: { count: number };
}

export interface LeaderAppendResult {
  readonly baseOffset: number;
  readonly lastOffset: number;
  /** True when the ProducerGuard recognized a retry: nothing was appended. */
  readonly duplicate: boolean;
  readonly logStartOffset: number;
  /** The append time written into the batches (LogAppendTime topics); -1 otherwise and for a duplicate (as Kafka). */
  readonly logAppendTimeMs: number;
}

export interface Divergence {
  readonly epoch: number;
  readonly endOffset: number;
}

interface AckWaiter {
  readonly requiredOffset: number;
  readonly done: (err: FlotillaError | null) => void;
  readonly timer: NodeJS.Timeout;
}

export class Partition {
  readonly label: string;
  private state: PartitionState;
  private roleValue: Role = 'none';
  private topicConfig: TopicConfig;
  private section: Promise<void> = Promise.resolve();
  private closed = false;
  // ---- leader only ----
  private readonly followers = new Map<number, FollowerState>();
  private pendingIsr: readonly number[] | null = null;
  /**
   * An ISR change whose AlterPartition failed without a definite answer (a timeout; or a
   * refusal of a retry, which may mean the first attempt committed), or was answered with a
   * state of a newer leader epoch (not applicable here): the controller may hold it. Its members stay in the high-watermark computation until a metadata update with a
   * newer partition epoch says what was committed. Clearing them at the failure lost
   * acknowledged records in chaos seed 7: an expansion committed unbeknown to the leader, which
   * then advanced the HW without the new member, and the controller made that member leader.
   */
  private uncertainIsr: { readonly members: readonly number[]; readonly basedOnPartitionEpoch: number } | null = null;
  private leaderEpochStartOffset = 0;
  private ackWaiters: AckWaiter[] = [];

  constructor(
    readonly topicId: string,
    readonly topicName: string,
    readonly partition: number,
    readonly log: PartitionLog,
    readonly guard: ProducerGuard,
    initial: PartitionState,
    topicConfig: TopicConfig,
    private readonly deps: PartitionDeps,
  ) {
    this.label = partitionLabel(topicName, partition);
    this.state = initial;
    this.topicConfig = topicConfig;
  }

  // ---- state ----

  get role(): Role {
    return this.roleValue;
  }
  get leader(): number {
    return this.state.leader;
  }
  get leaderEpoch(): number {
    return this.state.leaderEpoch;
  }
  get partitionEpoch(): number {
    return this.state.partitionEpoch;
  }
  get isr(): readonly number[] {
    return this.state.isr;
  }
  get replicas(): readonly number[] {
    return this.state.replicas;
  }
  get config(): TopicConfig {
    return this.topicConfig;
  }
  get highWatermark(): number {
    return this.log.highWatermark;
  }
  get logEndOffset(): number {
    return this.log.logEndOffset;
  }
  get logStartOffset(): number {
    return this.log.logStartOffset;
  }
  get isClosed(): boolean {
    return this.closed;
  }
  /** The ISR change in flight, or null. */
  get pendingIsrChange(): readonly number[] | null {
    return this.pendingIsr;
  }
  /** Copy of the follower table (leader only; tests and debugging). */
  followerStates(): Map<number, FollowerState> {
    return new Map([...this.followers].map(([k, v]) => [k, { ...v }]));
  }

  /** Runs `op` after every earlier exclusive operation of this partition. */
  exclusive<T>(op: () => Promise<T>): Promise<T> {
    const result = this.section.then(() => {
      if (this.closed) throw new FlotillaError('NOT_LEADER_FOR_PARTITION', `${this.label} is no longer hosted on broker ${this.deps.brokerId}`);
      return op();
    });
    this.section = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  // ---- role changes (from metadata, in metadata-offset order) ----

  /**
   * Applies the partition's state from the metadata image. Becomes leader (a new leader epoch:
   * follower table reset), follower, or just takes the new ISR/partition epoch.
   */
  applyMetadata(state: PartitionState, topicConfig: TopicConfig): Promise<void> {
    return this.exclusive(async () => this.applyMetadataNow(state, topicConfig));
  }

  private applyMetadataNow(state: PartitionState, topicConfig: TopicConfig): void {
    const { brokerId, logger } = this.deps;
    const before = this.state;
    const wasRole = this.roleValue;
    this.topicConfig = topicConfig;
    // An AlterPartition answer may have been applied already: never go back in partition epoch
    // within one leader epoch.
    if (state.leaderEpoch === before.leaderEpoch && state.partitionEpoch < before.partitionEpoch && wasRole !== 'none') return;
    this.state = state;
    const role: Role = state.leader === brokerId ? 'leader' : state.replicas.includes(brokerId) ? 'follower' : 'none';
    const newEpoch = wasRole !== role || state.leaderEpoch !== before.leaderEpoch;
    const fields = { partition: this.label, leader: state.leader, leaderEpoch: state.leaderEpoch, partitionEpoch: state.partitionEpoch, isr: state.isr };
    if (role === 'leader' && newEpoch) {
      this.roleValue = 'leader';
      this.followers.clear();
      this.pendingIsr = null;
      this.uncertainIsr = null;
      this.leaderEpochStartOffset = this.log.logEndOffset;
      const now = this.deps.nowMs();
      for (const r of state.replicas) {
        if (r === brokerId) continue;
        // An ISR member gets a full lag period before it can be shrunk away (Kafka resets the
        // same way on becoming leader).
        this.followers.set(r, { leo: -1, lastCaughtUpMs: state.isr.includes(r) ? now : 0, lastFetchLeaderLeo: -1, lastFetchMs: 0 });
      }
      logger.info(
        { ...fields, logEndOffset: this.log.logEndOffset, highWatermark: this.log.highWatermark },
        `became leader of ${this.label} at leader epoch ${state.leaderEpoch}`,
      );
    } else if (role === 'follower' && newEpoch) {
      this.roleValue = 'follower';
      this.followers.clear();
      this.pendingIsr = null;
      this.uncertainIsr = null;
      this.failAckWaiters(() => this.notLeaderError());
      logger.info(fields, `became follower of ${this.label} (${state.leader >= 0 ? `leader ${state.leader}` : 'no leader'}) at leader epoch ${state.leaderEpoch}`);
    } else if (role === 'none') {
      this.roleValue = 'none';
      this.failAckWaiters(() => this.notLeaderError());
    } else if (role === 'leader') {
      // Same leader epoch: a new ISR (ours, committed, or the controller's fencing).
      if (this.pendingIsr !== null && state.partitionEpoch > before.partitionEpoch) this.pendingIsr = null;
      if (this.uncertainIsr !== null && state.partitionEpoch > this.uncertainIsr.basedOnPartitionEpoch) this.uncertainIsr = null;
      for (const r of state.replicas) if (r !== brokerId && !this.followers.has(r)) this.followers.set(r, { leo: -1, lastCaughtUpMs: 0, lastFetchLeaderLeo: -1, lastFetchMs: 0 });
      logger.debug(fields, `${this.label}: ISR now [${state.isr.join(',')}] (partition epoch ${state.partitionEpoch})`);
    }
    if (this.roleValue === 'leader') {
      this.maybeAdvanceHighWatermark();
      this.checkAckWaitersMinIsr();
    }
    this.deps.onProgress(this);
  }

  // ---- leader: produce ----

  /**
   * Checks, before anything of a request is appended, that this replica may take an append
   * with `acks` (NOT_LEADER_FOR_PARTITION, NOT_ENOUGH_REPLICAS). Synchronous: the caller
   * checks every partition of a request first.
   */
  checkLeaderForAppend(acks: number): void {
    if (this.roleValue !== 'leader' || this.closed) throw this.notLeaderError();
    const minIsr = this.topicConfig.minInsyncReplicas;
    if (acks === -1 && this.state.isr.length < minIsr) {
      throw new FlotillaError(
        'NOT_ENOUGH_REPLICAS',
        `${this.label}: the ISR [${this.state.isr.join(',')}] has ${this.state.isr.length} member(s), fewer than min.insync.replicas=${minIsr}; nothing was appended`,
        { topic: this.topicName, partition: this.partition, isrSize: this.state.isr.length, minInsyncReplicas: minIsr },
      );
    }
  }

  /**
   * The leader's append of one request's batches (already validated by the caller): the
   * ProducerGuard check, the log append (offsets and leader epoch stamped), onAppended, then
   * the high watermark, all in the serialized section.
   */
  appendAsLeader(records: Buffer, headers: readonly RecordBatchHeader[], acks: number): Promise<LeaderAppendResult> {
    return this.exclusive(async () => {
      this.checkLeaderForAppend(acks);
      const verdict = this.guard.check(headers);
      if (verdict.kind === 'duplicate') {
        return { baseOffset: verdict.baseOffset, lastOffset: verdict.lastOffset, duplicate: true, logStartOffset: this.log.logStartOffset, logAppendTimeMs: -1 };
      }
      const r = await this.log.append(records, { assignOffsets: true, leaderEpoch: this.state.leaderEpoch });
      let next = r.firstOffset;
      const stamped = headers.map((h) => {
        const s = { ...h, baseOffset: next, lastOffset: next + h.lastOffsetDelta, partitionLeaderEpoch: this.state.leaderEpoch };
        next += h.recordCount;
        return s;
      });
      this.guard.onAppended(stamped);
      this.maybeAdvanceHighWatermark();
      this.deps.onProgress(this);
      return { baseOffset: r.firstOffset, lastOffset: r.lastOffset, duplicate: false, logStartOffset: this.log.logStartOffset, logAppendTimeMs: r.logAppendTimeMs };
    });
  }

  /**
   * acks=all: resolves null once the high watermark passes `lastOffset`, or with the error to
   * report for this partition (REQUEST_TIMED_OUT, NOT_LEADER_FOR_PARTITION,
   * NOT_ENOUGH_REPLICAS_AFTER_APPEND). Never rejects.
   */
  waitForCommit(lastOffset: number, timeoutMs: number): Promise<FlotillaError | null> {
    const requiredOffset = lastOffset + 1;
    if (this.log.highWatermark >= requiredOffset) return Promise.resolve(null);
    if (this.roleValue !== 'leader') return Promise.resolve(this.notLeaderError());
    return new Promise((resolve) => {
      const waiter: AckWaiter = {
        requiredOffset,
        done: (err) => {
          clearTimeout(waiter.timer);
          this.deps.ackWaiters.count--;
          resolve(err);
        },
        timer: setTimeout(() => {
          const i = this.ackWaiters.indexOf(waiter);
          if (i >= 0) this.ackWaiters.splice(i, 1);
          waiter.done(
            new FlotillaError(
              'REQUEST_TIMED_OUT',
              `${this.label}: offset ${lastOffset} was appended but not replicated to the ISR within ${timeoutMs} ms (high watermark ${this.log.highWatermark}); it may still become committed`,
              { topic: this.topicName, partition: this.partition, highWatermark: this.log.highWatermark },
            ),
          );
        }, timeoutMs),
      };
      this.deps.ackWaiters.count++;
      // Appends are serialized, so required offsets arrive in order: the list stays sorted.
      this.ackWaiters.push(waiter);
    });
  }

  private completeAckWaiters(): void {
    const hw = this.log.highWatermark;
    let n = 0;
    while (n < this.ackWaiters.length && this.ackWaiters[n]!.requiredOffset <= hw) n++;
    if (n === 0) return;
    for (const w of this.ackWaiters.splice(0, n)) w.done(null);
  }

  private failAckWaiters(err: () => FlotillaError): void {
    for (const w of this.ackWaiters.splice(0)) w.done(err());
  }

  /** The ISR shrank below min.insync.replicas: waiting acks=all writes are answered now. */
  private checkAckWaitersMinIsr(): void {
    const minIsr = this.topicConfig.minInsyncReplicas;
    if (this.state.isr.length >= minIsr || this.ackWaiters.length === 0) return;
    this.failAckWaiters(
      () =>
        new FlotillaError(
          'NOT_ENOUGH_REPLICAS_AFTER_APPEND',
          `${this.label}: appended on the leader, but the ISR shrank to [${this.state.isr.join(',')}], below min.insync.replicas=${minIsr}, before it was replicated`,
          { topic: this.topicName, partition: this.partition, isrSize: this.state.isr.length, minInsyncReplicas: minIsr },
        ),
    );
  }

  // ---- leader: follower fetches ----

  /**
   * A follower's fetch for this partition reached the leader: the KIP-595 divergence check,
   * then (when its log is a prefix of ours) its log end offset is recorded, the ISR may grow,
   * the high watermark may advance. Returns the divergence to send back, or null.
   */
  onFollowerFetch(replicaId: number, fetchOffset: number, lastFetchedEpoch: number): Divergence | null {
    if (this.roleValue !== 'leader') throw this.notLeaderError();
    const f = this.followers.get(replicaId);
    if (f === undefined) {
      throw new FlotillaError('INVALID_REQUEST', `broker ${replicaId} is not a replica of ${this.label} (replicas [${this.state.replicas.join(',')}])`, {
        topic: this.topicName,
        partition: this.partition,
      });
    }
    const divergence = this.divergenceFor(fetchOffset, lastFetchedEpoch);
    if (divergence !== null) return divergence;
    if (fetchOffset > this.log.logEndOffset || fetchOffset < this.log.logStartOffset) return null; // the read answers OFFSET_OUT_OF_RANGE
    const now = this.deps.nowMs();
    const leo = this.log.logEndOffset;
    if (fetchOffset >= leo) f.lastCaughtUpMs = now;
    else if (fetchOffset >= f.lastFetchLeaderLeo && f.lastFetchLeaderLeo >= 0) f.lastCaughtUpMs = Math.max(f.lastCaughtUpMs, f.lastFetchMs);
    f.lastFetchLeaderLeo = leo;
    f.lastFetchMs = now;
    f.leo = fetchOffset;
    this.maybeExpandIsr(replicaId, f);
    this.maybeAdvanceHighWatermark();
    return null;
  }

  /** Where a follower whose last batch has `lastFetchedEpoch` and ends at `fetchOffset` diverges. */
  divergenceFor(fetchOffset: number, lastFetchedEpoch: number): Divergence | null {
    if (lastFetchedEpoch < 0) return null;
    const latest = this.log.latestEpoch;
    let answer: Divergence;
    if (latest < 0) answer = { epoch: -1, endOffset: this.log.logEndOffset };
    else if (lastFetchedEpoch >= latest) answer = { epoch: latest, endOffset: this.log.logEndOffset };
    else answer = this.log.endOffsetForEpoch(lastFetchedEpoch);
    if (answer.epoch === lastFetchedEpoch && answer.endOffset >= fetchOffset) return null;
    if (answer.endOffset < 0) answer = { epoch: -1, endOffset: this.log.logStartOffset };
    return answer;
  }

  private maybeExpandIsr(replicaId: number, f: FollowerState): void {
    if (this.pendingIsr !== null || this.state.isr.includes(replicaId)) return;
    // Kafka's rule: the follower has everything committed and has caught up to this epoch.
    if (f.leo < this.log.highWatermark || f.leo < this.leaderEpochStartOffset) return;
    if (!this.deps.isBrokerUnfenced(replicaId)) return;
    const newIsr = [...this.state.isr, replicaId].sort((a, b) => a - b);
    this.requestIsrChange(newIsr, `replica ${replicaId} caught up to offset ${f.leo} (high watermark ${this.log.highWatermark})`);
  }

  /** Periodic: ISR members that have not caught up for replica.lag.time.max.ms leave the ISR. */
  maybeShrinkIsr(): void {
    if (this.roleValue !== 'leader' || this.pendingIsr !== null || this.closed) return;
    const now = this.deps.nowMs();
    const lagMax = this.deps.replicaLagTimeMaxMs;
    const out: string[] = [];
    const keep = this.state.isr.filter((r) => {
      if (r === this.deps.brokerId) return true;
      const f = this.followers.get(r);
      // A follower that is caught up with no new data keeps its status (its fetch offset equals
      // our log end): lastCaughtUpMs covers it.
      const behindMs = f === undefined ? Infinity : now - f.lastCaughtUpMs;
      if (behindMs <= lagMax) return true;
      out.push(`replica ${r} has not caught up for ${behindMs === Infinity ? 'ever' : `${behindMs} ms`} (replica.lag.time.max.ms=${lagMax}, its log end ${f?.leo ?? -1}, leader's ${this.log.logEndOffset})`);
      return false;
    });
    if (out.length === 0) return;
    this.requestIsrChange(keep, out.join('; '));
  }

  private requestIsrChange(newIsr: number[], reason: string): void {
    const { leaderEpoch, partitionEpoch, isr } = this.state;
    this.pendingIsr = newIsr;
    this.deps.logger.info({ partition: this.label, isr, newIsr, leaderEpoch, partitionEpoch, reason }, `${this.label}: asking the controller to change the ISR [${isr.join(',')}] -> [${newIsr.join(',')}]: ${reason}`);
    this.deps
      .alterIsr({ topicName: this.topicName, partition: this.partition, leaderEpoch, partitionEpoch, newIsr, reason })
      .then(
        (committed) =>
          this.exclusive(async () => {
            if (this.pendingIsr !== newIsr) return;
            this.pendingIsr = null;
            if (committed.leaderEpoch === this.state.leaderEpoch && committed.partitionEpoch > this.state.partitionEpoch) {
              this.applyMetadataNow(committed, this.topicConfig);
            } else {
              // A state we cannot apply here (a newer leader epoch: the controller moved
              // leadership, perhaps to the member just added). Dropping the change's members
              // advanced the HW without the new member, which then became leader and lost those
              // acknowledged records (chaos seed 719644404).
              this.keepUncertain([...newIsr, ...committed.isr], partitionEpoch);
            }
          }),
        (err: unknown) => {
          if (this.pendingIsr !== newIsr) return;
          this.pendingIsr = null;
          this.keepUncertain(newIsr, partitionEpoch); // outcome unknown
          const fields = { partition: this.label, newIsr, error: (err as Error).name, message: (err as Error).message };
          // STALE_PARTITION_EPOCH / NOT_LEADER: our metadata is behind; the next image decides.
          if (isFlotillaError(err) && !err.retriable) this.deps.logger.info(fields, `${this.label}: ISR change refused`);
          else this.deps.logger.warn(fields, `${this.label}: ISR change failed; will retry`);
        },
      )
      .catch((err: unknown) => this.deps.logger.debug({ partition: this.label, err }, 'ISR change answer dropped (partition closed)'));
  }

  /**
   * An ISR change whose outcome this leader cannot settle itself: its members keep counting
   * for the HW (uncertainIsr) until metadata with a newer partition epoch than `basedOn`
   * says what holds — unless that metadata already arrived.
   */
  private keepUncertain(members: readonly number[], basedOn: number): void {
    if (this.state.partitionEpoch <= basedOn) this.uncertainIsr = { members: [...new Set(members)], basedOnPartitionEpoch: basedOn };
  }

  /** min LEO over the maximal ISR; never while the committed ISR is below min.insync.replicas. */
  private maybeAdvanceHighWatermark(): void {
    if (this.roleValue !== 'leader') return;
    if (this.state.isr.length < this.topicConfig.minInsyncReplicas) return;
    let hw = this.log.logEndOffset;
    const members = new Set([...this.state.isr, ...(this.pendingIsr ?? []), ...(this.uncertainIsr?.members ?? [])]);
    for (const r of members) {
      if (r === this.deps.brokerId) continue;
      const f = this.followers.get(r);
      if (f === undefined || f.leo < 0) return;
      hw = Math.min(hw, f.leo);
    }
    if (hw <= this.log.highWatermark) return;
    this.log.setHighWatermark(hw);
    this.completeAckWaiters();
    this.deps.onProgress(this);
  }

  // ---- reads ----

  /** Reads for a consumer (up to the high watermark) or a follower (up to the log end). */
  read(offset: number, maxBytes: number, isolation: ReadIsolation): Promise<LogReadResult> {
    return this.log.read(offset, maxBytes, isolation);
  }

  // ---- follower ----

  /** What the follower's next fetch for this partition says. */
  fetchPosition(): { fetchOffset: number; lastFetchedEpoch: number } {
    return { fetchOffset: this.log.logEndOffset, lastFetchedEpoch: this.log.latestEpoch };
  }

  /**
   * Applies one fetched answer from `leaderId` at `leaderEpoch`: truncation on a divergence,
   * else an append of the batches (offsets as the leader gave them) and the leader's high
   * watermark. Ignored when this replica no longer follows that leader in that epoch.
   * Returns the bytes appended.
   */
  applyFetched(
    leaderId: number,
    leaderEpoch: number,
    fetchOffset: number,
    answer: { records: Buffer; highWatermark: number; divergence: Divergence | null },
  ): Promise<number> {
    return this.exclusive(async () => {
      if (this.roleValue !== 'follower' || this.state.leader !== leaderId || this.state.leaderEpoch !== leaderEpoch) return 0;
      if (this.log.logEndOffset !== fetchOffset) return 0; // a stale answer: refetch from the log end
      if (answer.divergence !== null) {
        await this.truncateForDivergence(answer.divergence);
        return 0;
      }
      let bytes = 0;
      if (answer.records.length > 0) {
        // Skip whole batches below our end (a batch is never split; defensive).
        const all = splitBatches(answer.records);
        const slices = all.filter((s) => readBatchHeader(s, 0).lastOffset >= this.log.logEndOffset);
        if (slices.length > 0) {
          // All kept (the usual case): the answer's bytes are already their concatenation.
          const buf = slices.length === all.length ? answer.records : slices.length === 1 ? slices[0]! : Buffer.concat(slices);
          await this.log.append(buf, { assignOffsets: false, leaderEpoch });
          this.guard.onAppended(slices.map((s) => readBatchHeader(s, 0)));
          bytes = buf.length;
        }
      }
      const hw = Math.min(answer.highWatermark, this.log.logEndOffset);
      if (hw > this.log.highWatermark) this.log.setHighWatermark(hw);
      if (bytes > 0) this.deps.onProgress(this);
      return bytes;
    });
  }

  /** KIP-595 truncation: to min(leader's end offset for the epoch, ours for the same epoch). */
  private async truncateForDivergence(d: Divergence): Promise<void> {
    const leo = this.log.logEndOffset;
    let target: number;
    if (d.epoch < 0) {
      target = Math.min(d.endOffset, leo);
    } else {
      const latest = this.log.latestEpoch;
      const ours = d.epoch >= latest ? { epoch: latest, endOffset: leo } : this.log.endOffsetForEpoch(d.epoch);
      target = ours.epoch < 0 ? Math.min(d.endOffset, leo) : Math.min(d.endOffset, ours.endOffset);
    }
    assert(target <= leo, `truncation target ${target} past the log end ${leo}`);
    this.deps.logger.info(
      { partition: this.label, divergingEpoch: d.epoch, leaderEndOffset: d.endOffset, from: leo, to: target },
      `${this.label}: log diverges from leader ${this.state.leader} at epoch ${d.epoch}; truncating from ${leo} to ${target}`,
    );
    await this.truncateNow(target);
  }

  /** OFFSET_OUT_OF_RANGE from the leader: follow its log start or end. */
  onFetchOutOfRange(leaderId: number, leaderEpoch: number, leaderStart: number, leaderEnd: number): Promise<void> {
    return this.exclusive(async () => {
      if (this.roleValue !== 'follower' || this.state.leader !== leaderId || this.state.leaderEpoch !== leaderEpoch) return;
      const leo = this.log.logEndOffset;
      if (leo < leaderStart) {
        this.deps.logger.warn({ partition: this.label, leo, leaderStart }, `${this.label}: behind the leader's log start ${leaderStart}; restarting the log there`);
        await this.log.truncateFullyAndStartAt(leaderStart);
        await this.guard.onTruncated(leaderStart);
      } else if (leo > leaderEnd) {
        // Only possible without a divergence answer when our log is empty of epochs.
        await this.truncateNow(leaderEnd);
      }
    });
  }

  private async truncateNow(target: number): Promise<void> {
    const end = await this.log.truncateTo(target);
    await this.guard.onTruncated(end);
  }

  // ---- lifecycle ----

  /** Stops the partition: waiting writes get NOT_LEADER; the log and the guard are closed. */
  close(): Promise<void> {
    const done = this.section.then(async () => {
      if (this.closed) return;
      this.closed = true;
      this.roleValue = 'none';
      this.failAckWaiters(() => this.notLeaderError());
      await this.guard.close().catch((err: unknown) => this.deps.logger.warn({ partition: this.label, err }, 'producer guard close failed'));
      await this.log.close();
    });
    this.section = done.catch(() => undefined);
    return done;
  }

  notLeaderError(): FlotillaError {
    return new FlotillaError('NOT_LEADER_FOR_PARTITION', `broker ${this.deps.brokerId} is not the leader of ${this.label} (leader ${this.state.leader}, epoch ${this.state.leaderEpoch})`, {
      topic: this.topicName,
      partition: this.partition,
      leaderId: this.state.leader,
      leaderEpoch: this.state.leaderEpoch,
    });
  }
}
