import type { ConfigResourceType } from './records';

// The cluster metadata as of one offset of the metadata log (Kafka's MetadataImage,
// metadata/src/main/java/org/apache/kafka/image/MetadataImage.java). Immutable: a
// MetadataDelta replays records over an image and apply() builds the next one, sharing every
// map and object that did not change. Nobody mutates an image; the Readonly types say so
// and the leaf objects are frozen.

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
  readonly partitions: ReadonlyMap<number, PartitionState>;
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

export interface MetadataImageFields {
  readonly offset: number;
  readonly brokers: ReadonlyMap<number, BrokerRegistration>;
  readonly topics: ReadonlyMap<string, TopicImage>;
  readonly topicsById: ReadonlyMap<string, TopicImage>;
  readonly nextProducerId: number;
  readonly configs: ReadonlyMap<string, ReadonlyMap<string, string>>;
  readonly events: readonly MetadataEvent[];
}

export class MetadataImage implements MetadataImageFields {
  static readonly EMPTY = new MetadataImage({
    offset: 0,
    brokers: new Map(),
    topics: new Map(),
    topicsById: new Map(),
    nextProducerId: 0,
    configs: new Map(),
    events: Object.freeze([]),
  });

  /** The last metadata offset (Raft index) applied into this image. */
  readonly offset: number;
  readonly brokers: ReadonlyMap<number, BrokerRegistration>;
  /** By topic name. */
  readonly topics: ReadonlyMap<string, TopicImage>;
  /** The same TopicImage objects, by topic id. */
  readonly topicsById: ReadonlyMap<string, TopicImage>;
  /** The first producer id not yet handed out. */
  readonly nextProducerId: number;
  /** Broker and cluster config overrides, by configResourceKey(); topic configs live in TopicImage. */
  readonly configs: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /** The most recent EVENTS_CAPACITY events, oldest first. */
  readonly events: readonly MetadataEvent[];

  constructor(fields: MetadataImageFields) {
    this.offset = fields.offset;
    this.brokers = fields.brokers;
    this.topics = fields.topics;
    this.topicsById = fields.topicsById;
    this.nextProducerId = fields.nextProducerId;
    this.configs = fields.configs;
    this.events = fields.events;
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

  /** Total number of partitions over all topics. */
  partitionCount(): number {
    let n = 0;
    for (const t of this.topics.values()) n += t.partitions.size;
    return n;
  }
}

/** "orders-3": how Kafka names a topic partition in logs and messages. */
export function partitionLabel(topic: string, partition: number): string {
  return `${topic}-${partition}`;
}
