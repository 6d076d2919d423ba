import type * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { toGrpcError } from '../../shared/rpc/grpc-errors';
import { REQUEST_PARTITIONS_MAX } from '../replica/limits';
import type { Partition } from '../replica/partition';
import type { DelayedFetches } from './delayed-fetch';
import type { ReplicaPosition as ReplicaPositionWire, ReplicaPush as ReplicaPushWire, ReplicaPushEntry as ReplicaPushEntryWire, ReplicaReport as ReplicaReportWire } from '../replica/replicate-codec';

// The leader's side of one Replicate stream (proto/broker.proto): one follower broker, every
// partition it follows here. Kafka's follower fetch, without a call per round: the follower
// reports a position per partition, the leader answers each position once — when it has
// records past it (woken by its own appends through the DelayedFetches purgatory), a
// divergence or an error at once, or an empty answer after `maxWaitMs` so that an idle
// follower reports again and stays in the ISR. A position is read with the same code as a
// follower Fetch (BrokerService.readPartition): the first read of each position runs
// Partition.onFollowerFetch (divergence check, the follower's log end offset, ISR, high
// watermark), later reads of a parked position only check divergence.
//
// Bounds: positions per stream (REQUEST_PARTITIONS_MAX), one unanswered position per
// partition, one push message of at most `pushMaxBytes` record bytes at a time (more waits for
// the next flush), and no new message while the previous one waits for HTTP/2 flow control.
// A live follower reports at least every max wait (each answer is followed by a report), so a
// stream silent for REPORT_SILENCE_MAX_MS is a dead peer the transport has not noticed (a
// network partition leaves the TCP connection up): it is ended, releasing its parked positions.

export type {
  ReplicaPosition as ReplicaPositionWire,
  ReplicaReport as ReplicaReportWire,
  ReplicaPush as ReplicaPushWire,
  ReplicaPushEntry as ReplicaPushEntryWire,
} from '../replica/replicate-codec';

/** What a session needs from the broker service. */
export interface ReplicaStreamDeps {
  readonly readPartition: (
    e: { topic: string; partition: number; fetchOffset: number; partitionMaxBytes: number; currentLeaderEpoch: number; lastFetchedEpoch: number; topicId: string },
    replicaId: number,
    budgetBytes: number,
    mustReturnOne: boolean,
    firstPass: boolean,
  ) => Promise<{
    result: Omit<ReplicaPushEntryWire, 'reportId'>;
    p: Partition | null;
    answerNow: boolean;
  }>;
  /** Throws UNKNOWN_BROKER / STALE_BROKER_EPOCH. */
  readonly checkReplica: (replicaId: number, replicaEpoch: number) => void;
  readonly delayedFetches: DelayedFetches;
  readonly logger: Logger;
  readonly maxWaitMs: number;
  readonly pushMaxBytes: number;
  readonly onClosed: (s: ReplicaStreamSession) => void;
}

interface Entry {
  readonly key: string;
  pos: ReplicaPositionWire;
  /** The current position is unanswered. */
  awaiting: boolean;
  /** Read it on the next flush (new position, woken, or max wait passed). */
  ready: boolean;
  /** The next read is the position's first (runs the leader's follower bookkeeping). */
  firstPass: boolean;
  /** Answer on the next read even with nothing to send (the max wait passed). */
  force: boolean;
  /** When the current position was first read with nothing to send; 0 = not parked. */
  parkedAtMs: number;
  p: Partition | null;
  unpark: (() => void) | null;
}

/** A stream with no report for this long is ended (its follower is gone or stuck). */
export const REPORT_SILENCE_MAX_MS = 30_000;

const keyOf = (topic: string, partition: number, topicId: string): string => `${topic}\u0000${partition}\u0000${topicId}`;

export class ReplicaStreamSession {
  private readonly entries = new Map<string, Entry>();
  private replicaId = -1;
  private scheduled = false;
  private flushing = false;
  private flushAgain = false;
  private waitingDrain = false;
  private closed = false;
  private lastReportMs = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly call: grpc.ServerDuplexStream<ReplicaReportWire, ReplicaPushWire>,
    private readonly deps: ReplicaStreamDeps,
  ) {
    call.on('data', (m: ReplicaReportWire) => this.onReport(m));
    call.on('end', () => this.end());
    call.on('error', () => this.close());
    call.on('cancelled', () => this.close());
    this.timer = setInterval(() => this.onMaxWaitTick(), Math.max(5, Math.floor(deps.maxWaitMs / 4)));
    this.timer.unref();
  }

  /** Ends the stream normally (the broker shuts down): the follower reconnects or moves on. */
  end(): void {
    if (this.closed) return;
    this.close();
    this.call.end();
  }

  private close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    for (const e of this.entries.values()) e.unpark?.();
    this.entries.clear();
    this.deps.onClosed(this);
  }

  /** Refuses the stream with a typed status (a bad message, a stale broker epoch). */
  private fail(err: unknown): void {
    if (this.closed) return;
    this.close();
    this.call.emit('error', toGrpcError(err));
  }

  private onReport(m: ReplicaReportWire): void {
    if (this.closed) return;
    this.lastReportMs = Date.now();
    try {
      const id = m.replicaId;
      if (this.replicaId === -1) {
        if (!Number.isSafeInteger(id) || id < 0) throw new FlotillaError('INVALID_REQUEST', `replica_id must be a broker id, not ${id}`);
        this.replicaId = id;
      } else if (id !== this.replicaId) {
        throw new FlotillaError('INVALID_REQUEST', `replica_id ${id} on a stream opened by broker ${this.replicaId}`);
      }
      this.deps.checkReplica(id, m.replicaEpoch);
      for (const s of m.stopped ?? []) {
        const k = keyOf(s.topic, s.partition, s.topicId);
        this.entries.get(k)?.unpark?.();
        this.entries.delete(k);
      }
      for (const pos of m.positions ?? []) {
        if (!Number.isSafeInteger(pos.fetchOffset) || pos.fetchOffset < 0) {
          throw new FlotillaError('INVALID_REQUEST', `fetch_offset ${pos.fetchOffset} of ${pos.topic}-${pos.partition} must be >= 0`);
        }
        const k = keyOf(pos.topic, pos.partition, pos.topicId);
        let e = this.entries.get(k);
        if (e === undefined) {
          if (this.entries.size >= REQUEST_PARTITIONS_MAX) throw new FlotillaError('INVALID_REQUEST', `a replication stream may follow at most ${REQUEST_PARTITIONS_MAX} partitions`);
          e = { key: k, pos, awaiting: true, ready: true, firstPass: true, force: false, parkedAtMs: 0, p: null, unpark: null };
          this.entries.set(k, e);
        } else {
          e.unpark?.();
          Object.assign(e, { pos, awaiting: true, ready: true, firstPass: true, force: false, parkedAtMs: 0, unpark: null });
        }
      }
    } catch (err) {
      this.fail(err);
      return;
    }
    this.schedule();
  }

  /** Coalesces wake-ups and reports of one event-loop turn into one read pass and one message. */
  private schedule(): void {
    if (this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private wake(e: Entry): void {
    if (!e.awaiting || e.ready || this.closed) return;
    // Woken for the high watermark only: nothing to send yet (divergence can change only with
    // the leader's log or epoch, which this also checks).
    const p = e.p;
    if (p !== null && !p.isClosed && p.role === 'leader' && p.leaderEpoch === e.pos.currentLeaderEpoch && p.logEndOffset <= e.pos.fetchOffset) return;
    e.ready = true;
    this.schedule();
  }

  private onMaxWaitTick(): void {
    const now = Date.now();
    if (now - this.lastReportMs > REPORT_SILENCE_MAX_MS) {
      this.deps.logger.warn({ replicaId: this.replicaId, silentMs: now - this.lastReportMs }, `no report from follower ${this.replicaId} for ${now - this.lastReportMs} ms; ending its replication stream`);
      this.fail(new FlotillaError('REQUEST_TIMED_OUT', `no report on this replication stream for ${now - this.lastReportMs} ms`));
      return;
    }
    let any = false;
    for (const e of this.entries.values()) {
      if (e.awaiting && e.parkedAtMs > 0 && now - e.parkedAtMs >= this.deps.maxWaitMs) {
        e.force = true;
        e.ready = true;
        any = true;
      }
    }
    if (any) this.schedule();
  }

  private async flush(): Promise<void> {
    if (this.closed || this.waitingDrain) return;
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    try {
      const out: ReplicaPushEntryWire[] = [];
      let bytes = 0;
      for (const e of [...this.entries.values()]) {
        if (!e.awaiting || !e.ready) continue;
        if (bytes >= this.deps.pushMaxBytes) {
          this.flushAgain = true;
          break;
        }
        const pos = e.pos;
        const firstPass = e.firstPass;
        e.ready = false;
        e.firstPass = false;
        const r = await this.deps.readPartition(pos, this.replicaId, this.deps.pushMaxBytes - bytes, out.length === 0, firstPass);
        if (this.closed) return;
        if (this.entries.get(e.key) !== e || e.pos !== pos) continue; // replaced meanwhile: read again
        const n = r.result.records.length;
        if (n > 0 || r.answerNow || e.force) {
          out.push({ ...r.result, reportId: pos.reportId });
          bytes += n;
          e.awaiting = false;
          e.force = false;
          e.parkedAtMs = 0;
          e.unpark?.();
          e.unpark = null;
        } else if (e.parkedAtMs === 0) {
          e.parkedAtMs = Date.now();
          e.p = r.p;
          // When the purgatory is full, the max-wait tick still answers the position.
          if (r.p !== null) e.unpark = this.deps.delayedFetches.park({ wake: () => this.wake(e) }, [r.p]);
        }
        // An append while the read above was pending woke nobody: check once more (without
        // this, such a write waited for the max wait — a lost wake-up).
        if (e.awaiting && !e.ready) this.wake(e);
      }
      if (out.length > 0 && !this.closed) {
        if (!this.call.write({ partitions: out })) {
          this.waitingDrain = true;
          this.call.once('drain', () => {
            this.waitingDrain = false;
            this.schedule();
          });
        }
      }
    } catch (err) {
      this.deps.logger.warn({ err, replicaId: this.replicaId }, 'replication stream read failed');
      this.fail(err);
    } finally {
      this.flushing = false;
      if (this.flushAgain) {
        this.flushAgain = false;
        this.schedule();
      }
    }
  }
}
