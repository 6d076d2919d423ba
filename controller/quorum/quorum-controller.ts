import { strict as assert } from 'node:assert';
import { randomUUID } from 'node:crypto';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import {
  assignReplicas,
  BrokerRegistration,
  decodeBatch,
  encodeBatch,
  EVENTS_CAPACITY,
  imageFromRecords,
  encodeImageInSlices,
  imageToRecords,
  MAX_CLUSTER_PARTITIONS,
  MetadataDelta,
  MetadataEvent,
  MetadataImage,
  MetadataRecord,
  parseTopicConfig,
  partitionHealth,
  partitionLabel,
  PartitionState,
  replayOnto,
  TopicImage,
  validatePartitionCount,
  validateReplicationFactor,
  validateTopicConfigs,
  validateTopicName,
  applyPartitionChange,
} from '../../shared/metadata';
import { changesForDepartingBrokers, changesForLeaderBalance, changesForReturningBroker } from './partition-changes';
import type {
  AllocateProducerIdsRequest,
  AlterPartitionRequest,
  BrokerDescription,
  BrokerHeartbeatRequest,
  BrokerHeartbeatResponse,
  ControllerLogger,
  CreateTopicRequest,
  MetadataLog,
  PartitionDescription,
  QuorumControllerOptions,
  RegisterBrokerRequest,
  StateMachine,
  TopicDescription,
} from './types';

// The active controller's brain (Kafka's QuorumController). Requests never change state:
// each one is validated against the speculative image and turned into records, the records
// are proposed through Raft, and state changes only when the committed records come back
// through apply() and are replayed. The same apply() runs on followers, so every controller
// holds the same committed image.
//
// The speculative image is the committed image plus every batch proposed but not applied
// yet (KRaft keeps the same view with its timeline data structures). Generating against it
// lets requests in flight see each other: two CreateTopics of one name cannot both pass.
// Generation is synchronous (no await between reading the speculative image and appending
// to `pending`), so JavaScript's single thread plays the part of KRaft's event queue.
//
// Soft state not in the log: broker sessions (time of the last heartbeat), as in KRaft's
// BrokerHeartbeatManager. A new leader gives every broker a fresh session. Also Flotilla's
// own fast path: when a broker's BrokerSession stream to this controller closes (its process
// died and its kernel closed the socket) and no heartbeat follows within
// brokerConnectionGraceMs, the broker is fenced then, not after the whole session timeout.
// A live broker whose stream merely broke heartbeats at once, well inside the grace; a broker
// that is paused or cut off keeps its socket open (or silent) and is fenced by the timeout.

const DEFAULTS = {
  brokerSessionTimeoutMs: 9000,
  brokerConnectionGraceMs: 1000,
  producerIdBlockSize: 1000,
  maxPendingProposals: 1000,
  maxReadWaiters: 10_000,
  readWaitTimeoutMs: 5000,
  maxPreferredElectionsPerTick: 1000,
  departureChangesPerBatch: 250,
  leaderImbalanceCheckIntervalMs: 10_000,
};

/** Registered brokers, fenced or not; bounds the image and every per-broker scan. */
export const MAX_BROKERS = 10_000;
/** A batch larger than this would not fit one Raft entry comfortably (gRPC carries 16 MiB). */
export const MAX_BATCH_BYTES = 8 * 1024 * 1024;
/** Events returned by one listEvents call when the caller does not say. */
export const DEFAULT_LIST_EVENTS = 100;

/** The inputs of the last preferred-leader check, compared by identity (images are immutable). */
interface BalanceCheck {
  readonly brokers: MetadataImage['brokers'];
  readonly offPreferred: MetadataImage['partitionsOffPreferredLeader'];
  readonly atMs: number;
}

interface PendingProposal {
  readonly bytes: Uint8Array;
  /** decodeBatch(bytes): exactly what apply() would replay, not the generated objects. */
  readonly records: readonly MetadataRecord[];
  /**
   * The term its entry should carry: the term of the last applied entry, which is this
   * leader's own once becomeReady() applied its no-op. Only a guard: a wrong guess just
   * means apply() replays (the reused image is a function of base, bytes and offset alone).
   */
  readonly term: number;
  /**
   * The speculative image this batch was replayed onto, the offset it was replayed at, and
   * the result; null when the speculative chain was dropped (rebuilt by spec()). When the
   * batch commits at exactly `offset` onto exactly `base`, `after` is what apply() would
   * compute, and apply() takes it instead of replaying the batch a second time.
   */
  replayed: SpeculativeReplay | null;
  /** Settles true once committed and applied, false when dropped. */
  outcome?: Promise<boolean>;
}

interface SpeculativeReplay {
  readonly base: MetadataImage;
  readonly offset: number;
  readonly after: MetadataImage;
  /** Records the replay skipped (logged again if this result becomes the committed one). */
  readonly ignored: number;
}

interface ReadWaiter {
  readonly index: number;
  readonly resolve: () => void;
  readonly timer: NodeJS.Timeout;
}

/** What a request generated: records to propose, and how to answer once they are applied. */
interface Plan<T> {
  readonly records: MetadataRecord[];
  /** `index` is the Raft index the records were applied at, or null when none were needed. */
  done(index: number | null): T;
}

export class QuorumController implements StateMachine {
  private readonly log: MetadataLog;
  private readonly nowMs: () => number;
  private readonly logger: ControllerLogger;
  private readonly brokerSessionTimeoutMs: number;
  private readonly brokerConnectionGraceMs: number;
  private readonly producerIdBlockSize: number;
  private readonly random: (() => number) | undefined;
  private readonly maxPendingProposals: number;
  private readonly maxReadWaiters: number;
  private readonly readWaitTimeoutMs: number;
  private readonly maxPreferredElectionsPerTick: number;
  /** Partition changes one departure batch carries at most (fencing, replacement); the rest follow a batch per tick. */
  private readonly departureChangesPerBatch: number;
  private readonly leaderImbalanceCheckIntervalMs: number;

  /** The last committed (and applied) image. */
  private committed = MetadataImage.EMPTY;
  /** Term of the last applied entry. */
  private lastAppliedTerm = 0;
  /** Committed batches taken from the speculative replay instead of replayed again (leader). */
  private readonly replayCounters = { reused: 0, replayed: 0 };
  /** Set by onLeadershipChange. */
  private active = false;
  /** Bumped on every leadership change; work begun in an older generation is stale. */
  private generation = 0;
  /** The generation whose leader has applied everything committed before it took over. */
  private caughtUpGeneration = -1;
  private catchingUp: Promise<void> | null = null;
  /** Proposed, not yet applied, in proposal order. */
  private pending: PendingProposal[] = [];
  /** committed + pending, built lazily; null = rebuild. */
  private speculative: MetadataImage | null = null;
  /** brokerId -> controller clock at its last heartbeat (leader only). */
  private readonly sessions = new Map<number, number>();
  /**
   * Brokers this leader has itself heard from (a heartbeat or a registration) since it became
   * active. The fresh sessions a new leader grants (onLeadershipChange) keep brokers from
   * being fenced for the old leader's silence; they are not evidence that an incarnation is
   * alive, so they never make a new incarnation a DUPLICATE_BROKER_REGISTRATION.
   */
  private readonly heardFrom = new Set<number>();
  /**
   * Fenced brokers whose partitions may still name them as leader or ISR member: the fencing
   * batch carried at most departureChangesPerBatch partition changes, and each tick writes
   * the next ones (leader only; a new leader starts with every fenced broker here).
   */
  private readonly departing = new Map<number, { epoch: number; cause: string }>();
  /** Unfenced brokers a replacing incarnation is waiting for: the next tick fences them. */
  private readonly fenceSoon = new Map<number, string>();
  /** brokerId -> when its BrokerSession stream closed, for the epoch it was opened with (leader only). */
  private readonly connectionsLost = new Map<number, { readonly epoch: number; readonly atMs: number }>();
  private readWaiters: ReadWaiter[] = [];
  /** What the last preferred-leader check saw (leader only); null = check at the next tick. */
  private lastBalanceCheck: BalanceCheck | null = null;
  private readonly counters = { leaderBalanceChecks: 0 };

  constructor(opts: QuorumControllerOptions) {
    this.log = opts.log;
    this.nowMs = opts.nowMs;
    this.logger = opts.logger;
    this.brokerSessionTimeoutMs = opts.brokerSessionTimeoutMs ?? DEFAULTS.brokerSessionTimeoutMs;
    this.brokerConnectionGraceMs = opts.brokerConnectionGraceMs ?? DEFAULTS.brokerConnectionGraceMs;
    this.producerIdBlockSize = opts.producerIdBlockSize ?? DEFAULTS.producerIdBlockSize;
    this.random = opts.random;
    this.maxPendingProposals = opts.maxPendingProposals ?? DEFAULTS.maxPendingProposals;
    this.maxReadWaiters = opts.maxReadWaiters ?? DEFAULTS.maxReadWaiters;
    this.readWaitTimeoutMs = opts.readWaitTimeoutMs ?? DEFAULTS.readWaitTimeoutMs;
    this.maxPreferredElectionsPerTick = opts.maxPreferredElectionsPerTick ?? DEFAULTS.maxPreferredElectionsPerTick;
    this.departureChangesPerBatch = opts.departureChangesPerBatch ?? DEFAULTS.departureChangesPerBatch;
    this.leaderImbalanceCheckIntervalMs = opts.leaderImbalanceCheckIntervalMs ?? DEFAULTS.leaderImbalanceCheckIntervalMs;
    assert(this.brokerSessionTimeoutMs > 0, 'brokerSessionTimeoutMs must be positive');
    assert(Number.isSafeInteger(this.producerIdBlockSize) && this.producerIdBlockSize > 0, 'producerIdBlockSize must be a positive integer');
    assert(this.maxPendingProposals > 0 && this.maxReadWaiters > 0, 'limits must be positive');
  }

  /** The last committed image. */
  image(): MetadataImage {
    return this.committed;
  }

  /** Counters for metrics and tests. */
  stats(): { leaderBalanceChecks: number; committedFromSpeculation: number; committedByReplay: number } {
    return {
      ...this.counters,
      committedFromSpeculation: this.replayCounters.reused,
      committedByReplay: this.replayCounters.replayed,
    };
  }

  // ======================= StateMachine (called by the Raft driver) =======================

  apply(index: number, term: number, data: Uint8Array): void {
    assert(Number.isSafeInteger(index) && index > this.committed.offset, `apply(${index}) after offset ${this.committed.offset}`);
    this.lastAppliedTerm = term;
    if (data.length === 0) {
      this.committed = this.committed.withOffset(index);
      // Nothing changed but the offset: a speculative image over pending batches stays valid.
      if (this.pending.length === 0) this.speculative = null;
    } else {
      const reused = this.speculativeResult(index, term, data);
      if (reused !== null) {
        // The leader's common case: this entry is its oldest pending proposal, replayed at
        // this very offset onto this very image when it was proposed. Replay is a function of
        // (image, records, offset) alone, so that result IS the committed image; replaying
        // again would only cost CPU (~half of the leader's replay work at 64 in flight).
        this.replayCounters.reused++;
        if (reused.ignored > 0) this.logger.warn({ offset: index, ignored: reused.ignored }, 'replay skipped records that no longer apply');
        this.committed = reused.after;
        this.pending.shift();
        // Later pending batches were replayed onto this image: the speculative chain holds.
      } else {
        this.replayCounters.replayed++;
        // A batch we cannot decode means a corrupt log or a newer writer: crash, do not diverge.
        const records = decodeBatch(data);
        const delta = new MetadataDelta(this.committed);
        delta.replayBatch(records, index);
        if (delta.ignoredRecords > 0) {
          this.logger.warn({ offset: index, ignored: delta.ignoredRecords }, 'replay skipped records that no longer apply');
        }
        this.committed = delta.apply();
        this.retirePending(data);
      }
    }
    this.wakeReaders();
  }

  /**
   * The image replayed at propose time for the entry committing now, when it is exactly
   * this leader's oldest pending proposal: same bytes, same term, replayed at this index
   * onto the image committed now. Anything else (a dropped proposal before it, another
   * leader's entry, an entry without records in between, a snapshot) gives null: replay.
   */
  private speculativeResult(index: number, term: number, data: Uint8Array): SpeculativeReplay | null {
    const head = this.pending[0];
    if (head === undefined || head.replayed === null) return null;
    const r = head.replayed;
    if (r.offset !== index || r.base !== this.committed || head.term !== term) return null;
    return bytesEqual(head.bytes, data) ? r : null;
  }

  takeSnapshot(): Uint8Array {
    return encodeBatch(imageToRecords(this.committed));
  }

  snapshotLater(): Promise<Uint8Array> {
    // The committed image is immutable: capturing it is O(1); encoding happens in slices.
    return encodeImageInSlices(this.committed, () => new Promise<void>((resolve) => setImmediate(resolve)));
  }

  restoreSnapshot(index: number, data: Uint8Array): void {
    assert(index >= this.committed.offset, `snapshot at ${index} is older than the applied offset ${this.committed.offset}`);
    this.committed = imageFromRecords(decodeBatch(data), index);
    this.pending = [];
    this.speculative = null;
    this.logger.info({ offset: index, brokers: this.committed.brokers.size, topics: this.committed.topics.size }, 'metadata snapshot restored');
    this.wakeReaders();
  }

  // ======================= leadership and time =======================

  onLeadershipChange(isLeader: boolean, nowMs: number): void {
    this.generation++;
    this.active = isLeader;
    // Speculative state belongs to the term that proposed it: what was not applied may never
    // be, so start again from the committed image (KRaft's renounce()).
    this.pending = [];
    this.speculative = null;
    this.catchingUp = null;
    this.lastBalanceCheck = null;
    this.sessions.clear();
    this.heardFrom.clear();
    this.departing.clear();
    this.fenceSoon.clear();
    this.connectionsLost.clear();
    if (isLeader) {
      // A new leader has not seen anyone's heartbeats: everyone gets a full session before
      // being fenced, rather than being fenced for the old leader's silence.
      for (const id of this.committed.brokers.keys()) this.sessions.set(id, nowMs);
      // The last leader may have fenced a broker without moving all its partitions yet.
      for (const b of this.committed.brokers.values()) if (b.fenced) this.departing.set(b.id, { epoch: b.epoch, cause: `broker ${b.id} is fenced` });
    }
    this.logger.info({ isLeader, offset: this.committed.offset }, isLeader ? 'became the active controller' : 'no longer the active controller');
  }

  /**
   * Leader only; call periodically. Fences brokers whose session expired, moving their
   * leaderships away and taking them out of ISRs in the same batch; otherwise elects leaders
   * for leaderless partitions that can have one and moves leadership back to preferred replicas
   * (see leaderBalanceDue for when it looks).
   */
  async tick(nowMs: number): Promise<void> {
    if (!this.active || !this.log.isLeader()) return;
    try {
      await this.becomeReady();
    } catch (err) {
      if (isFlotillaError(err) && err.retriable) return;
      throw err;
    }
    const image = this.spec();
    for (const id of this.sessions.keys()) if (!image.brokers.has(id)) this.sessions.delete(id);
    const causes = new Map<number, string>();
    const records: MetadataRecord[] = [];
    for (const b of [...image.brokers.values()].sort((x, y) => x.id - y.id)) {
      const last = this.sessions.get(b.id);
      if (last === undefined) {
        // Registered while this leader was catching up: its session starts now.
        this.sessions.set(b.id, nowMs);
        continue;
      }
      const silentMs = nowMs - last;
      if (b.fenced) continue;
      const lost = this.connectionsLost.get(b.id);
      const lostMs = lost !== undefined && lost.epoch === b.epoch && last <= lost.atMs ? nowMs - lost.atMs : -1;
      let reason: string;
      const replacing = this.fenceSoon.get(b.id);
      if (silentMs > this.brokerSessionTimeoutMs) reason = `broker ${b.id} fenced: no heartbeat for ${silentMs} ms`;
      else if (lostMs >= this.brokerConnectionGraceMs) reason = `broker ${b.id} fenced: its connection closed ${lostMs} ms ago and no heartbeat followed`;
      else if (replacing !== undefined) reason = replacing;
      else continue;
      causes.set(b.id, reason);
      records.push({ type: 'BrokerFenced', brokerId: b.id, brokerEpoch: b.epoch, reason, timestampMs: nowMs });
    }
    this.fenceSoon.clear();
    // Departures carry at most departureChangesPerBatch partition changes per batch: one
    // batch of thousands (a broker leading many partitions) held the leader's event loop past
    // the election timeout under load, its term ended, the next leader fenced again — a loop
    // the chaos suite found. The rest follow, one batch per tick.
    const cap = this.departureChangesPerBatch;
    if (causes.size > 0) {
      const changes = changesForDepartingBrokers(image, causes, nowMs, cap + 1);
      if (changes.length > cap) {
        changes.length = cap;
        for (const [id, cause] of causes) this.departing.set(id, { epoch: image.brokers.get(id)!.epoch, cause });
      }
      records.push(...changes);
      this.logger.warn({ brokers: [...causes.keys()], partitionChanges: records.length - causes.size }, 'fencing brokers (session expired, connection closed or replaced)');
    } else if (this.departing.size > 0) {
      const still = new Map<number, string>();
      for (const [id, d] of this.departing) {
        const b = image.brokers.get(id);
        if (b !== undefined && b.fenced && b.epoch === d.epoch) still.set(id, d.cause);
        else this.departing.delete(id);
      }
      const changes = still.size === 0 ? [] : changesForDepartingBrokers(image, still, nowMs, cap + 1);
      if (changes.length <= cap) for (const id of still.keys()) this.departing.delete(id);
      else changes.length = cap;
      records.push(...changes);
    } else if (this.leaderBalanceDue(image, nowMs)) {
      this.counters.leaderBalanceChecks++;
      this.lastBalanceCheck = { brokers: image.brokers, offPreferred: image.partitionsOffPreferredLeader, atMs: nowMs };
      records.push(...changesForLeaderBalance(image, this.maxPreferredElectionsPerTick, nowMs));
    }
    if (records.length === 0) return;
    try {
      await this.propose(records);
    } catch (err) {
      // The next tick regenerates whatever is still needed.
      this.lastBalanceCheck = null;
      if (isFlotillaError(err) && err.retriable) {
        this.logger.warn({ err: err.message, code: err.name }, 'tick proposal failed');
        return;
      }
      throw err;
    }
  }

  /**
   * Whether preferred-leader election could now answer differently than at the last check.
   * Its answer depends only on the partitions not led by their preferred replica (the image
   * indexes them; their entries change with every change of such a partition), on which
   * brokers are live (image.brokers changes on every register, fence and unfence) and on a
   * topic's unclean.leader.election.enable. So the check runs when the first two changed, and
   * otherwise at most every leaderImbalanceCheckIntervalMs (default 10 s) as a backstop for
   * config changes and anything else we did not foresee. Kafka checks every
   * leader.imbalance.check.interval.seconds (300 s); a rescan of every partition on every
   * 250 ms tick was 17 % of a busy leader's CPU at 60,000 partitions.
   */
  private leaderBalanceDue(image: MetadataImage, nowMs: number): boolean {
    if (image.partitionsOffPreferredLeader.size === 0) return false;
    const last = this.lastBalanceCheck;
    return (
      last === null ||
      last.brokers !== image.brokers ||
      last.offPreferred !== image.partitionsOffPreferredLeader ||
      nowMs - last.atMs >= this.leaderImbalanceCheckIntervalMs
    );
  }

  // ======================= admin =======================

  async createTopic(req: CreateTopicRequest): Promise<TopicDescription> {
    return this.write((image, nowMs) => {
      validateTopicName(req.name);
      const name = req.name;
      if (image.topics.has(name)) {
        throw new FlotillaError('TOPIC_ALREADY_EXISTS', `topic "${name}" already exists`, { topic: name });
      }
      const other = image.collidingTopic(name);
      if (other !== undefined) {
        throw new FlotillaError(
          'TOPIC_ALREADY_EXISTS',
          `topic "${name}" collides with existing topic "${other}": '.' and '_' are the same in metric names`,
          { topic: name, existing: other },
        );
      }
      validatePartitionCount(req.partitions);
      const live = [...image.brokers.values()].filter((b) => !b.fenced).sort((a, b) => a.id - b.id);
      validateReplicationFactor(req.replicationFactor, live.length);
      validateTopicConfigs(req.configs, req.replicationFactor);
      const total = image.partitionCount();
      if (total + req.partitions > MAX_CLUSTER_PARTITIONS) {
        throw new FlotillaError(
          'LIMIT_EXCEEDED',
          `creating ${req.partitions} partitions would bring the cluster to ${total + req.partitions}; the limit is ${MAX_CLUSTER_PARTITIONS}`,
        );
      }
      const topicId = this.newTopicId(image);
      const assignment = assignReplicas(live, req.partitions, req.replicationFactor, { random: this.random });
      const configs = Object.entries(req.configs ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
      const configText = configs.length === 0 ? '' : ` with ${configs.map(([k, v]) => `${k}=${v}`).join(', ')}`;
      const records: MetadataRecord[] = [
        {
          type: 'Topic',
          name,
          topicId,
          reason: `topic ${name} created: ${req.partitions} partitions, replication factor ${req.replicationFactor}${configText}`,
          timestampMs: nowMs,
        },
      ];
      assignment.forEach((replicas, partition) => {
        records.push({ type: 'Partition', topicId, partition, replicas, isr: replicas, leader: replicas[0], leaderEpoch: 0, partitionEpoch: 0 });
      });
      for (const [k, value] of configs) {
        records.push({ type: 'Config', resourceType: 'topic', resourceName: name, key: k, value, reason: '', timestampMs: nowMs });
      }
      return {
        records,
        done: () => {
          const topic = this.committed.topicsById.get(topicId);
          if (topic !== undefined) return describeTopic(this.committed, topic);
          // Deleted by a request that committed right after: report the topic as created.
          const asCreated = replayOnto(image, records, image.offset + 1);
          return describeTopic(asCreated, asCreated.topicsById.get(topicId) as TopicImage);
        },
      };
    });
  }

  async deleteTopic(name: string): Promise<void> {
    return this.write((image, nowMs) => {
      const topic = image.topics.get(name);
      if (topic === undefined) throw new FlotillaError('UNKNOWN_TOPIC', `topic "${name}" does not exist`, { topic: String(name) });
      return {
        records: [
          {
            type: 'RemoveTopic',
            topicId: topic.topicId,
            reason: `topic ${name} deleted (${topic.partitions.size} partitions, id ${topic.topicId})`,
            timestampMs: nowMs,
          },
        ],
        done: () => undefined,
      };
    });
  }

  /** Linearizable: waits until the local state has applied the leader's read index. */
  async listTopics(): Promise<string[]> {
    const image = await this.readImage();
    return [...image.topics.keys()].sort();
  }

  /** All topics sorted by name, or the named ones in request order (UNKNOWN_TOPIC if one is missing). */
  async describeTopics(names?: string[]): Promise<TopicDescription[]> {
    const image = await this.readImage();
    if (names === undefined || names.length === 0) {
      return [...image.topics.values()].sort((a, b) => (a.name < b.name ? -1 : 1)).map((t) => describeTopic(image, t));
    }
    const missing = names.filter((n) => !image.topics.has(n));
    if (missing.length > 0) {
      throw new FlotillaError('UNKNOWN_TOPIC', `unknown topic(s): ${missing.map((n) => `"${n}"`).join(', ')}`, { topic: missing[0] });
    }
    return names.map((n) => describeTopic(image, image.topics.get(n) as TopicImage));
  }

  async describeCluster(): Promise<{ brokers: BrokerDescription[] }> {
    const image = await this.readImage();
    const leaders = new Map<number, number>();
    const replicas = new Map<number, number>();
    for (const t of image.topics.values()) {
      for (const p of t.partitions.values()) {
        leaders.set(p.leader, (leaders.get(p.leader) ?? 0) + 1);
        for (const r of p.replicas) replicas.set(r, (replicas.get(r) ?? 0) + 1);
      }
    }
    const now = this.nowMs();
    const brokers = [...image.brokers.values()]
      .sort((a, b) => a.id - b.id)
      .map((b): BrokerDescription => {
        const last = this.sessions.get(b.id);
        return {
          id: b.id,
          incarnationId: b.incarnationId,
          epoch: b.epoch,
          host: b.host,
          port: b.port,
          ...(b.rack !== null ? { rack: b.rack } : {}),
          fenced: b.fenced,
          leaderCount: leaders.get(b.id) ?? 0,
          replicaCount: replicas.get(b.id) ?? 0,
          ...(last !== undefined ? { lastHeartbeatAgoMs: Math.max(0, now - last) } : {}),
        };
      });
    return { brokers };
  }

  /** Events with offset >= fromOffset, oldest first, at most `max` (default 100, at most EVENTS_CAPACITY). */
  async listEvents(opts: { fromOffset?: number; max?: number } = {}): Promise<MetadataEvent[]> {
    const image = await this.readImage();
    const fromOffset = opts.fromOffset ?? 0;
    const max = Math.min(EVENTS_CAPACITY, opts.max !== undefined && opts.max > 0 ? Math.floor(opts.max) : DEFAULT_LIST_EVENTS);
    const out: MetadataEvent[] = [];
    for (const e of image.events) {
      if (e.offset < fromOffset) continue;
      out.push(e);
      if (out.length >= max) break;
    }
    return out;
  }

  // ======================= broker-facing =======================

  /**
   * Registers a broker incarnation, fenced; the broker epoch is the offset of the
   * RegisterBroker record (KRaft). A new incarnation replaces the old one — the old one's
   * leaderships move away in the same batch — but only once the old one is fenced or its
   * session expired: while it still heartbeats, the newcomer gets DUPLICATE_BROKER_REGISTRATION
   * (KIP-631; two processes configured with one id must not take turns knocking each other
   * out). A broker restarted after a crash therefore re-registers once its old session ends.
   */
  async registerBroker(req: RegisterBrokerRequest): Promise<{ brokerEpoch: number }> {
    checkInt(req.brokerId, 'brokerId', 0, 2 ** 31 - 1);
    checkString(req.incarnationId, 'incarnationId', 1, 128);
    checkString(req.host, 'host', 1, 255);
    checkInt(req.port, 'port', 1, 65535);
    if (req.rack !== undefined) checkString(req.rack, 'rack', 0, 255);
    const rack = req.rack === undefined || req.rack === '' ? null : req.rack;
    return this.write((image, nowMs) => {
      const id = req.brokerId;
      const existing = image.brokers.get(id);
      if (existing === undefined && image.brokers.size >= MAX_BROKERS) {
        throw new FlotillaError('LIMIT_EXCEEDED', `cannot register broker ${id}: ${MAX_BROKERS} brokers are registered already`);
      }
      if (existing !== undefined && existing.incarnationId !== req.incarnationId && !existing.fenced) {
        // Only a heartbeat this leader received shows the old incarnation alive: after a
        // controller failover (or several, while a cluster restarts) a restarted broker is
        // otherwise refused until it has been silent for a whole session on one leader.
        const last = this.heardFrom.has(id) ? this.sessions.get(id) : undefined;
        const silentMs = last === undefined ? Infinity : nowMs - last;
        if (silentMs <= this.brokerSessionTimeoutMs) {
          throw new FlotillaError(
            'DUPLICATE_BROKER_REGISTRATION',
            `broker ${id} is registered by another live incarnation (last heartbeat ${silentMs} ms ago); ` +
              `a new incarnation is accepted once that one is fenced or silent for ${this.brokerSessionTimeoutMs} ms`,
            { brokerId: id, retryAfterMs: this.brokerSessionTimeoutMs - silentMs + 1 },
          );
        }
      }
      const where = `${req.host}:${req.port}${rack === null ? '' : ` rack ${rack}`}`;
      const reason =
        existing === undefined
          ? `broker ${id} registered at ${where}`
          : existing.incarnationId === req.incarnationId
            ? `broker ${id} registered again at ${where} (same incarnation ${req.incarnationId})`
            : `broker ${id} re-registered at ${where}: incarnation ${existing.incarnationId} replaced by ${req.incarnationId}`;
      const records: MetadataRecord[] = [
        {
          type: 'RegisterBroker',
          brokerId: id,
          incarnationId: req.incarnationId,
          brokerEpoch: 0, // = the offset of this record
          host: req.host,
          port: req.port,
          rack,
          fenced: true,
          reason,
          timestampMs: nowMs,
        },
      ];
      if (existing !== undefined) {
        // The old incarnation is gone: it must not stay leader or in any ISR — in this batch,
        // so the new one can never be unfenced while the old one's ISR places remain. When that
        // is more than one batch's worth, the old incarnation is fenced first (next tick, its
        // partitions moved a batch per tick) and the newcomer asked to retry.
        const cause = `broker ${id} re-registered (epoch ${existing.epoch} ended)`;
        const changes = changesForDepartingBrokers(image, new Map([[id, cause]]), nowMs, this.departureChangesPerBatch + 1);
        if (changes.length > this.departureChangesPerBatch) {
          if (!existing.fenced) this.fenceSoon.set(id, `broker ${id} fenced: a new incarnation (${req.incarnationId}) is registering`);
          throw new FlotillaError(
            'DUPLICATE_BROKER_REGISTRATION',
            `broker ${id}'s previous incarnation still leads or is in the ISR of more than ${this.departureChangesPerBatch} partitions; they are being moved: retry`,
            { brokerId: id, retryAfterMs: 500 },
          );
        }
        records.push(...changes);
      }
      this.sessions.set(id, nowMs);
      this.heardFrom.add(id);
      return {
        records,
        done: (index) => {
          assert(index !== null, 'a registration always writes a record');
          this.logger.info({ brokerId: id, brokerEpoch: index, incarnationId: req.incarnationId }, 'broker registered');
          return { brokerEpoch: index };
        },
      };
    });
  }

  /**
   * A broker opened its BrokerSession stream (leader only): checks the epoch (UNKNOWN_BROKER /
   * STALE_BROKER_EPOCH / NOT_CONTROLLER) and forgets an earlier closed connection.
   */
  brokerSessionOpened(brokerId: number, brokerEpoch: number): { leaderEpoch: number } {
    if (!this.active) throw new FlotillaError('NOT_CONTROLLER', 'this controller is not the active controller');
    this.brokerAtEpoch(this.spec(), brokerId, brokerEpoch);
    this.connectionsLost.delete(brokerId);
    return { leaderEpoch: this.lastAppliedTerm };
  }

  /** Its BrokerSession stream closed (see the header): fenced at the next tick after the grace unless it heartbeats. */
  brokerSessionClosed(brokerId: number, brokerEpoch: number, nowMs: number): void {
    if (!this.active) return;
    const b = this.spec().brokers.get(brokerId);
    if (b === undefined || b.epoch !== brokerEpoch || b.fenced) return;
    this.connectionsLost.set(brokerId, { epoch: brokerEpoch, atMs: nowMs });
  }

  /**
   * Keeps a broker's session alive. A fenced broker that has replayed the log up to its own
   * registration is unfenced, and partitions without a leader that it can lead get one, in
   * the same batch. wantShutdown fences it (controlled shutdown: leaderships move away first).
   */
  async brokerHeartbeat(req: BrokerHeartbeatRequest): Promise<BrokerHeartbeatResponse> {
    return this.write((image, nowMs) => {
      const broker = this.brokerAtEpoch(image, req.brokerId, req.brokerEpoch);
      this.sessions.set(broker.id, nowMs);
      this.heardFrom.add(broker.id);
      this.connectionsLost.delete(broker.id);
      const answer = (isFenced: boolean): BrokerHeartbeatResponse => ({ isFenced, leaderEpoch: this.lastAppliedTerm });
      const afterCommit = (): BrokerHeartbeatResponse => {
        const now = this.committed.brokers.get(broker.id);
        return answer(now === undefined || now.epoch !== broker.epoch || now.fenced);
      };
      if (req.wantShutdown === true) {
        if (broker.fenced) return { records: [], done: () => answer(true) };
        const reason = `broker ${broker.id} fenced: controlled shutdown requested`;
        const changes = changesForDepartingBrokers(image, new Map([[broker.id, reason]]), nowMs, this.departureChangesPerBatch + 1);
        if (changes.length > this.departureChangesPerBatch) {
          changes.length = this.departureChangesPerBatch;
          this.departing.set(broker.id, { epoch: broker.epoch, cause: reason });
        }
        return {
          records: [{ type: 'BrokerFenced', brokerId: broker.id, brokerEpoch: broker.epoch, reason, timestampMs: nowMs }, ...changes],
          done: afterCommit,
        };
      }
      if (broker.fenced && req.currentMetadataOffset >= broker.epoch) {
        const reason = `broker ${broker.id} unfenced: heartbeat caught up at offset ${req.currentMetadataOffset}`;
        return {
          records: [
            { type: 'BrokerUnfenced', brokerId: broker.id, brokerEpoch: broker.epoch, reason, timestampMs: nowMs },
            ...changesForReturningBroker(image, broker.id, reason, nowMs),
          ],
          done: afterCommit,
        };
      }
      return { records: [], done: () => answer(broker.fenced) };
    });
  }

  /**
   * A partition leader changes its ISR (KIP-497). Only the current leader, at the current
   * leader epoch and partition epoch, may; a broker may join the ISR only while unfenced.
   */
  async alterPartition(req: AlterPartitionRequest): Promise<PartitionState> {
    return this.write((image, nowMs) => {
      this.brokerAtEpoch(image, req.brokerId, req.brokerEpoch);
      const topic = image.topics.get(req.topic);
      if (topic === undefined) throw new FlotillaError('UNKNOWN_TOPIC', `topic "${req.topic}" does not exist`, { topic: String(req.topic) });
      const state = topic.partitions.get(req.partition);
      const label = partitionLabel(req.topic, req.partition);
      if (state === undefined) throw new FlotillaError('UNKNOWN_PARTITION', `partition ${label} does not exist (${topic.partitions.size} partitions)`);
      if (state.leader !== req.brokerId) {
        throw new FlotillaError('NOT_LEADER_FOR_PARTITION', `broker ${req.brokerId} is not the leader of ${label} (leader: ${state.leader})`, {
          leader: state.leader,
        });
      }
      if (req.leaderEpoch !== state.leaderEpoch) {
        throw new FlotillaError(
          'NOT_LEADER_FOR_PARTITION',
          `leader epoch ${req.leaderEpoch} for ${label} is not the current leader epoch ${state.leaderEpoch}`,
          { leader: state.leader, leaderEpoch: state.leaderEpoch },
        );
      }
      if (req.partitionEpoch !== state.partitionEpoch) {
        throw new FlotillaError(
          'STALE_PARTITION_EPOCH',
          `partition epoch ${req.partitionEpoch} for ${label} is not the current partition epoch ${state.partitionEpoch}`,
          { partitionEpoch: state.partitionEpoch },
        );
      }
      const newIsr = checkIsr(req.newIsr, state, image, label);
      if (newIsr.length === state.isr.length && newIsr.every((b, i) => b === state.isr[i])) {
        return { records: [], done: () => state };
      }
      const change = { isr: newIsr };
      const expected = applyPartitionChange(state, change);
      const why = req.reason !== undefined && req.reason !== '' ? `: ${req.reason.slice(0, 200)}` : '';
      return {
        records: [
          {
            type: 'PartitionChange',
            topicId: topic.topicId,
            partition: req.partition,
            ...change,
            reason: `${label}: ISR [${state.isr.join(',')}] -> [${newIsr.join(',')}] by leader ${req.brokerId}${why}`,
            timestampMs: nowMs,
          },
        ],
        done: () => this.committed.topicsById.get(topic.topicId)?.partitions.get(req.partition) ?? expected,
      };
    });
  }

  /** Hands out the next block of producer ids; blocks never overlap (the log orders them). */
  async allocateProducerIds(req: AllocateProducerIdsRequest): Promise<{ firstProducerId: number; count: number }> {
    return this.write((image, nowMs) => {
      this.brokerAtEpoch(image, req.brokerId, req.brokerEpoch);
      const first = image.nextProducerId;
      const count = this.producerIdBlockSize;
      if (first + count > Number.MAX_SAFE_INTEGER) {
        throw new FlotillaError('LIMIT_EXCEEDED', `producer ids are exhausted (next ${first})`);
      }
      return {
        records: [
          {
            type: 'ProducerIdBlock',
            brokerId: req.brokerId,
            brokerEpoch: req.brokerEpoch,
            firstProducerId: first,
            count,
            reason: `producer ids ${first}..${first + count - 1} allocated to broker ${req.brokerId}`,
            timestampMs: nowMs,
          },
        ],
        done: () => ({ firstProducerId: first, count }),
      };
    });
  }

  // ======================= internals =======================

  private checkActive(): void {
    if (!this.active || !this.log.isLeader()) {
      throw new FlotillaError('NOT_CONTROLLER', 'this controller is not the active controller');
    }
  }

  /**
   * A new leader first applies everything committed before its term (its read index covers
   * its own no-op, Raft thesis §6.4): only then is its speculative image the log's true tail.
   */
  private async becomeReady(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      this.checkActive();
      if (this.caughtUpGeneration === this.generation) return;
      const generation = this.generation;
      if (this.catchingUp === null) {
        const catchingUp = (async () => {
          const index = await this.log.readIndex();
          await this.waitApplied(index);
          if (this.generation === generation) this.caughtUpGeneration = generation;
        })();
        this.catchingUp = catchingUp;
        catchingUp.then(
          () => undefined,
          () => undefined,
        ).finally(() => {
          if (this.catchingUp === catchingUp) this.catchingUp = null;
        });
      }
      await this.catchingUp;
    }
    this.checkActive();
    throw new FlotillaError('NOT_CONTROLLER', 'leadership changed while catching up with the metadata log');
  }

  /** Generate records against the speculative image, propose them, answer after apply. */
  private async write<T>(generate: (image: MetadataImage, nowMs: number) => Plan<T>): Promise<T> {
    await this.becomeReady();
    // An answer read from the speculative image (a refusal such as TOPIC_ALREADY_EXISTS, or a
    // plan with nothing to write) may rest on proposals not committed yet: it is given only
    // once they are — if one is dropped instead (a leadership change), the answer would be
    // about a state that never existed, so the request fails retriably (KRaft does the same:
    // a read completes when the offset it read is committed). Found by the chaos suite: a
    // client was told TOPIC_ALREADY_EXISTS for a topic whose only create was then lost.
    const readUpTo = this.pending.length > 0 ? this.pending[this.pending.length - 1]!.outcome : undefined;
    let plan: Plan<T>;
    try {
      plan = generate(this.spec(), this.nowMs());
    } catch (err) {
      if (readUpTo !== undefined) await this.confirmRead(readUpTo);
      throw err;
    }
    if (plan.records.length === 0) {
      if (readUpTo !== undefined) await this.confirmRead(readUpTo);
      return plan.done(null);
    }
    const { index } = await this.propose(plan.records);
    return plan.done(index);
  }

  /** Waits for the proposals an answer was read from; PROPOSAL_DROPPED when one was dropped. */
  private async confirmRead(outcome: Promise<boolean>): Promise<void> {
    if (!(await outcome)) {
      throw new FlotillaError('PROPOSAL_DROPPED', 'the answer rested on a metadata change that was dropped before it committed (leadership changed); retry');
    }
  }

  private async propose(records: MetadataRecord[]): Promise<{ index: number; term: number }> {
    if (this.pending.length >= this.maxPendingProposals) {
      throw new FlotillaError('PROPOSAL_DROPPED', `${this.pending.length} metadata proposals are in flight (the limit); retry with backoff`);
    }
    const bytes = encodeBatch(records);
    if (bytes.length > MAX_BATCH_BYTES) {
      throw new FlotillaError('LIMIT_EXCEEDED', `the change needs ${bytes.length} bytes of metadata records; one batch holds at most ${MAX_BATCH_BYTES}`);
    }
    // Replay what the log will carry (the decoded bytes), so that the speculative result is
    // the very computation apply() would do, not one on objects that merely encode alike.
    const entry: PendingProposal = { bytes, records: decodeBatch(bytes), term: this.lastAppliedTerm, replayed: null };
    const spec = this.spec();
    this.pending.push(entry);
    // The offset is a guess: right when every entry after the applied one is a pending batch
    // of ours (the steady state); when wrong, apply() sees it and replays instead.
    const offset = this.committed.offset + this.pending.length;
    this.speculative = this.replayPending(entry, spec, offset);
    const proposed = this.log.propose(bytes);
    entry.outcome = proposed.then(
      () => true,
      () => false,
    );
    try {
      return await proposed;
    } catch (err) {
      const i = this.pending.indexOf(entry);
      if (i >= 0) {
        this.pending.splice(i, 1);
        this.dropSpeculation();
      }
      throw err;
    }
  }

  /** The committed image plus every pending batch. */
  private spec(): MetadataImage {
    if (this.speculative === null) {
      let image = this.committed;
      this.pending.forEach((p, i) => {
        image = this.replayPending(p, image, this.committed.offset + 1 + i);
      });
      this.speculative = image;
    }
    return this.speculative;
  }

  /** Replays one pending batch onto `base` at `offset` and remembers it for apply(). */
  private replayPending(p: PendingProposal, base: MetadataImage, offset: number): MetadataImage {
    const delta = new MetadataDelta(base);
    delta.replayBatch(p.records, offset);
    const after = delta.apply();
    p.replayed = { base, offset, after, ignored: delta.ignoredRecords };
    return after;
  }

  /** Forgets the speculative image and every pending batch's replay (rebuilt by spec()). */
  private dropSpeculation(): void {
    this.speculative = null;
    for (const p of this.pending) p.replayed = null;
  }

  /**
   * A batch applied by replay (not taken from the speculation): if we proposed it, it leaves
   * `pending`; a leader's entries commit in the order proposed, so pending batches before it
   * were dropped and leave too. The speculative image is rebuilt from the new committed image
   * in every case: the common case (the oldest pending batch committed exactly as speculated)
   * never gets here, and anything else may have shifted offsets (a RegisterBroker's epoch is
   * its offset) or the base the remaining batches were replayed onto.
   */
  private retirePending(data: Uint8Array): void {
    const k = this.pending.findIndex((p) => bytesEqual(p.bytes, data));
    if (k >= 0) this.pending.splice(0, k + 1);
    this.dropSpeculation();
  }

  private async readImage(): Promise<MetadataImage> {
    this.checkActive();
    const index = await this.log.readIndex();
    await this.waitApplied(index);
    return this.committed;
  }

  private waitApplied(index: number): Promise<void> {
    if (this.committed.offset >= index) return Promise.resolve();
    if (this.readWaiters.length >= this.maxReadWaiters) {
      return Promise.reject(
        new FlotillaError('REQUEST_TIMED_OUT', `${this.readWaiters.length} reads are already waiting for the metadata log to apply; retry later`),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: ReadWaiter = {
        index,
        resolve,
        timer: setTimeout(() => {
          this.readWaiters = this.readWaiters.filter((w) => w !== waiter);
          reject(
            new FlotillaError(
              'REQUEST_TIMED_OUT',
              `metadata not applied up to offset ${index} within ${this.readWaitTimeoutMs} ms (applied: ${this.committed.offset})`,
            ),
          );
        }, this.readWaitTimeoutMs),
      };
      waiter.timer.unref?.();
      this.readWaiters.push(waiter);
    });
  }

  private wakeReaders(): void {
    if (this.readWaiters.length === 0) return;
    const offset = this.committed.offset;
    const still: ReadWaiter[] = [];
    for (const w of this.readWaiters) {
      if (w.index <= offset) {
        clearTimeout(w.timer);
        w.resolve();
      } else {
        still.push(w);
      }
    }
    this.readWaiters = still;
  }

  private brokerAtEpoch(image: MetadataImage, brokerId: number, brokerEpoch: number): BrokerRegistration {
    const broker = image.brokers.get(brokerId);
    if (broker === undefined) throw new FlotillaError('UNKNOWN_BROKER', `broker ${brokerId} is not registered`, { brokerId: Number(brokerId) });
    if (broker.epoch !== brokerEpoch) {
      throw new FlotillaError(
        'STALE_BROKER_EPOCH',
        `broker ${brokerId} epoch ${brokerEpoch} is not its current epoch ${broker.epoch}; register again`,
        { brokerId, brokerEpoch: broker.epoch },
      );
    }
    return broker;
  }

  private newTopicId(image: MetadataImage): string {
    for (let i = 0; i < 16; i++) {
      const id = this.random === undefined ? randomUUID() : uuidFrom(this.random);
      if (!image.topicsById.has(id)) return id;
    }
    assert.fail('could not draw an unused topic id in 16 attempts: is the random source constant?');
  }
}

// ======================= helpers =======================

export function describeTopic(image: MetadataImage, topic: TopicImage): TopicDescription {
  const minInsync = parseTopicConfig(topic.configs).minInsyncReplicas;
  const partitions = [...topic.partitions.values()]
    .sort((a, b) => a.partition - b.partition)
    .map((p): PartitionDescription => {
      const health = partitionHealth(p, image.brokers, minInsync);
      return {
        partition: p.partition,
        leader: p.leader,
        leaderEpoch: p.leaderEpoch,
        partitionEpoch: p.partitionEpoch,
        replicas: [...p.replicas],
        isr: [...p.isr],
        status: health.status,
        why: health.why,
      };
    });
  return { name: topic.name, topicId: topic.topicId, configs: Object.fromEntries(topic.configs), partitions };
}

function checkIsr(newIsr: unknown, state: PartitionState, image: MetadataImage, label: string): number[] {
  if (!Array.isArray(newIsr) || newIsr.length === 0) {
    throw new FlotillaError('INVALID_ISR', `the proposed ISR for ${label} is empty`);
  }
  const seen = new Set<number>();
  for (const b of newIsr) {
    if (!Number.isInteger(b)) throw new FlotillaError('INVALID_ISR', `the proposed ISR for ${label} holds ${String(b)}, not a broker id`);
    if (seen.has(b)) throw new FlotillaError('INVALID_ISR', `the proposed ISR for ${label} lists broker ${b} twice`);
    seen.add(b);
    if (!state.replicas.includes(b)) {
      throw new FlotillaError('INVALID_ISR', `broker ${b} is not a replica of ${label} (replicas [${state.replicas.join(',')}])`);
    }
    if (!state.isr.includes(b) && !image.isUnfenced(b)) {
      throw new FlotillaError('INVALID_ISR', `broker ${b} cannot join the ISR of ${label}: it is fenced or not registered`);
    }
  }
  if (!seen.has(state.leader)) {
    throw new FlotillaError('INVALID_ISR', `the proposed ISR [${newIsr.join(',')}] for ${label} does not contain its leader ${state.leader}`);
  }
  return [...newIsr] as number[];
}

function checkInt(value: unknown, field: string, min: number, max: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new FlotillaError('INVALID_REQUEST', `${field} ${String(value)} is invalid: it must be an integer from ${min} to ${max}`);
  }
}

function checkString(value: unknown, field: string, minLength: number, maxLength: number): void {
  if (typeof value !== 'string' || value.length < minLength || value.length > maxLength) {
    throw new FlotillaError('INVALID_REQUEST', `${field} is invalid: it must be a string of ${minLength} to ${maxLength} characters`);
  }
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A version-4 UUID from an injected random source (deterministic in tests). */
function uuidFrom(random: () => number): string {
  const bytes = Array.from({ length: 16 }, () => Math.floor(random() * 256) & 0xff);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = bytes.map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
