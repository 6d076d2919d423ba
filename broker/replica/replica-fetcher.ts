import * as grpc from '@grpc/grpc-js';
import { FlotillaError, errorNameForCode, isFlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { CHANNEL_OPTIONS, loadProto } from '../../shared/rpc/proto';
import type { Divergence, Partition } from './partition';
import { BROKER_MAX_MESSAGE_BYTES } from './limits';
import { withReplicateCodecs } from './replicate-codec';
import type { ReplicaPush, ReplicaPushEntry } from './replicate-codec';

// Followers replicate from leaders (Kafka's ReplicaFetcherManager / ReplicaFetcherThread):
// one fetcher per source leader broker, each one long-lived Replicate stream
// (proto/broker.proto) carrying every partition this broker follows on that leader. The
// fetcher reports a position per partition (its log end offset and the epoch of its last
// batch, with replica_id = this broker and its broker epoch); the leader answers each position
// once, as soon as it appended past it (pushed, no polling) or after its max wait with nothing
// new. The answer is applied by the Partition (append, or truncation on a DivergingEpoch), and
// the partition's next report — sent right after — tells the leader the new log end offset,
// which is what advances the high watermark. Reports of one event-loop turn go in one message.
//
// Why a stream and not a long-poll Fetch per round (what this was until the data-plane work of
// issue 3 §8): every round of a unary call is a new HTTP/2 stream with headers and a deadline,
// and grpc-js spent about a third of the brokers' CPU on it; on a stream a round is two small
// messages. The per-position request/answer keeps Fetch's semantics (the same leader code reads
// it) and bounds what is in flight: at most one answer per partition, each at most
// PARTITION_MAX_BYTES. A position replaced by a newer one (a leader epoch change) is never
// answered; answers are matched by report id, so a late answer to an old position is dropped.
//
// Failures: a broken stream (the leader went away, refused the stream with
// STALE_BROKER_EPOCH, ...) is reopened with backoff, and every partition reports again; a
// position left unanswered for maxWaitMs + STALL_MS means a stuck leader: the stream is
// cancelled and reopened. Partition-level errors (NOT_LEADER, FENCED/UNKNOWN_LEADER_EPOCH)
// delay that partition's next report by PARTITION_RETRY_MS.

/** How long the leader may hold a position with nothing new; also bounds how stale the follower's HW is. */
export const FETCH_MAX_WAIT_MS = 500;
/** Per partition cap of one answer (at least one whole batch is sent). */
const PARTITION_MAX_BYTES = 1024 * 1024;
/** Backoff after a broken stream: doubles from the first to the max. */
const BACKOFF_INITIAL_MS = 50;
const BACKOFF_MAX_MS = 1_000;
/** A partition whose answer was an error (not leader yet, epoch mismatch) reports again after this. */
const PARTITION_RETRY_MS = 100;
/** A position unanswered this long past the leader's max wait: the stream is restarted. */
const STALL_MS = 10_000;
/** Period of the fetcher's timer (reconnects, delayed partitions, stall check). */
const TICK_MS = 50;

type PushWire = ReplicaPush;
type PushEntryWire = ReplicaPushEntry;

type ReplicateCall = grpc.ClientDuplexStream<unknown, PushWire>;

interface BrokerClient extends grpc.Client {
  Replicate(md: grpc.Metadata): ReplicateCall;
}

export function brokerClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadProto('broker.proto') as unknown as { flotilla: { broker: { Broker: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.broker.Broker;
}

let replicationCtor: grpc.ServiceClientConstructor | undefined;
/** The Broker service with Replicate's hand-written codecs (replicate-codec.ts), client and server side. */
export function replicationServiceDefinition(): grpc.ServiceDefinition {
  return withReplicateCodecs(brokerClientConstructor().service);
}
function replicationClientConstructor(): grpc.ServiceClientConstructor {
  replicationCtor ??= grpc.makeGenericClientConstructor(replicationServiceDefinition(), 'Broker');
  return replicationCtor;
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
  /** No report before this (after an error answer). */
  delayedUntilMs: number;
  /** The unanswered report: its id (0 = none), the log end offset it carried, when it was sent. */
  reportId: number;
  reportOffset: number;
  reportSentMs: number;
  /** An answer is being applied (the next report follows it). */
  applying: boolean;
}

/** Owns one ReplicaFetcher per source leader. */
export class ReplicaFetcherManager {
  private readonly fetchers = new Map<number, ReplicaFetcher>();
  private readonly ctor = replicationClientConstructor();
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
  /** Unanswered reports by id; one per followed partition at most. */
  private readonly outstanding = new Map<number, Followed>();
  private readonly toReport = new Set<Followed>();
  private toStop: { topic: string; partition: number; topicId: string }[] = [];
  private reportScheduled = false;
  private nextReportId = 1;
  private stopped = false;
  private call: ReplicateCall | undefined;
  private client: BrokerClient | undefined;
  private clientAddress: string | undefined;
  private failures = 0;
  private nextConnectMs = 0;
  private readonly maxWaitMs: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    readonly leaderId: number,
    private readonly ctor: grpc.ServiceClientConstructor,
    private readonly o: FetcherOptions,
  ) {
    this.maxWaitMs = o.maxWaitMs ?? FETCH_MAX_WAIT_MS;
    this.timer = setInterval(() => this.onTick(), TICK_MS);
    this.timer.unref();
    setImmediate(() => this.onTick());
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
    if (had !== undefined) this.forget(had);
    const f: Followed = { p, leaderEpoch, delayedUntilMs: 0, reportId: 0, reportOffset: -1, reportSentMs: 0, applying: false };
    this.partitions.set(p, f);
    this.queueReport(f);
  }

  remove(p: Partition): void {
    const f = this.partitions.get(p);
    if (f === undefined) return;
    this.partitions.delete(p);
    this.forget(f);
    if (this.call !== undefined) {
      this.toStop.push({ topic: p.topicName, partition: p.partition, topicId: p.topicId });
      this.scheduleReports();
    }
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.client?.close();
  }

  private forget(f: Followed): void {
    if (f.reportId !== 0) this.outstanding.delete(f.reportId);
    f.reportId = 0;
    this.toReport.delete(f);
  }

  /** Reconnects, reports delayed partitions, restarts a stalled stream. */
  private onTick(): void {
    if (this.stopped) return;
    const now = Date.now();
    if (this.call === undefined) {
      if (this.partitions.size > 0 && now >= this.nextConnectMs) this.connect(now);
      return;
    }
    for (const f of this.partitions.values()) {
      if (f.reportId === 0) {
        if (!f.applying && f.delayedUntilMs <= now && !this.toReport.has(f)) this.queueReport(f);
      } else if (now - f.reportSentMs > this.maxWaitMs + STALL_MS) {
        this.o.logger.warn({ leaderId: this.leaderId, partition: f.p.label, waitedMs: now - f.reportSentMs }, `leader ${this.leaderId} has not answered ${f.p.label} in ${now - f.reportSentMs} ms; reopening the replication stream`);
        this.onBroken(this.call, new FlotillaError('REQUEST_TIMED_OUT', 'replication stream stalled'));
        return;
      }
    }
  }

  private connect(now: number): void {
    const address = this.o.addressOf(this.leaderId);
    if (address === undefined) {
      this.nextConnectMs = now + BACKOFF_MAX_MS;
      return;
    }
    if (this.client === undefined || this.clientAddress !== address) {
      this.client?.close();
      this.client = new this.ctor(address, grpc.credentials.createInsecure(), {
        ...CHANNEL_OPTIONS,
        'grpc.max_receive_message_length': BROKER_MAX_MESSAGE_BYTES,
      }) as unknown as BrokerClient;
      this.clientAddress = address;
    }
    const call = this.client.Replicate(new grpc.Metadata());
    this.call = call;
    call.on('data', (m: PushWire) => this.onPush(call, m));
    call.on('error', (err: Error) => this.onBroken(call, err));
    call.on('end', () => this.onBroken(call, new FlotillaError('NOT_LEADER_FOR_PARTITION', `leader ${this.leaderId} ended the replication stream`)));
    this.outstanding.clear();
    this.toStop = [];
    for (const f of this.partitions.values()) {
      f.reportId = 0;
      if (!f.applying && f.delayedUntilMs <= now) this.queueReport(f);
    }
  }

  private onBroken(call: ReplicateCall, err: Error): void {
    if (this.call !== call) return;
    this.call = undefined;
    call.cancel();
    this.outstanding.clear();
    this.toReport.clear();
    this.toStop = [];
    for (const f of this.partitions.values()) f.reportId = 0;
    if (this.stopped) return;
    this.failures++;
    const level = this.failures === 1 || this.failures % 20 === 0 ? 'warn' : 'debug';
    this.o.logger[level](
      { leaderId: this.leaderId, address: this.clientAddress, failures: this.failures, message: err.message },
      `replication stream to leader ${this.leaderId} broke`,
    );
    this.nextConnectMs = Date.now() + Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * 2 ** Math.min(this.failures - 1, 10));
  }

  private queueReport(f: Followed): void {
    if (this.call === undefined || this.stopped) return; // connect() reports everything
    this.toReport.add(f);
    this.scheduleReports();
  }

  private scheduleReports(): void {
    if (this.reportScheduled) return;
    this.reportScheduled = true;
    setImmediate(() => {
      this.reportScheduled = false;
      this.sendReports();
    });
  }

  /** One message with every position queued this turn (and the partitions to forget). */
  private sendReports(): void {
    const call = this.call;
    if (call === undefined || this.stopped) return;
    const now = Date.now();
    const positions = [];
    for (const f of this.toReport) {
      if (this.partitions.get(f.p) !== f || f.p.isClosed || f.applying) continue;
      const { fetchOffset, lastFetchedEpoch } = f.p.fetchPosition();
      if (f.reportId !== 0) this.outstanding.delete(f.reportId);
      f.reportId = this.nextReportId++;
      f.reportOffset = fetchOffset;
      f.reportSentMs = now;
      this.outstanding.set(f.reportId, f);
      positions.push({
        topic: f.p.topicName,
        partition: f.p.partition,
        topicId: f.p.topicId,
        currentLeaderEpoch: f.leaderEpoch,
        fetchOffset,
        lastFetchedEpoch,
        partitionMaxBytes: PARTITION_MAX_BYTES,
        reportId: f.reportId,
      });
    }
    this.toReport.clear();
    const stopped = this.toStop;
    this.toStop = [];
    if (positions.length === 0 && stopped.length === 0) return;
    // HTTP/2 flow control bounds what is buffered: at most one report per partition is unanswered.
    call.write({ replicaId: this.o.brokerId, replicaEpoch: this.o.brokerEpoch(), positions, stopped });
  }

  private onPush(call: ReplicateCall, m: PushWire): void {
    if (this.call !== call) return;
    this.failures = 0;
    for (const r of m.partitions ?? []) {
      const f = this.outstanding.get(r.reportId);
      if (f === undefined) continue; // an answer to a replaced position
      this.outstanding.delete(r.reportId);
      f.reportId = 0;
      if (this.partitions.get(f.p) !== f) continue;
      f.applying = true;
      this.handle(f, f.reportOffset, r)
        .catch((err: unknown) => {
          f.delayedUntilMs = Date.now() + BACKOFF_MAX_MS;
          const fields = { partition: f.p.label, leaderId: this.leaderId, error: (err as Error).name, message: (err as Error).message };
          if (isFlotillaError(err) && err.name === 'NOT_LEADER_FOR_PARTITION') this.o.logger.debug(fields, 'fetched data dropped: the partition changed role');
          else this.o.logger.warn(fields, `${f.p.label}: could not apply data fetched from leader ${this.leaderId}`);
        })
        .finally(() => {
          f.applying = false;
          if (this.partitions.get(f.p) === f && f.delayedUntilMs <= Date.now()) this.queueReport(f);
        });
    }
  }

  /** Applies one partition's answer. */
  private async handle(f: Followed, fetchOffset: number, r: PushEntryWire): Promise<void> {
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
        return;
      }
      // NOT_LEADER, FENCED/UNKNOWN_LEADER_EPOCH: one side's metadata is behind; wait a little.
      f.delayedUntilMs = Date.now() + PARTITION_RETRY_MS;
      this.o.logger.debug({ partition: f.p.label, leaderId: this.leaderId, error: name, message: r.error.message }, 'follower fetch refused for a partition');
      return;
    }
    const divergence: Divergence | null = r.divergingEpoch ? { epoch: r.divergingEpoch.epoch, endOffset: r.divergingEpoch.endOffset } : null;
    await f.p.applyFetched(this.leaderId, f.leaderEpoch, fetchOffset, {
      records: r.records ?? Buffer.alloc(0),
      highWatermark: r.highWatermark,
      divergence,
    });
  }
}
