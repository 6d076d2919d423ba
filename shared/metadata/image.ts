import { PersistentMap } from './persistent-map';
import type { ConfigResourceType } from './records';
import { topicCollisionKey } from './validation';

// The cluster metadata as of one offset of the metadata log (Kafka's MetadataImage,
// metadata/src/main/java/org/apache/kafka/image/MetadataImage.java). Immutable: a
// MetadataDelta replays records over an image and apply() builds the next one, sharing every
// map and object that did not change. Nobody mutates an image; the Readonly types say so
// and the leaf objects are frozen.
//
// The maps are PersistentMaps (persistent-map.ts): read them as any ReadonlyMap; the next
// image shares all but O(log n) of their nodes with this one, so a write costs what it
// changes, not the size of the cluster. The image also keeps, up to date on every apply, what
// would otherwise need a scan on every request: the partition total, topic names by collision
// key, and the partitions not led by their preferred replica.

/** How many events the image keeps (oldest dropped first). */
export const EVENTS_CAPACITY = 1000;

export interface BrokerRegistration {
  readonly id: number;
  readonly incarnationId: string;
  /** The broker epoch: the offset of the RegisterBroker record (as in KRaft). */
  readonly epoch: number;
  readonly host: string;
  readonly port: number;
  readonly rack: string | null;
  /** A fenced broker leads nothing and is not counted in an ISR it could join. */
  readonly fenced: boolean;
}

export interface PartitionState {
  readonly partition: number;
  /** Assigned replicas, preferred leader first. */
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
  /** Broker id of the leader, NO_LEADER (-1) when offline. */
  readonly leader: number;
  /** Bumped on every leader change. */
  readonly leaderEpoch: number;
  /** Bumped on every change of the partition. */
  readonly partitionEpoch: number;
}

export interface TopicImage {
  readonly topicId: string;
  readonly name: string;
  readonly partitions: PersistentMap<number, PartitionState>;
  /** Topic-level config overrides (key -> value); defaults are not stored. */
  readonly configs: ReadonlyMap<string, string>;
}

/** One line of the cluster event log, derived from a replayed record that had a reason. */
export interface MetadataEvent {
  /** Offset of the record it was derived from. */
  readonly offset: number;
  readonly timestampMs: number;
  /** e.g. "broker-fenced", "leader-elected", "topic-created". */
  readonly kind: string;
  readonly text: string;
}

/** Key of a broker or cluster config resource in MetadataImage.configs. */
export function configResourceKey(type: Exclude<ConfigResourceType, 'topic'>, name: string): string {
  return `${type}:${name}`;
}

/** A partition whose leader is not its preferred replica, or that has no leader. */
export interface OffPreferredPartition {
  readonly topicId: string;
  readonly state: PartitionState;
}

/** Key of a partition in MetadataImage.partitionsOffPreferredLeader. */
export function partitionKey(topicId: string, partition: number): string {
  return `${topicId}:${partition}`;
}

export interface MetadataImageFields {
  readonly offset: number;
  readonly brokers: PersistentMap<number, BrokerRegistration>;
  readonly topics: PersistentMap<string, TopicImage>;
  readonly topicsById: PersistentMap<string, TopicImage>;
  readonly nextProducerId: number;
  readonly configs: PersistentMap<string, ReadonlyMap<string, string>>;
  readonly events: readonly MetadataEvent[];
  readonly totalPartitions: number;
  readonly topicNamesByCollisionKey: PersistentMap<string, readonly string[]>;
  readonly partitionsOffPreferredLeader: PersistentMap<string, OffPreferredPartition>;
}

export class MetadataImage implements MetadataImageFields {
  static readonly EMPTY = new MetadataImage({
    offset: 0,
    brokers: PersistentMap.empty(),
    topics: PersistentMap.empty(),
    topicsById: PersistentMap.empty(),
    nextProducerId: 0,
    configs: PersistentMap.empty(),
    events: Object.freeze([]),
    totalPartitions: 0,
    topicNamesByCollisionKey: PersistentMap.empty(),
    partitionsOffPreferredLeader: PersistentMap.empty(),
  });

  /** The last metadata offset (Raft index) applied into this image. */
  readonly offset: number;
  readonly brokers: PersistentMap<number, BrokerRegistration>;
  /** By topic name. */
  readonly topics: PersistentMap<string, TopicImage>;
  /** The same TopicImage objects, by topic id. */
  readonly topicsById: PersistentMap<string, TopicImage>;
  /** The first producer id not yet handed out. */
  readonly nextProducerId: number;
  /** Broker and cluster config overrides, by configResourceKey(); topic configs live in TopicImage. */
  readonly configs: PersistentMap<string, ReadonlyMap<string, string>>;
  /** The most recent EVENTS_CAPACITY events, oldest first. */
  readonly events: readonly MetadataEvent[];
  /** Partitions over all topics (kept by MetadataDelta.apply; see partitionCount()). */
  readonly totalPartitions: number;
  /**
   * topicCollisionKey(name) -> the names of the topics with that key, sorted: normally one,
   * since CreateTopic refuses a colliding name (see collidingTopic()), but replay does not
   * enforce it, so the index holds whatever the log created (Kafka's topicsWithCollisionChars).
   */
  readonly topicNamesByCollisionKey: PersistentMap<string, readonly string[]>;
  /**
   * partitionKey(topicId, partition) -> every partition whose leader is not its preferred
   * replica (leaderless ones included): the only partitions preferred-leader election can
   * change (Kafka's ReplicationControlManager.imbalancedPartitions). Its value changes with
   * every change of such a partition, so an identical map means nothing there changed.
   */
  readonly partitionsOffPreferredLeader: PersistentMap<string, OffPreferredPartition>;

  constructor(fields: MetadataImageFields) {
    this.offset = fields.offset;
    this.brokers = fields.brokers;
    this.topics = fields.topics;
    this.topicsById = fields.topicsById;
    this.nextProducerId = fields.nextProducerId;
    this.configs = fields.configs;
    this.events = fields.events;
    this.totalPartitions = fields.totalPartitions;
    this.topicNamesByCollisionKey = fields.topicNamesByCollisionKey;
    this.partitionsOffPreferredLeader = fields.partitionsOffPreferredLeader;
    Object.freeze(this);
  }

  /** The same image at a later offset (a log entry that carries no records, e.g. a leader no-op). */
  withOffset(offset: number): MetadataImage {
    if (offset === this.offset) return this;
    return new MetadataImage({ ...this.fields(), offset });
  }

  fields(): MetadataImageFields {
    return {
      offset: this.offset,
      brokers: this.brokers,
      topics: this.topics,
      topicsById: this.topicsById,
      nextProducerId: this.nextProducerId,
      configs: this.configs,
      events: this.events,
      totalPartitions: this.totalPartitions,
      topicNamesByCollisionKey: this.topicNamesByCollisionKey,
      partitionsOffPreferredLeader: this.partitionsOffPreferredLeader,
    };
  }

  partition(topic: string, partition: number): PartitionState | undefined {
    return this.topics.get(topic)?.partitions.get(partition);
  }

  /** True when the broker is registered and not fenced. */
  isUnfenced(brokerId: number): boolean {
    const b = this.brokers.get(brokerId);
    return b !== undefined && !b.fenced;
  }

  /** Ids of registered, unfenced brokers, ascending. */
  unfencedBrokerIds(): number[] {
    const ids: number[] = [];
    for (const b of this.brokers.values()) if (!b.fenced) ids.push(b.id);
    return ids.sort((a, b) => a - b);
  }

  /** Total number of partitions over all topics. O(1): kept up to date by every apply. */
  partitionCount(): number {
    return this.totalPartitions;
  }

  /**
   * An existing topic other than `name` whose name differs from it only by '.' vs '_' (the
   * two are the same in metric names, so Kafka refuses the second); undefined when none.
   */
  collidingTopic(name: string): string | undefined {
    return this.topicNamesByCollisionKey.get(topicCollisionKey(name))?.find((other) => other !== name);
  }
}

/** "orders-3": how Kafka names a topic partition in logs and messages. */
export function partitionLabel(topic: string, partition: number): string {
  return `${topic}-${partition}`;
}
