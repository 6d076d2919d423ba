import type * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../shared/errors/error-codes';
import { fromGrpcError } from '../shared/rpc/grpc-errors';
import { BrokerConnections } from './broker-connections';
import { ClusterMetadata } from './cluster-metadata';
import type { FlotillaConfig, ResolvedFlotillaConfig } from './config';
import { listOffsets } from './list-offsets';
import { ControllerConnections } from './controller-connections';
import { ResolvedRetryOptions, backoffMs, resolveRetryOptions } from './retry-policy';
import type {
  BrokerDescription,
  ClusterDescription,
  ClusterEvent,
  CreateTopicOptions,
  ListEventsOptions,
  PartitionDescription,
  PartitionStatus,
  QuorumDescription,
  QuorumMember,
  TopicDescription,
} from './types';

// The admin client (KafkaJS shape: `new Flotilla({ brokers }).admin()`).
//
// Any controller can answer, and so can any broker (it forwards admin calls to the active
// controller): a follower forwards to the leader, and names it in its answer
// (shared/rpc/leader-hint.ts) so the next call goes to the leader directly. The client still follows a
// NOT_CONTROLLER's leaderAddress (the follower could not forward), moves on through the
// bootstrap list when an address is unreachable, and retries only errors the error table
// marks retriable, with exponential backoff and jitter, within one total deadline. Anything
// else surfaces at once as a FlotillaError (branch on `err.name`).
//
// Note: a create or delete whose answer was lost (timeout) is retried like any other call,
// so it can come back TOPIC_ALREADY_EXISTS / UNKNOWN_TOPIC although it was applied; Kafka's
// admin client behaves the same.
//
// fetchTopicOffsets() is a data-plane call (ListOffsets to each partition's leader, found
// through the brokers' Metadata), so it needs broker addresses among the bootstrap list.

export interface PartitionOffsets {
  readonly partition: number;
  /** The high watermark (ListOffsets latest); absent when the leader could not be asked. */
  readonly high?: number;
  /** The log start offset (ListOffsets earliest); absent when the leader could not be asked. */
  readonly low?: number;
  /** Why high/low are absent. */
  readonly error?: FlotillaError;
}

export class Admin {
  private readonly bootstrap: readonly string[];
  private readonly retry: ResolvedRetryOptions;
  private readonly connections = new ControllerConnections();
  private readonly random: () => number;
  private readonly logger: FlotillaConfig['logger'];
  /** Where the last call succeeded or where we were redirected: tried first next time. */
  private preferred: string | undefined;
  /** Next bootstrap address to try when the preferred one fails. */
  private cursor = 0;

  private dataPlane: { connections: BrokerConnections; metadata: ClusterMetadata } | undefined;

  constructor(config: ResolvedFlotillaConfig) {
    this.bootstrap = [...config.addresses];
    this.retry = resolveRetryOptions(config);
    this.random = config.random ?? Math.random;
    this.logger = config.logger;
  }

  async createTopic(opts: CreateTopicOptions): Promise<TopicDescription> {
    // Only the shape is checked here; bounds (live brokers, partition limits) are the server's.
    requireInteger('partitions', opts.partitions, Number.MIN_SAFE_INTEGER);
    requireInteger('replicationFactor', opts.replicationFactor, Number.MIN_SAFE_INTEGER);
    const res = await this.call<{ topic: WireTopic }>('CreateTopic', {
      name: opts.name,
      partitions: opts.partitions,
      replicationFactor: opts.replicationFactor,
      configs: opts.configs ?? {},
    });
    return topicFromWire(res.topic);
  }

  async deleteTopic(name: string): Promise<void> {
    await this.call('DeleteTopic', { name });
  }

  async listTopics(): Promise<string[]> {
    const res = await this.call<{ names?: string[] }>('ListTopics', {});
    return res.names ?? [];
  }

  /** Describes the named topics, or all topics when `names` is absent or empty. */
  async describeTopics(names: readonly string[] = []): Promise<TopicDescription[]> {
    const res = await this.call<{ topics?: WireTopic[] }>('DescribeTopics', { names: [...names] });
    return (res.topics ?? []).map(topicFromWire);
  }

  async describeCluster(): Promise<ClusterDescription> {
    const res = await this.call<{ brokers?: WireBroker[]; controllerId: number }>('DescribeCluster', {});
    return { brokers: (res.brokers ?? []).map(brokerFromWire), controllerId: res.controllerId };
  }

  async describeQuorum(): Promise<QuorumDescription> {
    const r = await this.call<WireQuorum>('DescribeQuorum', {});
    return {
      leaderId: r.leaderId,
      term: r.term,
      commitIndex: r.commitIndex,
      appliedIndex: r.appliedIndex,
      snapshotIndex: r.snapshotIndex,
      voters: (r.voters ?? []).map(memberFromWire),
      learners: (r.learners ?? []).map(memberFromWire),
      servedBy: r.servedBy,
      fromLeader: r.fromLeader,
    };
  }

  async listEvents(opts: ListEventsOptions = {}): Promise<ClusterEvent[]> {
    if (opts.fromOffset !== undefined) requireInteger('fromOffset', opts.fromOffset, 0);
    if (opts.max !== undefined) requireInteger('max', opts.max, 1);
    const res = await this.call<{ events?: ClusterEvent[] }>('ListEvents', { fromOffset: opts.fromOffset ?? 0, max: opts.max ?? 0 });
    return (res.events ?? []).map((e) => ({ offset: e.offset, timestampMs: e.timestampMs, kind: e.kind, text: e.text }));
  }

  /** Adds a controller (started with --join at `address`) to the quorum. */
  async addController(id: number, address: string): Promise<void> {
    requireInteger('id', id, 1);
    await this.call('AddController', { id, address });
  }

  async removeController(id: number): Promise<void> {
    requireInteger('id', id, 1);
    await this.call('RemoveController', { id });
  }

  /** Asks the leader to hand leadership to voter `to`. */
  async transferLeadership(to: number): Promise<void> {
    requireInteger('to', to, 1);
    await this.call('TransferLeadership', { to });
  }

  /**
   * Per partition of `topic`: the high watermark and log start offset, from its leader
   * (KafkaJS's fetchTopicOffsets). A partition whose leader is unknown or unreachable gets
   * an `error` instead of offsets; the call itself fails only when no broker gives metadata
   * or the topic is unknown. `timeoutMs` bounds it (default: requestTimeoutMs).
   */
  async fetchTopicOffsets(topic: string, timeoutMs = this.retry.requestTimeoutMs): Promise<PartitionOffsets[]> {
    if (!this.dataPlane) {
      const connections = new BrokerConnections();
      this.dataPlane = { connections, metadata: new ClusterMetadata({ bootstrap: this.bootstrap, connections, requestTimeoutMs: timeoutMs, logger: this.logger }) };
    }
    const { connections, metadata } = this.dataPlane;
    // Leaders are looked up afresh on every call: a cache kept from an earlier call would
    // send ListOffsets to a former leader with its old epoch after a leader change, and every
    // later call would answer FENCED_LEADER_EPOCH / NOT_LEADER_FOR_PARTITION.
    metadata.want(topic);
    await metadata.refresh(true, Date.now() + timeoutMs);
    const t = await metadata.topic(topic, timeoutMs);
    const byLeader = new Map<string, { partitions: number[]; epochs: number[] }>();
    const out = new Map<number, PartitionOffsets>();
    for (const p of t.partitions) {
      const leader = metadata.leaderFor(topic, p.partition);
      if (!leader) {
        out.set(p.partition, { partition: p.partition, error: new FlotillaError('LEADER_NOT_AVAILABLE', `${topic}-${p.partition} has no leader`) });
        continue;
      }
      let g = byLeader.get(leader.address);
      if (!g) byLeader.set(leader.address, (g = { partitions: [], epochs: [] }));
      g.partitions.push(p.partition);
      g.epochs.push(leader.leaderEpoch);
    }
    await Promise.all(
      [...byLeader].map(async ([address, g]) => {
        const queries = g.partitions.flatMap((partition, i) => [
          { topic, partition, timestampMs: -1, currentLeaderEpoch: g.epochs[i]! },
          { topic, partition, timestampMs: -2, currentLeaderEpoch: g.epochs[i]! },
        ]);
        try {
          const answers = await listOffsets(connections, address, queries, timeoutMs);
          g.partitions.forEach((partition, i) => {
            const high = answers[2 * i]!;
            const low = answers[2 * i + 1]!;
            const error = high.error ?? low.error;
            out.set(partition, error ? { partition, error } : { partition, high: high.offset, low: low.offset });
          });
        } catch (e) {
          for (const partition of g.partitions) out.set(partition, { partition, error: e as FlotillaError });
        }
      }),
    );
    return t.partitions.map((p) => out.get(p.partition)!);
  }

  /** Closes every connection; pending calls fail. */
  async close(): Promise<void> {
    this.connections.close();
    this.dataPlane?.connections.close();
  }

  /** KafkaJS spelling of close(). */
  disconnect(): Promise<void> {
    return this.close();
  }

  /** One logical call: attempts, redirects and backoff within the total deadline. */
  private async call<Res>(method: string, request: object): Promise<Res> {
    const start = Date.now();
    const deadline = start + this.retry.totalTimeoutMs;
    let address = this.preferred ?? this.nextBootstrap();
    let retries = 0;
    let redirects = 0;
    let attempts = 0;
    let previous: FlotillaError | undefined;
    for (;;) {
      attempts++;
      const attemptDeadline = Math.min(deadline, Date.now() + this.retry.requestTimeoutMs);
      let err: FlotillaError;
      try {
        const { res, leaderAddress } = await this.connections.controllerUnary<Res>(address, method, request, attemptDeadline);
        // A follower that forwarded names the leader: go there directly next time.
        this.preferred = leaderAddress ?? address;
        return res;
      } catch (e) {
        err = asFlotillaError(e, address);
      }
      if (!err.retriable) throw err;
      // An attempt cut short by our own total deadline says nothing new: report the error
      // that made us retry instead (e.g. NOT_CONTROLLER, CONTROLLER_UNAVAILABLE).
      if (previous && err.name === 'REQUEST_TIMED_OUT' && attemptDeadline === deadline) throw gaveUp(previous, attempts, start);
      if (attempts >= this.retry.attemptsMax) throw gaveUp(err, attempts, start);
      previous = err;
      const leaderAddress = err.name === 'NOT_CONTROLLER' ? String(err.details.leaderAddress ?? '') : '';
      const redirect = leaderAddress !== '' && leaderAddress !== address;
      this.logger?.debug({ method, address, error: err.name, message: err.message, redirect: redirect ? leaderAddress : undefined }, 'controller call failed; retrying');
      if (redirect) {
        address = leaderAddress;
        this.preferred = leaderAddress;
        // A redirect is news, not a failure: follow it at once, a few times.
        if (redirects++ < this.retry.redirectsWithoutBackoffMax) continue;
      } else {
        this.preferred = undefined;
        address = this.nextBootstrap();
      }
      const waitMs = backoffMs(retries++, this.retry, this.random);
      if (Date.now() + waitMs >= deadline) throw gaveUp(err, attempts, start);
      await sleep(waitMs);
    }
  }

  private nextBootstrap(): string {
    const a = this.bootstrap[this.cursor % this.bootstrap.length]!;
    this.cursor = (this.cursor + 1) % this.bootstrap.length;
    return a;
  }
}

/** The last retriable error, saying that retrying stopped. */
function gaveUp(last: FlotillaError, attempts: number, startMs: number): FlotillaError {
  return new FlotillaError(last.name, `${last.message} (gave up after ${attempts} attempt(s) in ${Date.now() - startMs} ms)`, { ...last.details }, { cause: last });
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function requireInteger(field: string, value: number, min: number): void {
  if (!Number.isSafeInteger(value) || value < min) throw new FlotillaError('INVALID_REQUEST', `${field} must be an integer >= ${min}, got ${value}`);
}

/** A server's typed answer as sent; a transport failure tagged with the address it concerns. */
function asFlotillaError(e: unknown, address: string): FlotillaError {
  if (e instanceof FlotillaError) return e;
  const se = e as grpc.ServiceError;
  if (typeof se?.code !== 'number') {
    return new FlotillaError('UNKNOWN', `${address}: ${(e as Error)?.message ?? String(e)}`, { address }, { cause: e });
  }
  const fe = fromGrpcError(se);
  if (se.metadata?.get('flotilla-error-code').length) return fe;
  return new FlotillaError(fe.name, `${address}: ${fe.message}`, { ...fe.details, address }, { cause: se });
}

// ---- wire (proto-loader objects, camelCase, enums as names) to the public types ----

interface WirePartition {
  partition: number;
  leader: number;
  leaderEpoch: number;
  partitionEpoch: number;
  replicas?: number[];
  isr?: number[];
  status: string;
  why?: string;
}

interface WireTopic {
  name: string;
  topicId: string;
  configs?: Record<string, string>;
  partitions?: WirePartition[];
}

interface WireBroker {
  id: number;
  host: string;
  port: number;
  rack?: string;
  fenced: boolean;
  epoch: number;
}

interface WireQuorum {
  leaderId: number;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  snapshotIndex: number;
  voters?: QuorumMember[];
  learners?: QuorumMember[];
  servedBy: number;
  fromLeader: boolean;
}

const STATUS_FROM_WIRE: Record<string, PartitionStatus> = {
  PARTITION_STATUS_ONLINE: 'online',
  PARTITION_STATUS_OFFLINE: 'offline',
  PARTITION_STATUS_UNDER_REPLICATED: 'under-replicated',
};

function partitionFromWire(p: WirePartition): PartitionDescription {
  return {
    partition: p.partition,
    leader: p.leader,
    leaderEpoch: p.leaderEpoch,
    partitionEpoch: p.partitionEpoch,
    replicas: p.replicas ?? [],
    isr: p.isr ?? [],
    // An unknown (newer) status reads as offline: never claim health we cannot vouch for.
    status: STATUS_FROM_WIRE[p.status] ?? 'offline',
    ...(p.why ? { why: p.why } : {}),
  };
}

function topicFromWire(t: WireTopic): TopicDescription {
  return { name: t.name, topicId: t.topicId, configs: { ...(t.configs ?? {}) }, partitions: (t.partitions ?? []).map(partitionFromWire) };
}

function brokerFromWire(b: WireBroker): BrokerDescription {
  return { id: b.id, host: b.host, port: b.port, ...(b.rack ? { rack: b.rack } : {}), fenced: b.fenced, epoch: b.epoch };
}

function memberFromWire(m: QuorumMember): QuorumMember {
  return { id: m.id, address: m.address, matchIndex: m.matchIndex, lag: m.lag };
}
