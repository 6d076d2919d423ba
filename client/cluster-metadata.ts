import { FlotillaError, errorNameForCode } from '../shared/errors/error-codes';
import type { BrokerConnections } from './broker-connections';
import type { ErrorWire, MetadataResponseWire, PartitionInfoWire } from './wire';

// The client's view of the cluster, from the brokers' Metadata RPC (Kafka's producer/consumer
// `Metadata` + `ManualMetadataUpdater`): which broker leads each partition, at which leader
// epoch, and where each broker listens. Read from cache; refreshed
// - when a topic is needed that the cache does not hold;
// - when a send or fetch fails with NOT_LEADER_FOR_PARTITION, UNKNOWN_LEADER_EPOCH,
//   FENCED_LEADER_EPOCH, LEADER_NOT_AVAILABLE or a lost connection (requestUpdate());
// and never more often than the refresh backoff allows: 100 ms after a refresh that
// worked, doubling after each one that failed up to 2 s (a leaderless partition does not
// turn the client into a metadata storm).
//
// A NOT_LEADER_FOR_PARTITION that names the new leader (details leaderId, leaderEpoch,
// leaderAddress) updates the cache at once when its epoch is newer: no round trip needed.
//
// Addresses tried for a refresh: the broker that answered last, the other known unfenced
// brokers, then the bootstrap list. An address that does not serve the Broker service (a
// controller in a shared bootstrap list) is skipped from then on.

export interface PartitionMetadata {
  readonly partition: number;
  /** Leader broker id; -1 when none. */
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
}

export interface TopicMetadata {
  readonly name: string;
  readonly topicId: string;
  readonly partitions: readonly PartitionMetadata[];
}

export interface BrokerAddress {
  readonly id: number;
  readonly address: string;
  readonly fenced: boolean;
}

export interface LeaderInfo {
  readonly brokerId: number;
  readonly address: string;
  readonly leaderEpoch: number;
}

export interface ClusterMetadataOptions {
  readonly bootstrap: readonly string[];
  readonly connections: BrokerConnections;
  /** Bound on one Metadata call. */
  readonly requestTimeoutMs: number;
  readonly refreshBackoffInitialMs?: number;
  readonly refreshBackoffMaxMs?: number;
  readonly logger?: { debug(obj: object, msg: string): void } | undefined;
}

/** Topics a client keeps metadata for; the least recently added are forgotten beyond. */
const TOPICS_MAX = 10_000;
/** Addresses remembered as "not a broker". */
const NOT_BROKERS_MAX = 64;

export class ClusterMetadata {
  private readonly brokers = new Map<number, BrokerAddress>();
  private readonly topics = new Map<string, TopicMetadata | FlotillaError>();
  /** Topics asked for in every refresh. */
  private readonly wanted = new Set<string>();
  private readonly notBrokers = new Set<string>();
  private lastGood: string | undefined;
  private inflight: Promise<void> | undefined;
  private lastRefreshEndMs = 0;
  private failures = 0;
  private stale = false;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  /** Incremented on every change, so waiters can tell news from a repeat. */
  version = 0;

  constructor(private readonly o: ClusterMetadataOptions) {
    this.backoffInitialMs = o.refreshBackoffInitialMs ?? 100;
    this.backoffMaxMs = o.refreshBackoffMaxMs ?? 2_000;
  }

  /** The cached topic, or an error it was answered with; undefined when never fetched. */
  cached(topic: string): TopicMetadata | FlotillaError | undefined {
    return this.topics.get(topic);
  }

  /**
   * The topic's metadata, refreshing until it is known or `waitMs` has passed. A topic the
   * brokers do not know is asked again (a topic just created reaches brokers a heartbeat
   * later) and then rejected UNKNOWN_TOPIC.
   */
  async topic(name: string, waitMs: number): Promise<TopicMetadata> {
    this.want(name);
    const deadline = Date.now() + waitMs;
    for (let attempt = 0; ; attempt++) {
      const t = this.topics.get(name);
      if (t && !(t instanceof FlotillaError)) return t;
      if (attempt > 0 && Date.now() >= deadline) {
        if (t) throw t;
        throw new FlotillaError('LEADER_NOT_AVAILABLE', `no metadata for topic ${name} within ${waitMs} ms`, { topic: name });
      }
      try {
        await this.refresh(true, deadline);
      } catch (e) {
        if (!(e as FlotillaError).retriable || Date.now() >= deadline) throw e;
      }
      const now = this.topics.get(name);
      if (!now || now instanceof FlotillaError) await sleep(Math.min(this.backoffMs(), Math.max(0, deadline - Date.now())));
    }
  }

  /** Adds topics to those asked about in every refresh. */
  want(...names: string[]): void {
    for (const n of names) {
      if (this.wanted.has(n)) continue;
      if (this.wanted.size >= TOPICS_MAX) {
        const oldest = this.wanted.values().next().value as string;
        this.wanted.delete(oldest);
        this.topics.delete(oldest);
      }
      this.wanted.add(n);
    }
  }

  leaderFor(topic: string, partition: number): LeaderInfo | undefined {
    const t = this.topics.get(topic);
    if (!t || t instanceof FlotillaError) return undefined;
    const p = t.partitions[partition];
    if (!p || p.leader < 0) return undefined;
    const b = this.brokers.get(p.leader);
    if (!b) return undefined;
    return { brokerId: b.id, address: b.address, leaderEpoch: p.leaderEpoch };
  }

  brokerList(): BrokerAddress[] {
    return [...this.brokers.values()];
  }

  /** Marks the cache stale; the next maybeRefresh() fetches (respecting the backoff). */
  requestUpdate(): void {
    this.stale = true;
  }

  get needsUpdate(): boolean {
    return this.stale;
  }

  /** When a refresh may start next (ms since the epoch). */
  nextRefreshAtMs(): number {
    return this.lastRefreshEndMs + this.backoffMs();
  }

  /** Refreshes if the cache was marked stale and the backoff allows; never throws. */
  maybeRefresh(): void {
    if (!this.stale || this.inflight || Date.now() < this.nextRefreshAtMs()) return;
    this.refresh(false).catch(() => undefined);
  }

  /**
   * Applies a NOT_LEADER_FOR_PARTITION's details (leaderId, leaderEpoch, leaderAddress) when
   * they are newer than the cache; otherwise marks the cache stale.
   */
  noteLeaderMoved(topic: string, partition: number, details: Readonly<Record<string, string | number>>): void {
    const t = this.topics.get(topic);
    const leaderId = Number(details.leaderId ?? -1);
    const leaderEpoch = Number(details.leaderEpoch ?? -1);
    const leaderAddress = String(details.leaderAddress ?? '');
    const p = t && !(t instanceof FlotillaError) ? t.partitions[partition] : undefined;
    if (t && !(t instanceof FlotillaError) && p && leaderId >= 0 && leaderAddress !== '' && leaderEpoch > p.leaderEpoch) {
      const partitions = [...t.partitions];
      partitions[partition] = { ...p, leader: leaderId, leaderEpoch };
      this.topics.set(topic, { ...t, partitions });
      if (!this.brokers.has(leaderId) || this.brokers.get(leaderId)!.address !== leaderAddress) {
        this.brokers.set(leaderId, { id: leaderId, address: leaderAddress, fenced: false });
      }
      this.version++;
      return;
    }
    this.stale = true;
  }

  /**
   * One Metadata round trip (coalesced with one already running). `force` ignores the
   * backoff (a caller that must have an answer); `deadlineMs` bounds the whole refresh.
   */
  refresh(force = false, deadlineMs?: number): Promise<void> {
    if (this.inflight) return this.inflight;
    const wait = force ? 0 : Math.max(0, this.nextRefreshAtMs() - Date.now());
    this.inflight = (async () => {
      if (wait > 0) await sleep(wait);
      try {
        await this.fetch(deadlineMs);
        this.failures = 0;
        this.stale = false;
      } catch (e) {
        this.failures++;
        throw e;
      } finally {
        this.lastRefreshEndMs = Date.now();
        this.inflight = undefined;
      }
    })();
    return this.inflight;
  }

  private backoffMs(): number {
    if (this.failures === 0) return this.backoffInitialMs;
    return Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** Math.min(this.failures, 20));
  }

  private candidates(): string[] {
    const out: string[] = [];
    const add = (a: string): void => {
      if (!out.includes(a) && !this.notBrokers.has(a)) out.push(a);
    };
    if (this.lastGood) add(this.lastGood);
    for (const b of this.brokers.values()) if (!b.fenced) add(b.address);
    for (const a of this.o.bootstrap) add(a);
    // Every bootstrap address refused the Broker service: try them anyway (a broker may have
    // been mistaken for a controller while it started).
    if (out.length === 0) out.push(...this.o.bootstrap);
    return out;
  }

  private async fetch(deadlineMs?: number): Promise<void> {
    let last: FlotillaError | undefined;
    for (const address of this.candidates()) {
      const deadline = Math.min(deadlineMs ?? Infinity, Date.now() + this.o.requestTimeoutMs);
      if (deadline <= Date.now()) break;
      try {
        // No topic wanted yet (a producer or consumer connecting): the brokers only, never the
        // whole cluster's topics (thousands of them took a loaded broker longer than the timeout).
        const req = this.wanted.size > 0 ? { topics: [...this.wanted] } : { topics: [], brokersOnly: true };
        const res = await this.o.connections.unary<MetadataResponseWire>(address, 'Metadata', req, deadline);
        this.apply(res);
        this.lastGood = address;
        return;
      } catch (e) {
        const err = e as FlotillaError;
        last = err;
        if (err.details?.notABroker) {
          if (this.notBrokers.size < NOT_BROKERS_MAX) this.notBrokers.add(address);
        } else if (!err.retriable) {
          throw err;
        }
        this.o.logger?.debug({ address, error: err.name, message: err.message }, 'metadata request failed; trying the next broker');
        if (this.lastGood === address) this.lastGood = undefined;
      }
    }
    throw last ?? new FlotillaError('LEADER_NOT_AVAILABLE', 'no broker address to ask for metadata');
  }

  private apply(res: MetadataResponseWire): void {
    for (const b of res.brokers ?? []) {
      this.brokers.set(b.brokerId, { id: b.brokerId, address: `${b.host}:${b.port}`, fenced: b.fenced });
    }
    const seen = new Set((res.brokers ?? []).map((b) => b.brokerId));
    for (const id of [...this.brokers.keys()]) if (!seen.has(id)) this.brokers.delete(id);
    for (const t of res.topics ?? []) {
      if (t.error && t.error.code !== 0) {
        this.topics.set(t.name, errorFromWire(t.error, { topic: t.name }));
        continue;
      }
      const partitions: PartitionMetadata[] = [...(t.partitions ?? [])]
        .sort((a, b) => a.partition - b.partition)
        .map((p: PartitionInfoWire) => ({ partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: p.replicas ?? [], isr: p.isr ?? [] }));
      this.topics.set(t.name, { name: t.name, topicId: t.topicId, partitions });
    }
    this.version++;
  }
}

/** An Error message from a response as a FlotillaError (details from its JSON). */
export function errorFromWire(e: ErrorWire, extra: Record<string, string | number> = {}): FlotillaError {
  const name = errorNameForCode(e.code);
  let details: Record<string, string | number> = {};
  if (e.detailsJson) {
    try {
      const parsed = JSON.parse(e.detailsJson) as Record<string, unknown>;
      for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string' || typeof v === 'number') details[k] = v;
    } catch {
      details = {};
    }
  }
  return new FlotillaError(name, e.message || e.name || name, { ...extra, ...details });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
