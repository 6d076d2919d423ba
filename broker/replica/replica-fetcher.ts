import * as grpc from '@grpc/grpc-js';
import { FlotillaError, errorNameForCode, isFlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { CHANNEL_OPTIONS, loadProto } from '../../shared/rpc/proto';
import type { Divergence, Partition } from './partition';
import { BROKER_MAX_MESSAGE_BYTES } from './limits';

// Followers pull from leaders (Kafka's ReplicaFetcherManager / ReplicaFetcherThread): one
// fetcher per source leader broker, each a loop of long-poll Fetch calls (replica_id = this
// broker, replica_epoch = its broker epoch) carrying every partition this broker follows on
// that leader. A partition's fetch says where its log ends and the epoch of its last batch; the
// answer is applied by the Partition (append, or truncation on a DivergingEpoch).
//
// Why long-poll Fetch rather than a stream: the leader parks a fetch until data arrives (up
// to FETCH_MAX_WAIT_MS), so a caught-up follower costs one call per max wait and a busy one
// gets data one round trip after the leader appended it; the same RPC serves consumers, and a
// stream would need flow control of its own. When the partition set changes, the call in
// flight is cancelled so a new partition starts at once (failover latency).

/** How long the leader may park a follower fetch; also bounds how stale the follower's HW is. */
export const FETCH_MAX_WAIT_MS = 500;
/** Per partition and per response caps of a follower fetch. */
const PARTITION_MAX_BYTES = 1024 * 1024;
const RESPONSE_MAX_BYTES = 16 * 1024 * 1024;
/** Backoff after a failed call: doubles from the first to the max. */
const BACKOFF_INITIAL_MS = 50;
const BACKOFF_MAX_MS = 1_000;
/** A partition whose fetch failed (not leader yet, epoch mismatch) waits this long. */
const PARTITION_RETRY_MS = 100;

interface BrokerClient extends grpc.Client {
  Fetch(req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<FetchResponseWire>): grpc.ClientUnaryCall;
}

interface ErrorWire {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

interface FetchResultWire {
  topic: string;
  partition: number;
  error: ErrorWire | null;
  highWatermark: number;
  logStartOffset: number;
  records: Buffer;
  divergingEpoch: { epoch: number; endOffset: number } | null;
  leaderEpoch: number;
}

interface FetchResponseWire {
  partitions: FetchResultWire[];
}

export function brokerClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadProto('broker.proto') as unknown as { flotilla: { broker: { Broker: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.broker.Broker;
}

export interface FetcherOptions {
  readonly brokerId: number;
  readonly logger: Logger;
  /** This broker's epoch (sent as replica_epoch); -1 before registration. */
  readonly brokerEpoch: () => number;
  /** host:port of a broker from the metadata image, or undefined when unknown. */
  readonly addressOf: (brokerId: number) => string | undefined;
  readonly maxWaitMs?: number;
}

interface Followed {
  readonly p: Partition;
  readonly leaderEpoch: number;
  delayedUntilMs: number;
}

/** Owns one ReplicaFetcher per source leader. */
export class ReplicaFetcherManager {
  private readonly fetchers = new Map<number, ReplicaFetcher>();
  private readonly ctor = brokerClientConstructor();
  private closed = false;

  constructor(private readonly o: FetcherOptions) {}

  /** Fetch `p` from `leaderId` at `leaderEpoch` (replacing whatever it fetched before). */
  follow(p: Partition, leaderId: number, leaderEpoch: number): void {
    if (this.closed) return;
    for (const [id, f] of this.fetchers) if (id !== leaderId) this.dropFrom(id, f, p);
    let f = this.fetchers.get(leaderId);
    if (f === undefined) {
      f = new ReplicaFetcher(leaderId, this.ctor, this.o);
      this.fetchers.set(leaderId, f);
    }
    f.add(p, leaderEpoch);
  }

  /** Stop fetching `p` (it leads, was deleted, or has no leader). */
  unfollow(p: Partition): void {
    for (const [id, f] of this.fetchers) this.dropFrom(id, f, p);
  }

  /** Source leader -> partition labels (debugging, tests). */
  describe(): Map<number, string[]> {
    return new Map([...this.fetchers].map(([id, f]) => [id, f.labels()]));
  }

  close(): void {
    this.closed = true;
    for (const f of this.fetchers.values()) f.stop();
    this.fetchers.clear();
  }

  private dropFrom(id: number, f: ReplicaFetcher, p: Partition): void {
    f.remove(p);
    if (f.size === 0) {
      f.stop();
      this.fetchers.delete(id);
    }
  }
}

class ReplicaFetcher {
  private readonly partitions = new Map<Partition, Followed>();
  private stopped = false;
  private inflight: grpc.ClientUnaryCall | undefined;
  private cancelledForChange = false;
  private client: BrokerClient | undefined;
  private clientAddress: string | undefined;
  private wake: (() => void) | undefined;
  private failures = 0;
  private readonly maxWaitMs: number;

  constructor(
    readonly leaderId: number,
    private readonly ctor: grpc.ServiceClientConstructor,
    private readonly o: FetcherOptions,
  ) {
    this.maxWaitMs = o.maxWaitMs ?? FETCH_MAX_WAIT_MS;
    void this.run().catch((err: unknown) => o.logger.error({ err, leaderId }, 'replica fetcher loop failed'));
  }

  get size(): number {
    return this.partitions.size;
  }

  labels(): string[] {
    return [...this.partitions.keys()].map((p) => p.label).sort();
  }

  add(p: Partition, leaderEpoch: number): void {
    const had = this.partitions.get(p);
    if (had !== undefined && had.leaderEpoch === leaderEpoch) return;
    this.partitions.set(p, { p, leaderEpoch, delayedUntilMs: 0 });
    this.interrupt();
  }

  remove(p: Partition): void {
    if (this.partitions.delete(p)) this.interrupt();
  }

  stop(): void {
    this.stopped = true;
    this.interrupt();
    this.client?.close();
  }

  /** A new partition set: cancel the parked call so the next one carries it at once. */
  private interrupt(): void {
    if (this.inflight !== undefined) {
      this.cancelledForChange = true;
      this.inflight.cancel();
    }
    this.wake?.();
  }

  private async run(): Promise<void> {
    // Bounded per iteration by the call deadline; ends when stopped.
    while (!this.stopped) {
      const now = Date.now();
      const eligible = [...this.partitions.values()].filter((f) => f.delayedUntilMs <= now && !f.p.isClosed);
      const address = this.o.addressOf(this.leaderId);
      if (eligible.length === 0 || address === undefined) {
        const next = Math.min(...[...this.partitions.values()].map((f) => f.delayedUntilMs));
        await this.sleep(Number.isFinite(next) ? Math.max(1, Math.min(next - now, 1_000)) : 1_000);
        continue;
      }
      const positions = eligible.map((f) => ({ f, ...f.p.fetchPosition() }));
      let res: FetchResponseWire;
      try {
        res = await this.fetch(address, positions);
        this.failures = 0;
      } catch (err) {
        if (this.stopped) return;
        if (this.cancelledForChange) {
          this.cancelledForChange = false;
          continue;
        }
        this.failures++;
        const level = this.failures === 1 || this.failures % 20 === 0 ? 'warn' : 'debug';
        this.o.logger[level]({ leaderId: this.leaderId, address, failures: this.failures, message: (err as Error).message }, `fetch from leader ${this.leaderId} failed`);
        await this.sleep(Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(this.failures, 10)));
        continue;
      }
      this.cancelledForChange = false;
      let progressed = false;
      for (let i = 0; i < positions.length; i++) {
        const { f, fetchOffset } = positions[i]!;
        const r = res.partitions[i];
        if (r === undefined || this.partitions.get(f.p) !== f) continue;
        try {
          progressed = (await this.handle(f, fetchOffset, r)) || progressed;
        } catch (err) {
          f.delayedUntilMs = Date.now() + BACKOFF_MAX_MS;
          const fields = { partition: f.p.label, leaderId: this.leaderId, error: (err as Error).name, message: (err as Error).message };
          if (isFlotillaError(err) && err.name === 'NOT_LEADER_FOR_PARTITION') this.o.logger.debug(fields, 'fetched data dropped: the partition changed role');
          else this.o.logger.warn(fields, `${f.p.label}: could not apply data fetched from leader ${this.leaderId}`);
        }
      }
      void progressed;
    }
  }

  /** Applies one partition's answer; true when something was appended or truncated. */
  private async handle(f: Followed, fetchOffset: number, r: FetchResultWire): Promise<boolean> {
    if (r.error !== null && r.error !== undefined && r.error.code !== 0) {
      const name = errorNameForCode(r.error.code);
      let details: Record<string, unknown> = {};
      try {
        details = r.error.detailsJson ? JSON.parse(r.error.detailsJson) : {};
      } catch {
        details = {};
      }
      if (name === 'OFFSET_OUT_OF_RANGE' && typeof details.logStartOffset === 'number' && typeof details.logEndOffset === 'number') {
        await f.p.onFetchOutOfRange(this.leaderId, f.leaderEpoch, details.logStartOffset, details.logEndOffset);
        return true;
      }
      // NOT_LEADER, FENCED/UNKNOWN_LEADER_EPOCH: one side's metadata is behind; wait a little.
      f.delayedUntilMs = Date.now() + PARTITION_RETRY_MS;
      this.o.logger.debug({ partition: f.p.label, leaderId: this.leaderId, error: name, message: r.error.message }, 'follower fetch refused for a partition');
      return false;
    }
    const divergence: Divergence | null = r.divergingEpoch ? { epoch: r.divergingEpoch.epoch, endOffset: r.divergingEpoch.endOffset } : null;
    const bytes = await f.p.applyFetched(this.leaderId, f.leaderEpoch, fetchOffset, {
      records: r.records ?? Buffer.alloc(0),
      highWatermark: r.highWatermark,
      divergence,
    });
    return bytes > 0 || divergence !== null;
  }

  private fetch(address: string, positions: { f: Followed; fetchOffset: number; lastFetchedEpoch: number }[]): Promise<FetchResponseWire> {
    if (this.client === undefined || this.clientAddress !== address) {
      this.client?.close();
      this.client = new this.ctor(address, grpc.credentials.createInsecure(), {
        ...CHANNEL_OPTIONS,
        'grpc.max_receive_message_length': BROKER_MAX_MESSAGE_BYTES,
      }) as unknown as BrokerClient;
      this.clientAddress = address;
    }
    const req = {
      replicaId: this.o.brokerId,
      replicaEpoch: this.o.brokerEpoch(),
      maxWaitMs: this.maxWaitMs,
      minBytes: 1,
      maxBytes: RESPONSE_MAX_BYTES,
      isolationLevel: 'READ_UNCOMMITTED',
      partitions: positions.map(({ f, fetchOffset, lastFetchedEpoch }) => ({
        topic: f.p.topicName,
        partition: f.p.partition,
        fetchOffset,
        partitionMaxBytes: PARTITION_MAX_BYTES,
        currentLeaderEpoch: f.leaderEpoch,
        lastFetchedEpoch,
        topicId: f.p.topicId,
      })),
    };
    const client = this.client;
    return new Promise((resolve, reject) => {
      this.inflight = client.Fetch(req, new grpc.Metadata(), { deadline: Date.now() + this.maxWaitMs + 10_000 }, (err, res) => {
        this.inflight = undefined;
        if (err) reject(err);
        else if (res === undefined) reject(new FlotillaError('UNKNOWN', 'empty fetch response'));
        else resolve(res);
      });
    });
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
