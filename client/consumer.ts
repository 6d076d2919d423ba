import { FlotillaError, type ErrorName } from '../shared/errors/error-codes';
import { decodeRecordBatches } from '../shared/records';
import type { BrokerConnections, CancellableCall } from './broker-connections';
import { ClusterMetadata, errorFromWire } from './cluster-metadata';
import { backoffMs } from './retry-policy';
import { listOffsets } from './list-offsets';
import type { FetchResponseWire } from './wire';

// The consumer, without groups for now (Kafka's KafkaConsumer with assign()/seek(); the
// KafkaJS shape for run({ eachMessage })). Consumer groups come in a later issue.
//
// assign() names the partitions; each starts at the position seek() gave it, or else by
// autoOffsetReset. run() starts one loop that keeps one Fetch long-poll in flight per leader
// broker (all the assigned partitions it leads, each from its position and with the leader
// epoch from metadata, KIP-320), decodes the returned batches and calls eachMessage for each
// record at or after the position — a batch can begin before it, since a fetch returns whole
// batches — one record at a time, in offset order per partition, awaiting each call.
//
// Positions and resets (Kafka's auto.offset.reset):
// - autoOffsetReset 'latest' (default, as Kafka) | 'earliest' | 'none': where a partition
//   without a position starts, and what OFFSET_OUT_OF_RANGE does (the position fell below
//   the log start after retention, or is past the high watermark after an unclean change):
//   'earliest' → the log start offset, 'latest' → the high watermark, 'none' → the consumer
//   stops with the OFFSET_OUT_OF_RANGE error (join() rejects with it).
// - seek({ offset: 'earliest' | 'latest' }) resolves the same way once, on the next fetch.
//
// Leadership: NOT_LEADER_FOR_PARTITION, UNKNOWN_LEADER_EPOCH, FENCED_LEADER_EPOCH,
// LEADER_NOT_AVAILABLE and lost connections refresh metadata (bounded backoff) and the
// partition is fetched from its new leader, from the same position.
//
// Ending: stop() (or disconnect()) ends the loop after the eachMessage call in progress (a
// long-poll in flight is cancelled); join() resolves then. An error thrown by eachMessage,
// or a non-retriable fetch error, ends the loop and join() rejects with it; the position is
// that of the record that failed, so running again redelivers it (at-least-once).
// Bounds: one fetch per broker in flight, maxBytes per fetch, records handled before the
// next fetch to that broker is sent.

export interface TopicPartition {
  readonly topic: string;
  readonly partition: number;
}

export type OffsetReset = 'earliest' | 'latest' | 'none';

export interface ConsumerConfig {
  readonly autoOffsetReset?: OffsetReset;
  /** Longest a fetch waits on the broker for records (fetch.max.wait.ms). Default 500. */
  readonly maxWaitMs?: number;
  /** Bytes the broker waits for before answering (fetch.min.bytes). Default 1. */
  readonly minBytes?: number;
  /** Most bytes in one fetch answer (fetch.max.bytes). Default 4 MiB. */
  readonly maxBytes?: number;
  /** Most bytes per partition in one fetch (max.partition.fetch.bytes). Default 1 MiB. */
  readonly partitionMaxBytes?: number;
  /** Bound on one call beyond its long-poll wait. Default 10000. */
  readonly requestTimeoutMs?: number;
  /** Backoff after a failed fetch, doubling up to 2 s. Default 100. */
  readonly retryBackoffMs?: number;
}

export interface ConsumedMessage {
  readonly offset: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  /** Header values by key; a repeated key gives the last value. */
  readonly headers: Readonly<Record<string, Buffer | null>>;
  readonly timestamp: number;
}

export interface EachMessagePayload {
  readonly topic: string;
  readonly partition: number;
  readonly message: ConsumedMessage;
  /** The partition's high watermark when the record was fetched. */
  readonly highWatermark: number;
}

export interface RunOptions {
  readonly eachMessage: (payload: EachMessagePayload) => Promise<void> | void;
}

export interface ConsumerDeps {
  readonly connections: BrokerConnections;
  readonly metadata: ClusterMetadata;
  readonly random: () => number;
  readonly logger?: { debug(obj: object, msg: string): void } | undefined;
}

/** Partitions one consumer may be assigned. */
const ASSIGNMENT_MAX = 100_000;
const REFRESH_ON = new Set<ErrorName>(['NOT_LEADER_FOR_PARTITION', 'UNKNOWN_LEADER_EPOCH', 'FENCED_LEADER_EPOCH', 'LEADER_NOT_AVAILABLE', 'REQUEST_TIMED_OUT', 'UNKNOWN_TOPIC', 'UNKNOWN_PARTITION']);

interface PartitionState {
  readonly topic: string;
  readonly partition: number;
  /** Next offset to deliver; undefined until reset. */
  position: number | undefined;
  /** A reset to do before fetching (seek to 'earliest'/'latest', or autoOffsetReset). */
  reset: 'earliest' | 'latest' | undefined;
  /** Not fetched again before this time (after an error). */
  backoffUntilMs: number;
  failures: number;
  /** A fetch including it is out, or its answer is not handled yet. */
  inFetch: boolean;
}

const key = (topic: string, partition: number): string => `${topic}\u0000${partition}`;

export class Consumer {
  private readonly assigned = new Map<string, PartitionState>();
  private readonly autoOffsetReset: OffsetReset;
  private readonly maxWaitMs: number;
  private readonly minBytes: number;
  private readonly maxBytes: number;
  private readonly partitionMaxBytes: number;
  private readonly requestTimeoutMs: number;
  private readonly retryBackoffMs: number;
  private running = false;
  private inHandler = false;
  private loop: Promise<void> | undefined;
  private readonly fetches = new Map<string, CancellableCall<FetchResponseWire>>();
  private wakeLoop: (() => void) | undefined;
  private connected = false;
  private disconnected = false;

  constructor(
    config: ConsumerConfig,
    private readonly deps: ConsumerDeps,
  ) {
    const reset = config.autoOffsetReset ?? 'latest';
    if (!['earliest', 'latest', 'none'].includes(reset)) throw new FlotillaError('INVALID_REQUEST', `autoOffsetReset must be earliest, latest or none, got ${String(reset)}`);
    this.autoOffsetReset = reset;
    this.maxWaitMs = intOption('maxWaitMs', config.maxWaitMs, 500, 0, 60_000);
    this.minBytes = intOption('minBytes', config.minBytes, 1, 0, 64 * 1024 * 1024);
    this.maxBytes = intOption('maxBytes', config.maxBytes, 4 * 1024 * 1024, 1_024, 15 * 1024 * 1024);
    this.partitionMaxBytes = intOption('partitionMaxBytes', config.partitionMaxBytes, 1024 * 1024, 1_024, 15 * 1024 * 1024);
    this.requestTimeoutMs = intOption('requestTimeoutMs', config.requestTimeoutMs, 10_000, 1);
    this.retryBackoffMs = intOption('retryBackoffMs', config.retryBackoffMs, 100, 0);
  }

  /** Fetches cluster metadata (fails when no broker answers). */
  async connect(): Promise<void> {
    if (this.disconnected) throw new FlotillaError('INVALID_REQUEST', 'the consumer was disconnected; create a new one');
    await this.deps.metadata.refresh(true, Date.now() + this.requestTimeoutMs);
    this.connected = true;
  }

  /**
   * The partition indexes of `topic` (Kafka's partitionsFor). A topic the brokers do not know
   * is asked again for up to `waitMs` (a new topic reaches brokers a heartbeat later), then
   * UNKNOWN_TOPIC.
   */
  async partitionsFor(topic: string, waitMs = 5_000): Promise<number[]> {
    const t = await this.deps.metadata.topic(topic, waitMs);
    return t.partitions.map((p) => p.partition);
  }

  /** Replaces the assignment. Partitions kept keep their positions. */
  assign(partitions: readonly TopicPartition[]): void {
    if (!Array.isArray(partitions)) throw new FlotillaError('INVALID_REQUEST', 'assign() takes an array of { topic, partition }');
    if (partitions.length > ASSIGNMENT_MAX) throw new FlotillaError('INVALID_REQUEST', `at most ${ASSIGNMENT_MAX} partitions per consumer`);
    const next = new Map<string, PartitionState>();
    for (const tp of partitions) {
      checkTopicPartition(tp);
      const k = key(tp.topic, tp.partition);
      next.set(k, this.assigned.get(k) ?? { topic: tp.topic, partition: tp.partition, position: undefined, reset: undefined, backoffUntilMs: 0, failures: 0, inFetch: false });
    }
    this.assigned.clear();
    for (const [k, v] of next) this.assigned.set(k, v);
    this.deps.metadata.want(...new Set(partitions.map((p) => p.topic)));
    this.wakeLoop?.();
  }

  assignment(): TopicPartition[] {
    return [...this.assigned.values()].map((s) => ({ topic: s.topic, partition: s.partition }));
  }

  /** Where the next record of an assigned partition will come from (undefined before the first reset). */
  position(tp: TopicPartition): number | undefined {
    return this.assigned.get(key(tp.topic, tp.partition))?.position;
  }

  /** Moves an assigned partition's position: an offset, or 'earliest' / 'latest'. */
  seek(o: { topic: string; partition: number; offset: number | string }): void {
    checkTopicPartition(o);
    const s = this.assigned.get(key(o.topic, o.partition));
    if (!s) throw new FlotillaError('INVALID_REQUEST', `seek: ${o.topic}-${o.partition} is not assigned; assign() it first`);
    if (o.offset === 'earliest' || o.offset === 'latest') {
      s.position = undefined;
      s.reset = o.offset;
    } else {
      const offset = typeof o.offset === 'string' && /^\d+$/.test(o.offset) ? Number(o.offset) : o.offset;
      if (typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
        throw new FlotillaError('INVALID_REQUEST', `seek: offset must be an integer >= 0, 'earliest' or 'latest', got ${String(o.offset)}`);
      }
      s.position = offset;
      s.reset = undefined;
    }
    s.backoffUntilMs = 0;
    this.wakeLoop?.();
  }

  /** Starts consuming; resolves once the loop runs (KafkaJS). join() waits for its end. */
  async run(opts: RunOptions): Promise<void> {
    if (!opts || typeof opts.eachMessage !== 'function') throw new FlotillaError('INVALID_REQUEST', 'run() needs { eachMessage }');
    if (this.running) throw new FlotillaError('INVALID_REQUEST', 'the consumer is already running');
    if (!this.connected) await this.connect();
    this.running = true;
    this.loop = this.runLoop(opts.eachMessage).finally(() => {
      this.running = false;
      for (const s of this.assigned.values()) s.inFetch = false;
      for (const f of this.fetches.values()) f.cancel();
      this.fetches.clear();
    });
    this.loop.catch(() => undefined);
  }

  /** Resolves when the run loop has ended by stop(); rejects with the error that ended it otherwise. */
  join(): Promise<void> {
    return this.loop ?? Promise.resolve();
  }

  /**
   * Ends the run loop after the eachMessage call in progress. Called from inside
   * eachMessage, it does not wait (that would wait for itself).
   */
  async stop(): Promise<void> {
    this.running = false;
    for (const f of this.fetches.values()) f.cancel();
    this.wakeLoop?.();
    if (this.inHandler) return;
    await this.loop?.catch(() => undefined);
  }

  async disconnect(): Promise<void> {
    this.disconnected = true;
    await this.stop();
    this.deps.connections.close();
  }

  // ---------------------------------------------------------------- the loop

  private async runLoop(eachMessage: RunOptions['eachMessage']): Promise<void> {
    // Answers that arrived, handled one at a time in arrival order.
    const arrived: { address: string; parts: PartitionState[]; offsets: number[]; res?: FetchResponseWire; err?: FlotillaError }[] = [];
    let signal: Promise<void> = Promise.resolve();
    let poke: () => void = () => undefined;
    const renew = (): void => {
      signal = new Promise((resolve) => (poke = resolve));
      this.wakeLoop = poke;
    };
    renew();
    while (this.running) {
      await this.resetPositions();
      if (!this.running) break;
      if (this.deps.metadata.needsUpdate) await this.deps.metadata.refresh(false).catch(() => undefined);
      const now = Date.now();
      let nextAtMs = Infinity;
      // Start a fetch to every leader that has none in flight.
      const byLeader = new Map<string, { parts: PartitionState[]; epochs: number[] }>();
      for (const s of this.assigned.values()) {
        if (s.position === undefined || s.inFetch) continue;
        if (s.backoffUntilMs > now) {
          nextAtMs = Math.min(nextAtMs, s.backoffUntilMs);
          continue;
        }
        const leader = this.deps.metadata.leaderFor(s.topic, s.partition);
        if (!leader) {
          this.deps.metadata.requestUpdate();
          this.backoff(s);
          nextAtMs = Math.min(nextAtMs, s.backoffUntilMs);
          continue;
        }
        if (this.fetches.has(leader.address)) continue;
        let g = byLeader.get(leader.address);
        if (!g) byLeader.set(leader.address, (g = { parts: [], epochs: [] }));
        g.parts.push(s);
        g.epochs.push(leader.leaderEpoch);
      }
      for (const [address, g] of byLeader) {
        const offsets = g.parts.map((s) => s.position!);
        for (const s of g.parts) s.inFetch = true;
        const call = this.deps.connections.cancellable<FetchResponseWire>(
          address,
          'Fetch',
          {
            replicaId: -1,
            replicaEpoch: 0,
            maxWaitMs: this.maxWaitMs,
            minBytes: this.minBytes,
            maxBytes: this.maxBytes,
            isolationLevel: 'READ_UNCOMMITTED',
            partitions: g.parts.map((s, i) => ({
              topic: s.topic,
              partition: s.partition,
              fetchOffset: offsets[i],
              partitionMaxBytes: this.partitionMaxBytes,
              currentLeaderEpoch: g.epochs[i],
              lastFetchedEpoch: -1,
            })),
          },
          Date.now() + this.maxWaitMs + this.requestTimeoutMs,
        );
        this.fetches.set(address, call);
        call.promise.then(
          (res) => arrived.push({ address, parts: g.parts, offsets, res }),
          (err: FlotillaError) => arrived.push({ address, parts: g.parts, offsets, err }),
        ).finally(() => {
          this.fetches.delete(address);
          poke();
        });
      }
      if (arrived.length === 0) {
        const waitMs = nextAtMs === Infinity ? (this.fetches.size > 0 ? Infinity : this.retryBackoffMs) : Math.max(0, nextAtMs - Date.now());
        let t: NodeJS.Timeout | undefined;
        const timeout = waitMs === Infinity ? undefined : new Promise<void>((resolve) => (t = setTimeout(resolve, waitMs)));
        await (timeout ? Promise.race([signal, timeout]) : signal);
        if (t) clearTimeout(t);
        renew();
        continue;
      }
      const a = arrived.shift()!;
      for (const s of a.parts) s.inFetch = false;
      if (a.err) {
        if (!this.running) break;
        // A whole fetch refused for a reason that new metadata can cure (a broker that lost
        // or never had the topic, e.g. one just restarted) is retried like a partition's.
        if (!a.err.retriable && !a.err.details?.notABroker && !REFRESH_ON.has(a.err.name)) throw a.err;
        this.deps.logger?.debug({ address: a.address, error: a.err.name, message: a.err.message }, 'fetch failed');
        this.deps.metadata.requestUpdate();
        for (const s of a.parts) this.backoff(s);
        continue;
      }
      await this.handleFetch(a.parts, a.offsets, a.res!, eachMessage);
    }
  }

  private async handleFetch(parts: PartitionState[], offsets: number[], res: FetchResponseWire, eachMessage: RunOptions['eachMessage']): Promise<void> {
    for (let i = 0; i < parts.length && this.running; i++) {
      const s = parts[i]!;
      // Unassigned or moved (seek) while the fetch was out: its answer is stale.
      if (this.assigned.get(key(s.topic, s.partition)) !== s || s.position !== offsets[i]) continue;
      const r = (res.partitions ?? []).find((p) => p.topic === s.topic && p.partition === s.partition);
      if (!r) continue;
      if (r.error && r.error.code !== 0) {
        const err = errorFromWire(r.error, { topic: s.topic, partition: s.partition });
        if (err.name === 'OFFSET_OUT_OF_RANGE') {
          if (this.autoOffsetReset === 'none') throw new FlotillaError('OFFSET_OUT_OF_RANGE', `${s.topic}-${s.partition}: offset ${s.position} is out of range (log ${r.logStartOffset}..${r.highWatermark}) and autoOffsetReset is none`, { ...err.details, offset: s.position! });
          this.deps.logger?.debug({ topic: s.topic, partition: s.partition, offset: s.position, reset: this.autoOffsetReset }, 'offset out of range; resetting');
          s.position = undefined;
          s.reset = this.autoOffsetReset;
          continue;
        }
        if (err.name === 'NOT_LEADER_FOR_PARTITION') this.deps.metadata.noteLeaderMoved(s.topic, s.partition, err.details);
        else if (REFRESH_ON.has(err.name)) this.deps.metadata.requestUpdate();
        if (!err.retriable) throw err;
        this.backoff(s);
        continue;
      }
      s.failures = 0;
      if (!r.records || r.records.length === 0) continue;
      for (const batch of decodeRecordBatches(r.records)) {
        if (batch.lastOffset < s.position!) continue;
        for (const rec of batch.records) {
          if (rec.offset < s.position!) continue;
          if (!this.running) return;
          const headers: Record<string, Buffer | null> = {};
          for (const h of rec.headers) headers[h.key] = h.value;
          this.inHandler = true;
          try {
            await eachMessage({
              topic: s.topic,
              partition: s.partition,
              message: { offset: rec.offset, key: rec.key, value: rec.value, headers, timestamp: rec.timestampMs },
              highWatermark: r.highWatermark,
            });
          } finally {
            this.inHandler = false;
          }
          s.position = rec.offset + 1;
        }
      }
    }
  }

  private backoff(s: PartitionState): void {
    s.backoffUntilMs = Date.now() + backoffMs(s.failures++, { backoffInitialMs: this.retryBackoffMs, backoffMaxMs: 2_000 }, this.deps.random);
  }

  /** Resolves positions of partitions that have none (seek to earliest/latest, autoOffsetReset). */
  private async resetPositions(): Promise<void> {
    const now = Date.now();
    const byLeader = new Map<string, { parts: PartitionState[]; ts: number[]; epochs: number[] }>();
    for (const s of this.assigned.values()) {
      if (s.position !== undefined || s.backoffUntilMs > now) continue;
      const reset = s.reset ?? this.autoOffsetReset;
      if (reset === 'none') {
        throw new FlotillaError('OFFSET_OUT_OF_RANGE', `${s.topic}-${s.partition} has no position and autoOffsetReset is none: seek() it first`, { topic: s.topic, partition: s.partition });
      }
      const leader = this.deps.metadata.leaderFor(s.topic, s.partition);
      if (!leader) {
        if (!this.deps.metadata.cached(s.topic)) await this.deps.metadata.topic(s.topic, this.requestTimeoutMs);
        else {
          this.deps.metadata.requestUpdate();
          this.backoff(s);
        }
        continue;
      }
      let g = byLeader.get(leader.address);
      if (!g) byLeader.set(leader.address, (g = { parts: [], ts: [], epochs: [] }));
      g.parts.push(s);
      g.ts.push(reset === 'earliest' ? -2 : -1);
      g.epochs.push(leader.leaderEpoch);
    }
    await Promise.all(
      [...byLeader].map(async ([address, g]) => {
        try {
          const res = await listOffsets(this.deps.connections, address, g.parts.map((s, i) => ({ topic: s.topic, partition: s.partition, timestampMs: g.ts[i]!, currentLeaderEpoch: g.epochs[i]! })), this.requestTimeoutMs);
          for (let i = 0; i < g.parts.length; i++) {
            const s = g.parts[i]!;
            const r = res[i]!;
            if (r.error) {
              if (!r.error.retriable) throw r.error;
              if (r.error.name === 'NOT_LEADER_FOR_PARTITION') this.deps.metadata.noteLeaderMoved(s.topic, s.partition, r.error.details);
              else this.deps.metadata.requestUpdate();
              this.backoff(s);
            } else if (s.position === undefined) {
              s.position = r.offset;
              s.reset = undefined;
            }
          }
        } catch (e) {
          const err = e as FlotillaError;
          if (!err.retriable) throw err;
          this.deps.metadata.requestUpdate();
          for (const s of g.parts) this.backoff(s);
        }
      }),
    );
  }
}

function checkTopicPartition(tp: { topic: string; partition: number }): void {
  if (!tp || typeof tp.topic !== 'string' || tp.topic.length === 0) throw new FlotillaError('INVALID_REQUEST', 'topic must be a non-empty string');
  if (!Number.isInteger(tp.partition) || tp.partition < 0) throw new FlotillaError('INVALID_REQUEST', `partition must be an integer >= 0, got ${String(tp.partition)}`);
}

function intOption(name: string, v: number | undefined, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < min || v > max) throw new FlotillaError('INVALID_REQUEST', `consumer config: ${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  return v;
}

