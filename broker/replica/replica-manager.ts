import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { MetadataImage, parseTopicConfig, partitionKey, partitionLabel } from '../../shared/metadata';
import type { LocalReplicaChanges, PartitionState, TopicConfig } from '../../shared/metadata';
import { DEFAULT_TAIL_CACHE_BYTES, PartitionLog, logConfigFromTopicConfig } from '../log';
import type { MetadataUpdate } from '../metadata-follower';
import { readHwCheckpoint, writeHwCheckpoint } from './hw-checkpoint';
import { IsrChangeRequest, Partition, Role } from './partition';
import { noopProducerGuardFactory } from './producer-guard';
import type { ProducerGuardFactory } from './producer-guard';
import { ReplicaFetcherManager } from './replica-fetcher';

// The replicas this broker hosts (Kafka's ReplicaManager + LogManager): it acts on the
// metadata image in metadata-offset order — opens a partition's log and becomes its leader or
// follower, deletes a removed partition's log — runs the follower fetchers, and the periodic
// work: ISR shrink checks, the high-watermark checkpoint, retention and flush.ms.
//
// Data dir layout:
//   <dataDir>/logs/<topic>-<partition>-<topicId>/   one PartitionLog per hosted replica; the
//       topic id makes a re-created topic (same name, new id) start from an empty directory,
//       never from a deleted topic's data
//   <dataDir>/replication-offset-checkpoint         hw-checkpoint.ts
//
// Ordering: onMetadataUpdate is called synchronously, in offset order; the work for each
// partition is chained (open, then each state in order, then close/delete), so a partition
// never sees states out of order, and different partitions proceed independently.

/**
 * replica.lag.time.max.ms default: 10 s. Kafka uses 30 s (KIP-537 raised it from 10 s for
 * large clusters with GC pauses). Here a follower reports its position at least every
 * FETCH_MAX_WAIT_MS (500 ms: the leader answers an idle position after that), so 10 s is 20
 * missed reports; a lower value shortens the stall of acks=all writes
 * behind a stuck-but-unfenced follower (the controller fences a silent broker after 9 s
 * anyway), a much lower one would shrink the ISR on a slow fsync or a busy shared CPU.
 */
export const REPLICA_LAG_TIME_MAX_MS_DEFAULT = 10_000;
/** Kafka's replica.high.watermark.checkpoint.interval.ms. */
export const HW_CHECKPOINT_INTERVAL_MS_DEFAULT = 5_000;
/** Kafka's log.retention.check.interval.ms. */
export const RETENTION_CHECK_INTERVAL_MS_DEFAULT = 300_000;
/** How often flush.ms is checked (a topic's flush.ms below this flushes on this tick). */
const FLUSH_CHECK_INTERVAL_MS = 1_000;
export const LOGS_DIR = 'logs';
/**
 * Memory for the in-memory log tails (broker/log TailCache) of all hosted replicas together.
 * Each replica gets an equal share, at most DEFAULT_TAIL_CACHE_BYTES, in steps of
 * TAIL_CACHE_STEP_BYTES (a share below one step turns its tail off): 256 MiB keeps the full
 * 2 MiB per replica up to 128 replicas, 256 KiB at 1,000, and never more than this in all.
 */
export const TAIL_CACHE_TOTAL_BYTES_DEFAULT = 256 * 1024 * 1024;
const TAIL_CACHE_STEP_BYTES = 64 * 1024;
/**
 * Partition logs opened at once (log recovery + high watermark + producer state). A restarted
 * broker, or one given thousands of replicas in one metadata batch, used to start every open
 * together: tens of thousands of fs requests queued on libuv's 4 threads ahead of everything
 * else (appends and fsyncs of the partitions already open), the memory of every open at once
 * (GC), and no replica usable until nearly all were. Bounded, they come up in a steady
 * stream, in metadata order, and the event loop keeps answering. 16 keeps libuv's threads busy.
 */
export const OPEN_CONCURRENCY_MAX_DEFAULT = 16;

/** A partition this broker hosts, for status and debugging. */
export interface HostedReplica {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
  readonly role: Role | 'offline' | 'opening';
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
  readonly logStartOffset: number;
  readonly logEndOffset: number;
  readonly highWatermark: number;
}

export interface ReplicaManagerOptions {
  readonly brokerId: number;
  readonly dataDir: string;
  readonly logger: Logger;
  /** AlterPartition to the active controller (the broker wires ControllerChannel here). */
  readonly alterPartition: (req: IsrChangeRequest & { brokerId: number; brokerEpoch: number }) => Promise<PartitionState>;
  /** This broker's epoch from its registration; -1 before. */
  readonly brokerEpoch: () => number;
  /** True while the controller has this broker fenced (it then refuses writes). */
  readonly isFenced: () => boolean;
  readonly nowMs?: () => number;
  readonly replicaLagTimeMaxMs?: number;
  readonly producerGuardFactory?: ProducerGuardFactory;
  readonly hwCheckpointIntervalMs?: number;
  readonly retentionCheckIntervalMs?: number;
  /** The leader's max wait for a follower position (the fetcher's stall detection counts from it). */
  readonly fetchMaxWaitMs?: number;
  /** Bound on all replicas' in-memory log tails together (TAIL_CACHE_TOTAL_BYTES_DEFAULT). */
  readonly tailCacheTotalBytes?: number;
  /** Partition logs opened at once (OPEN_CONCURRENCY_MAX_DEFAULT). */
  readonly openConcurrencyMax?: number;
}

interface Hosted {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
  readonly dir: string;
  /** Resolves to the partition once opened (null when it could not be: offline). */
  chain: Promise<Partition | null>;
  p: Partition | null;
  offline: Error | null;
}

export class ReplicaManager {
  private imageValue: MetadataImage = MetadataImage.EMPTY;
  private readonly hosted = new Map<string, Hosted>();
  /** Partitions being closed and deleted, by key: a re-add waits for it. */
  private readonly deleting = new Map<string, Promise<void>>();
  private readonly fetchers: ReplicaFetcherManager;
  private readonly progressListeners: ((p: Partition) => void)[] = [];
  private readonly timers: NodeJS.Timeout[] = [];
  private hwCheckpoint: Promise<Map<string, number>>;
  private stopped = false;
  readonly ackWaiters = { count: 0 };
  readonly replicaLagTimeMaxMs: number;
  private readonly nowMs: () => number;
  private readonly guardFactory: ProducerGuardFactory;
  /** Bounds the partition opens in progress (OPEN_CONCURRENCY_MAX_DEFAULT). */
  private readonly openSlots: Semaphore;

  constructor(private readonly o: ReplicaManagerOptions) {
    this.openSlots = new Semaphore(o.openConcurrencyMax ?? OPEN_CONCURRENCY_MAX_DEFAULT);
    this.nowMs = o.nowMs ?? Date.now;
    this.replicaLagTimeMaxMs = o.replicaLagTimeMaxMs ?? REPLICA_LAG_TIME_MAX_MS_DEFAULT;
    this.guardFactory = o.producerGuardFactory ?? noopProducerGuardFactory;
    this.hwCheckpoint = readHwCheckpoint(o.dataDir);
    this.fetchers = new ReplicaFetcherManager({
      brokerId: o.brokerId,
      logger: o.logger,
      brokerEpoch: o.brokerEpoch,
      addressOf: (id) => {
        const b = this.imageValue.brokers.get(id);
        return b === undefined ? undefined : `${b.host}:${b.port}`;
      },
      ...(o.fetchMaxWaitMs !== undefined ? { maxWaitMs: o.fetchMaxWaitMs } : {}),
    });
  }

  /** Starts the periodic work. */
  start(): void {
    const every = (ms: number, fn: () => Promise<void> | void): void => {
      const t = setInterval(() => {
        void Promise.resolve()
          .then(fn)
          .catch((err: unknown) => this.o.logger.warn({ err }, 'periodic replica work failed'));
      }, ms);
      t.unref();
      this.timers.push(t);
    };
    every(Math.max(10, Math.min(1_000, Math.floor(this.replicaLagTimeMaxMs / 4))), () => this.checkIsrs());
    every(this.o.hwCheckpointIntervalMs ?? HW_CHECKPOINT_INTERVAL_MS_DEFAULT, () => this.checkpointHighWatermarks());
    every(this.o.retentionCheckIntervalMs ?? RETENTION_CHECK_INTERVAL_MS_DEFAULT, () => this.runRetention());
    every(FLUSH_CHECK_INTERVAL_MS, () => this.runFlush());
  }

  get brokerId(): number {
    return this.o.brokerId;
  }

  /** The last metadata image applied. */
  image(): MetadataImage {
    return this.imageValue;
  }

  isFenced(): boolean {
    return this.o.isFenced();
  }

  /** Called when a partition's log end, high watermark or role moved (delayed fetches). */
  onProgress(listener: (p: Partition) => void): void {
    this.progressListeners.push(listener);
  }

  /** A MetadataPublisher: acts on what changed for this broker. */
  readonly onMetadataUpdate = (update: MetadataUpdate): void => {
    const previous = this.imageValue;
    this.imageValue = update.image;
    this.applyLocalChanges(update.localChanges, update.image.offset);
    if (previous.topicsById !== update.image.topicsById) this.applyConfigChanges(previous, update.image, update.touchedTopicIds);
  };

  /** The opened partition for topic name + index, with its hosted entry (undefined when not hosted). */
  lookup(topicName: string, partition: number): { topicId: string; p: Partition | null; offline: Error | null } | undefined {
    const topic = this.imageValue.topics.get(topicName);
    if (topic === undefined) return undefined;
    const h = this.hosted.get(partitionKey(topic.topicId, partition));
    return h === undefined ? undefined : { topicId: topic.topicId, p: h.p, offline: h.offline };
  }

  /** The hosted partitions, sorted by topic and partition. */
  replicas(): HostedReplica[] {
    const out: HostedReplica[] = [];
    for (const h of this.hosted.values()) {
      const state = this.imageValue.topicsById.get(h.topicId)?.partitions.get(h.partition);
      const p = h.p;
      out.push({
        topicId: h.topicId,
        topicName: h.topicName,
        partition: h.partition,
        role: h.offline !== null ? 'offline' : p === null ? 'opening' : p.role,
        leader: p?.leader ?? state?.leader ?? -1,
        leaderEpoch: p?.leaderEpoch ?? state?.leaderEpoch ?? -1,
        partitionEpoch: p?.partitionEpoch ?? state?.partitionEpoch ?? -1,
        replicas: p?.replicas ?? state?.replicas ?? [],
        isr: p?.isr ?? state?.isr ?? [],
        logStartOffset: p?.logStartOffset ?? -1,
        logEndOffset: p?.logEndOffset ?? -1,
        highWatermark: p?.highWatermark ?? -1,
      });
    }
    return out.sort((a, b) => (a.topicName < b.topicName ? -1 : a.topicName > b.topicName ? 1 : a.partition - b.partition));
  }

  /** Hosted partitions looked at for a config change so far (tests: it follows what changed, not what is hosted). */
  configScans = 0;

  /** The most partition opens that ran at once so far (at most openConcurrencyMax). */
  get openConcurrencyPeak(): number {
    return this.openSlots.peak;
  }

  /** Resolves once every queued open/state change/delete so far has run (tests, shutdown). */
  async settled(): Promise<void> {
    await Promise.all([...[...this.hosted.values()].map((h) => h.chain), ...this.deleting.values()]);
  }

  /** Applies one batch of local changes: deletes first (a re-created topic reuses names). */
  applyLocalChanges(changes: LocalReplicaChanges, metadataOffset: number): void {
    for (const d of changes.deletes) this.removePartition(d.topicId, d.partition, metadataOffset);
    // Parsed once per topic per batch (a batch may carry every partition of thousands of topics).
    const configs = new Map<string, TopicConfig>();
    for (const c of [...changes.leaders, ...changes.followers]) {
      const key = partitionKey(c.topicId, c.partition);
      let h = this.hosted.get(key);
      let topicConfig = configs.get(c.topicId);
      if (topicConfig === undefined) {
        topicConfig = parseTopicConfig(this.imageValue.topicsById.get(c.topicId)?.configs ?? new Map());
        configs.set(c.topicId, topicConfig);
      }
      if (h === undefined) h = this.openPartition(c.topicId, c.topicName, c.partition, c.state);
      const state = c.state;
      const entry = h;
      h.chain = h.chain.then(async (p) => {
        if (p === null) return null;
        await p.applyMetadata(state, topicConfig);
        this.updateFetcher(p);
        return p;
      });
      h.chain.catch((err: unknown) => this.o.logger.error({ err, partition: partitionLabel(entry.topicName, entry.partition) }, 'applying partition state failed'));
    }
  }

  private openPartition(topicId: string, topicName: string, partition: number, state: PartitionState): Hosted {
    const key = partitionKey(topicId, partition);
    const dir = path.join(this.o.dataDir, LOGS_DIR, `${topicName}-${partition}-${topicId}`);
    const label = partitionLabel(topicName, partition);
    const h: Hosted = { topicId, topicName, partition, dir, chain: Promise.resolve(null), p: null, offline: null };
    const before = this.deleting.get(key) ?? Promise.resolve();
    h.chain = before.then(() => this.openSlots.run(async () => {
      if (this.stopped || this.hosted.get(key) !== h) return null; // removed while it waited for a slot
      try {
        // The config as of now, not as of the change that added it: the tail-cache share
        // counts every replica of the batch (no resize of each one on the next flush tick).
        const topicConfig = parseTopicConfig(this.imageValue.topicsById.get(topicId)?.configs ?? new Map());
        const log = await PartitionLog.open({ dir, config: this.logConfigOf(topicConfig), nowMs: this.nowMs, logger: this.o.logger });
        const hw = (await this.hwCheckpoint).get(key);
        if (hw !== undefined) log.setHighWatermark(hw);
        const guard = await this.guardFactory({ topicId, topicName, partition, dir, logStartOffset: log.logStartOffset, logEndOffset: log.logEndOffset, log });
        const p = new Partition(topicId, topicName, partition, log, guard, { ...state, leader: -1, leaderEpoch: -1, partitionEpoch: -1 }, topicConfig, {
          brokerId: this.o.brokerId,
          nowMs: this.nowMs,
          logger: this.o.logger,
          replicaLagTimeMaxMs: this.replicaLagTimeMaxMs,
          alterIsr: (req) => this.alterIsr(req),
          isBrokerUnfenced: (id) => this.imageValue.isUnfenced(id),
          onProgress: (part) => {
            for (const l of this.progressListeners) l(part);
          },
          ackWaiters: this.ackWaiters,
        });
        if (this.stopped || this.hosted.get(key) !== h) {
          await p.close();
          return null;
        }
        h.p = p;
        return p;
      } catch (err) {
        h.offline = err as Error;
        this.o.logger.error({ err, partition: label, dir }, `cannot open the log of ${label}: the replica is offline on this broker`);
        return null;
      }
    }));
    this.hosted.set(key, h);
    return h;
  }

  private removePartition(topicId: string, partition: number, metadataOffset: number): void {
    const key = partitionKey(topicId, partition);
    const h = this.hosted.get(key);
    if (h === undefined) return;
    this.hosted.delete(key);
    const label = partitionLabel(h.topicName, partition);
    const done = h.chain
      .then(async (p) => {
        if (p !== null) {
          this.fetchers.unfollow(p);
          await p.close();
        }
        await fs.rm(h.dir, { recursive: true, force: true });
        this.o.logger.info({ partition: label, topicId, dir: h.dir, metadataOffset }, `deleted the log of ${label} (no longer hosted here)`);
      })
      .catch((err: unknown) => this.o.logger.error({ err, partition: label, dir: h.dir }, `could not delete the log of ${label}`))
      .finally(() => {
        if (this.deleting.get(key) === done) this.deleting.delete(key);
      });
    this.deleting.set(key, done);
  }

  /**
   * Reconfigures the hosted partitions of topics whose configs changed. Looks only at the
   * topics the update touched when it says which (a delta): every metadata change (an ISR
   * change, a topic created elsewhere) used to cost a look at every hosted partition, which
   * during a restart of a broker with thousands of them was most of its CPU. A topic new in
   * `image` is skipped: its partitions were opened with its configs as of now.
   */
  private applyConfigChanges(previous: MetadataImage, image: MetadataImage, touchedTopicIds: readonly string[] | undefined): void {
    const candidates: Hosted[] = [];
    if (touchedTopicIds === undefined) {
      candidates.push(...this.hosted.values());
    } else {
      for (const topicId of touchedTopicIds) {
        const now = image.topicsById.get(topicId);
        if (now === undefined) continue;
        for (const partition of now.partitions.keys()) {
          const h = this.hosted.get(partitionKey(topicId, partition));
          if (h !== undefined) candidates.push(h);
        }
      }
    }
    this.configScans += candidates.length;
    for (const h of candidates) {
      const now = image.topicsById.get(h.topicId);
      const before = previous.topicsById.get(h.topicId);
      if (now === undefined || before === undefined || before.configs === now.configs) continue;
      const topicConfig = parseTopicConfig(now.configs);
      const state = now.partitions.get(h.partition);
      if (state === undefined) continue;
      h.chain = h.chain.then(async (p) => {
        if (p === null) return null;
        await p.log.reconfigure(this.logConfigOf(topicConfig));
        await p.applyMetadata(state, topicConfig);
        return p;
      });
      h.chain.catch((err: unknown) => this.o.logger.warn({ err }, 'topic config change failed'));
    }
  }

  private updateFetcher(p: Partition): void {
    if (p.role === 'follower' && p.leader >= 0) this.fetchers.follow(p, p.leader, p.leaderEpoch);
    else this.fetchers.unfollow(p);
  }

  private async alterIsr(req: IsrChangeRequest): Promise<PartitionState> {
    if (this.o.isFenced()) throw new FlotillaError('BROKER_FENCED', `broker ${this.o.brokerId} is fenced: it changes no ISR`);
    return this.o.alterPartition({ ...req, brokerId: this.o.brokerId, brokerEpoch: this.o.brokerEpoch() });
  }

  /** Periodic ISR shrink check on every partition this broker leads. */
  checkIsrs(): void {
    if (this.o.isFenced()) return;
    for (const h of this.hosted.values()) h.p?.maybeShrinkIsr();
  }

  /** Writes every opened partition's high watermark (Kafka's replication-offset-checkpoint). */
  async checkpointHighWatermarks(): Promise<void> {
    const entries = new Map<string, number>();
    for (const [key, h] of this.hosted) if (h.p !== null && !h.p.isClosed) entries.set(key, h.p.highWatermark);
    await fs.mkdir(this.o.dataDir, { recursive: true });
    await writeHwCheckpoint(this.o.dataDir, entries);
    this.hwCheckpoint = Promise.resolve(entries);
  }

  /** Retention on every opened log (whole segments; see broker/log/README.md). */
  async runRetention(): Promise<void> {
    for (const h of this.hosted.values()) {
      const p = h.p;
      if (p === null || p.isClosed) continue;
      try {
        await p.log.deleteOldSegments();
      } catch (err) {
        if (!isFlotillaError(err)) throw err;
        this.o.logger.warn({ partition: p.label, error: err.name, message: err.message }, 'retention failed');
      }
    }
  }

  /** The log settings of a topic, with this broker's current tail-cache share. */
  private logConfigOf(topicConfig: TopicConfig): ReturnType<typeof logConfigFromTopicConfig> {
    return logConfigFromTopicConfig(topicConfig, { tailCacheBytes: this.tailCacheShareBytes() });
  }

  /** Each hosted replica's share of tailCacheTotalBytes (see TAIL_CACHE_TOTAL_BYTES_DEFAULT). */
  tailCacheShareBytes(): number {
    const total = this.o.tailCacheTotalBytes ?? TAIL_CACHE_TOTAL_BYTES_DEFAULT;
    const share = Math.floor(total / Math.max(1, this.hosted.size) / TAIL_CACHE_STEP_BYTES) * TAIL_CACHE_STEP_BYTES;
    return Math.min(DEFAULT_TAIL_CACHE_BYTES, share);
  }

  /**
   * Brings every open log to the current share (it shrinks as replicas are added, grows as
   * they go). Runs on the flush tick: the sum may exceed the bound for about a second after
   * many replicas arrive at once, never more.
   */
  private async resizeTailCaches(): Promise<void> {
    const share = this.tailCacheShareBytes();
    for (const h of this.hosted.values()) {
      const p = h.p;
      if (p === null || p.isClosed || p.log.config.tailCacheBytes === share) continue;
      await p.log.reconfigure({ tailCacheBytes: share }).catch((err: unknown) => this.o.logger.warn({ partition: p.label, err }, 'tail cache resize failed'));
    }
  }

  private async runFlush(): Promise<void> {
    await this.resizeTailCaches();
    for (const h of this.hosted.values()) {
      const p = h.p;
      if (p === null || p.isClosed || p.log.config.flushMs >= Number.MAX_SAFE_INTEGER) continue;
      await p.log.maybeFlush().catch((err: unknown) => this.o.logger.warn({ partition: p.label, err }, 'flush failed'));
    }
  }

  /**
   * Deletes log directories of partitions this broker no longer hosts (a topic deleted while
   * it was down). Call only when the image is current (after the broker is unfenced).
   */
  async deleteStrayLogs(): Promise<string[]> {
    const root = path.join(this.o.dataDir, LOGS_DIR);
    let names: string[];
    try {
      names = await fs.readdir(root);
    } catch {
      return [];
    }
    const known = new Set([...this.hosted.values()].map((h) => path.basename(h.dir)));
    const deleted: string[] = [];
    for (const name of names) {
      if (known.has(name)) continue;
      const m = /^(.+)-(\d+)-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(name);
      if (m === null) continue;
      if (this.deleting.has(partitionKey(m[3]!, Number(m[2])))) continue;
      const state = this.imageValue.topicsById.get(m[3]!)?.partitions.get(Number(m[2]));
      if (state?.replicas.includes(this.o.brokerId)) continue; // opening right now
      await fs.rm(path.join(root, name), { recursive: true, force: true });
      deleted.push(name);
      this.o.logger.info({ dir: name }, `deleted stray log ${name}: its partition is not hosted here any more`);
    }
    return deleted;
  }

  /** Source leader -> followed partitions. */
  fetcherState(): Map<number, string[]> {
    return this.fetchers.describe();
  }

  /** Stops fetchers and timers, checkpoints high watermarks, closes every log. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const t of this.timers.splice(0)) clearInterval(t);
    this.fetchers.close();
    await Promise.allSettled([...this.deleting.values()]);
    const opened = await Promise.all([...this.hosted.values()].map((h) => h.chain.catch(() => null)));
    await this.checkpointHighWatermarks().catch((err: unknown) => this.o.logger.warn({ err }, 'final high-watermark checkpoint failed'));
    await Promise.all(opened.map((p) => p?.close().catch((err: unknown) => this.o.logger.warn({ err, partition: p.label }, 'closing a partition log failed'))));
  }
}

/** At most `max` tasks run at once; the others wait in FIFO order (metadata order here). */
class Semaphore {
  private running = 0;
  private readonly waiting: (() => void)[] = [];
  /** The most tasks seen running at once (tests). */
  peak = 0;

  constructor(private readonly max: number) {
    if (!Number.isSafeInteger(max) || max < 1) throw new FlotillaError('INVALID_CONFIG', `openConcurrencyMax must be an integer >= 1, got ${max}`);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running >= this.max) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    this.peak = Math.max(this.peak, this.running);
    try {
      return await task();
    } finally {
      const next = this.waiting.shift();
      if (next !== undefined) next(); // the slot passes on: running stays the same
      else this.running--;
    }
  }
}
