import { strict as assert } from 'node:assert';
import {
  BrokerRegistration,
  configResourceKey,
  EVENTS_CAPACITY,
  MetadataEvent,
  MetadataImage,
  partitionKey,
  PartitionState,
  TopicImage,
} from './image';
import { preferredLeader } from './partition-election';
import { PersistentMap } from './persistent-map';
import type { MetadataRecord, PartitionChangeRecord } from './records';
import { topicCollisionKey } from './validation';

// Replays records over a base image and builds the next image (Kafka's MetadataDelta,
// metadata/src/main/java/org/apache/kafka/image/MetadataDelta.java). The only way cluster
// state changes, on controllers and brokers alike.
//
// Why replay never throws on a well-formed record: a committed record is on every replica;
// throwing would stop every controller and every broker on the same entry, on every restart.
// The controller validates each request against its speculative image before proposing,
// so a record that no longer fits (its topic is gone, its broker epoch was replaced)
// can only come from a proposal that raced with one that was dropped or timed out. Such a
// record is skipped, identically on every replica, and counted in `ignoredRecords`.

/** A partition this broker must act on, as of the delta's end state. */
export interface LocalPartitionChange {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
  readonly state: PartitionState;
}

/** A partition this broker no longer hosts (topic deleted, or the broker left the replicas). */
export interface LocalPartitionRemoval {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
}

/** KRaft's LocalReplicaChanges: what one broker must do after this delta. */
export interface LocalReplicaChanges {
  /** Changed partitions this broker now leads. */
  readonly leaders: readonly LocalPartitionChange[];
  /** Changed partitions this broker now follows. */
  readonly followers: readonly LocalPartitionChange[];
  /** Partitions this broker hosted and must now delete. */
  readonly deletes: readonly LocalPartitionRemoval[];
}

/**
 * A topic touched by the delta: the base's partitions plus the ones this delta set, merged
 * into a new persistent map by apply() (sharing the untouched ones); its configs are the
 * base's until the first Config record, then a private copy (a topic has a handful).
 */
interface WorkingTopic {
  readonly topicId: string;
  readonly name: string;
  /** Created by a Topic record of this delta (not derived from a base topic). */
  readonly created: boolean;
  readonly basePartitions: PersistentMap<number, PartitionState>;
  /** Partitions set by this delta (for localChanges and the image's indexes too). */
  readonly changed: Map<number, PartitionState>;
  readonly baseConfigs: ReadonlyMap<string, string>;
  /** A private copy of the configs once a Config record wrote one; null until then. */
  configs: Map<string, string> | null;
}

/** The configs of a topic created without any (never written: Config records copy first). */
const NO_CONFIGS: ReadonlyMap<string, string> = new Map();

function partitionOf(t: WorkingTopic, partition: number): PartitionState | undefined {
  return t.changed.get(partition) ?? t.basePartitions.get(partition);
}

export class MetadataDelta {
  /** Records skipped because they no longer applied (see the header of this file). */
  ignoredRecords = 0;

  private offset: number;
  private brokers: PersistentMap<number, BrokerRegistration>;
  /** topicId -> working copy, or null when removed by this delta. */
  private readonly topics = new Map<string, WorkingTopic | null>();
  /** name -> topicId, or null when the name was freed by this delta. */
  private readonly names = new Map<string, string | null>();
  private configs: PersistentMap<string, ReadonlyMap<string, string>>;
  private nextProducerId: number;
  private readonly newEvents: MetadataEvent[] = [];

  constructor(readonly base: MetadataImage) {
    this.offset = base.offset;
    this.brokers = base.brokers;
    this.configs = base.configs;
    this.nextProducerId = base.nextProducerId;
  }

  /** Replay one record found at `offset` of the metadata log. Offsets never go backwards. */
  replay(record: MetadataRecord, offset: number): void {
    assert(Number.isSafeInteger(offset) && offset >= this.offset, `replay at offset ${offset} after ${this.offset}`);
    this.offset = offset;
    const kind = this.replayRecord(record, offset);
    if (kind === null) {
      this.ignoredRecords++;
      return;
    }
    if (record.type === 'Event') {
      this.pushEvent({ offset: record.offset, timestampMs: record.timestampMs, kind: record.kind, text: record.text });
    } else if (kind !== '' && record.type !== 'Partition' && record.reason !== '') {
      this.pushEvent({ offset, timestampMs: record.timestampMs, kind, text: record.reason });
    }
  }

  /**
   * Ids of the topics this delta created, changed or removed (publishers that act per topic
   * look at these instead of comparing every topic of two images).
   */
  touchedTopicIds(): string[] {
    return [...this.topics.keys()];
  }

  /** Replay every record of one log entry (one batch) at its offset. */
  replayBatch(records: readonly MetadataRecord[], offset: number): void {
    for (const r of records) this.replay(r, offset);
  }

  /**
   * The next image. The delta may be applied more than once; each call builds a fresh image.
   * Costs O(what the delta touched x log n): untouched topics, partitions and brokers are the
   * very objects of the base image, reached through maps that share the base's nodes.
   */
  apply(): MetadataImage {
    const base = this.base;
    let topics = base.topics;
    let topicsById = base.topicsById;
    let collisionKeys = base.topicNamesByCollisionKey;
    let totalPartitions = base.totalPartitions;
    let offPreferred = base.partitionsOffPreferredLeader;
    // Two passes: a topic deleted and another created under the same name in one delta.
    for (const [id, t] of this.topics) {
      const old = base.topicsById.get(id);
      if (old === undefined || (t !== null && !t.created)) continue;
      // Gone, or replaced by a topic created under the same id: forget all of the old one.
      topics = topics.delete(old.name);
      topicsById = topicsById.delete(id);
      collisionKeys = withoutName(collisionKeys, old.name);
      totalPartitions -= old.partitions.size;
      for (const p of old.partitions.keys()) offPreferred = offPreferred.delete(partitionKey(id, p));
    }
    const changedTopics = new Map<string, TopicImage>();
    for (const [id, t] of this.topics) {
      // A topic looked up but not changed (a record that then did not apply) stays as it was.
      if (t === null || (!t.created && t.changed.size === 0 && t.configs === null)) continue;
      const image: TopicImage = Object.freeze({
        topicId: t.topicId,
        name: t.name,
        partitions: t.basePartitions.setAll(t.changed),
        configs: t.configs === null ? t.baseConfigs : new Map(t.configs),
      });
      changedTopics.set(id, image);
      totalPartitions += image.partitions.size;
      if (t.created) {
        collisionKeys = withName(collisionKeys, t.name);
      } else {
        totalPartitions -= t.basePartitions.size;
      }
      for (const [p, state] of t.changed) {
        const onPreferred = state.leader === preferredLeader(state);
        // A created topic has no entries yet (pass one removed any under its id).
        if (onPreferred && t.created) continue;
        const key = partitionKey(id, p);
        offPreferred = onPreferred ? offPreferred.delete(key) : offPreferred.set(key, Object.freeze({ topicId: id, state }));
      }
    }
    if (changedTopics.size > 0) {
      topicsById = topicsById.setAll(changedTopics);
      topics = topics.setAll(new Map([...changedTopics.values()].map((t) => [t.name, t])));
    }
    let events = base.events;
    if (this.newEvents.length > 0) {
      const all = base.events.concat(this.newEvents);
      events = Object.freeze(all.length > EVENTS_CAPACITY ? all.slice(all.length - EVENTS_CAPACITY) : all);
    }
    return new MetadataImage({
      offset: this.offset,
      brokers: this.brokers,
      topics,
      topicsById,
      nextProducerId: this.nextProducerId,
      configs: this.configs,
      events,
      totalPartitions,
      topicNamesByCollisionKey: collisionKeys,
      partitionsOffPreferredLeader: offPreferred,
    });
  }

  /**
   * What `brokerId` must do after this delta (KRaft's TopicsDelta.localChanges): partitions
   * it now leads or follows whose state changed, and partitions it must delete.
   */
  localChanges(brokerId: number): LocalReplicaChanges {
    const leaders: LocalPartitionChange[] = [];
    const followers: LocalPartitionChange[] = [];
    const deletes: LocalPartitionRemoval[] = [];
    for (const [topicId, working] of this.topics) {
      const before = this.base.topicsById.get(topicId);
      if (working === null) {
        if (before === undefined) continue;
        for (const p of before.partitions.values()) {
          if (p.replicas.includes(brokerId)) deletes.push({ topicId, topicName: before.name, partition: p.partition });
        }
        continue;
      }
      for (const [partition, state] of working.changed) {
        const change = { topicId, topicName: working.name, partition, state };
        if (state.replicas.includes(brokerId)) {
          (state.leader === brokerId ? leaders : followers).push(change);
        } else if (before?.partitions.get(partition)?.replicas.includes(brokerId)) {
          deletes.push({ topicId, topicName: working.name, partition });
        }
      }
    }
    const order = (a: { topicName: string; partition: number }, b: { topicName: string; partition: number }) =>
      a.topicName < b.topicName ? -1 : a.topicName > b.topicName ? 1 : a.partition - b.partition;
    return { leaders: leaders.sort(order), followers: followers.sort(order), deletes: deletes.sort(order) };
  }

  // ---- replay of each record type ----

  /** Returns the event kind ('' for none), or null when the record no longer applies. */
  private replayRecord(record: MetadataRecord, offset: number): string | null {
    switch (record.type) {
      case 'RegisterBroker': {
        this.brokers = this.brokers.set(
          record.brokerId,
          Object.freeze({
            id: record.brokerId,
            incarnationId: record.incarnationId,
            epoch: record.brokerEpoch > 0 ? record.brokerEpoch : offset,
            host: record.host,
            port: record.port,
            rack: record.rack,
            fenced: record.fenced,
          }),
        );
        return 'broker-registered';
      }
      case 'UnregisterBroker': {
        if (!this.brokerAtEpoch(record.brokerId, record.brokerEpoch)) return null;
        this.brokers = this.brokers.delete(record.brokerId);
        return 'broker-unregistered';
      }
      case 'BrokerFenced':
      case 'BrokerUnfenced': {
        const b = this.brokerAtEpoch(record.brokerId, record.brokerEpoch);
        if (b === undefined) return null;
        const fenced = record.type === 'BrokerFenced';
        if (b.fenced !== fenced) this.brokers = this.brokers.set(b.id, Object.freeze({ ...b, fenced }));
        return fenced ? 'broker-fenced' : 'broker-unfenced';
      }
      case 'Topic': {
        if (this.topicIdByName(record.name) !== undefined || this.topic(record.topicId) !== undefined) return null;
        this.topics.set(record.topicId, {
          topicId: record.topicId,
          name: record.name,
          created: true,
          basePartitions: PersistentMap.empty(),
          changed: new Map(),
          baseConfigs: NO_CONFIGS,
          configs: null,
        });
        this.names.set(record.name, record.topicId);
        return 'topic-created';
      }
      case 'Partition': {
        const t = this.workingTopic(record.topicId);
        if (t === undefined) return null;
        t.changed.set(
          record.partition,
          freezePartition({
            partition: record.partition,
            replicas: record.replicas,
            isr: record.isr,
            leader: record.leader,
            leaderEpoch: record.leaderEpoch,
            partitionEpoch: record.partitionEpoch,
          }),
        );
        return '';
      }
      case 'PartitionChange': {
        const t = this.workingTopic(record.topicId);
        const current = t === undefined ? undefined : partitionOf(t, record.partition);
        if (t === undefined || current === undefined) return null;
        const next = applyPartitionChange(current, record);
        t.changed.set(record.partition, next);
        if (next.leader !== current.leader) return next.leader < 0 ? 'partition-offline' : 'leader-elected';
        return record.replicas !== undefined ? 'replicas-changed' : 'isr-changed';
      }
      case 'RemoveTopic': {
        const t = this.topic(record.topicId);
        if (t === undefined) return null;
        this.topics.set(record.topicId, null);
        this.names.set(t.name, null);
        return 'topic-deleted';
      }
      case 'Config': {
        if (record.resourceType === 'topic') {
          const id = this.topicIdByName(record.resourceName);
          const t = id === undefined ? undefined : this.workingTopic(id);
          if (t === undefined) return null;
          t.configs ??= new Map(t.baseConfigs);
          setOrDelete(t.configs, record.key, record.value);
        } else {
          const key = configResourceKey(record.resourceType, record.resourceName);
          const one = new Map(this.configs.get(key) ?? []);
          setOrDelete(one, record.key, record.value);
          this.configs = one.size === 0 ? this.configs.delete(key) : this.configs.set(key, one);
        }
        return 'config-changed';
      }
      case 'ProducerIdBlock': {
        this.nextProducerId = Math.max(this.nextProducerId, record.firstProducerId + record.count);
        return 'producer-ids-allocated';
      }
      case 'Event':
        return '';
    }
  }

  private pushEvent(event: MetadataEvent): void {
    this.newEvents.push(Object.freeze(event));
    // Keep the working list bounded too: a delta can replay a whole snapshot.
    if (this.newEvents.length > 2 * EVENTS_CAPACITY) this.newEvents.splice(0, this.newEvents.length - EVENTS_CAPACITY);
  }

  private brokerAtEpoch(brokerId: number, epoch: number): BrokerRegistration | undefined {
    const b = this.brokers.get(brokerId);
    return b !== undefined && b.epoch === epoch ? b : undefined;
  }

  private topicIdByName(name: string): string | undefined {
    if (this.names.has(name)) return this.names.get(name) ?? undefined;
    return this.base.topics.get(name)?.topicId;
  }

  private topic(topicId: string): { name: string } | undefined {
    if (this.topics.has(topicId)) return this.topics.get(topicId) ?? undefined;
    return this.base.topicsById.get(topicId);
  }

  /** A working copy of a live topic (it shares the base's maps until written); undefined when it does not exist. */
  private workingTopic(topicId: string): WorkingTopic | undefined {
    if (this.topics.has(topicId)) return this.topics.get(topicId) ?? undefined;
    const t = this.base.topicsById.get(topicId);
    if (t === undefined) return undefined;
    const working: WorkingTopic = {
      topicId,
      name: t.name,
      created: false,
      basePartitions: t.partitions,
      changed: new Map(),
      baseConfigs: t.configs,
      configs: null,
    };
    this.topics.set(topicId, working);
    return working;
  }
}

/**
 * The partition after a PartitionChange: the partition epoch always moves, the leader epoch
 * only when the leader changes (KIP-841's leader epoch fences the previous leader).
 */
export function applyPartitionChange(current: PartitionState, change: Omit<PartitionChangeRecord, 'type' | 'topicId' | 'partition' | 'reason' | 'timestampMs'>): PartitionState {
  const leader = change.leader ?? current.leader;
  return freezePartition({
    partition: current.partition,
    replicas: change.replicas ?? current.replicas,
    isr: change.isr ?? current.isr,
    leader,
    leaderEpoch: leader !== current.leader ? current.leaderEpoch + 1 : current.leaderEpoch,
    partitionEpoch: current.partitionEpoch + 1,
  });
}

function freezePartition(p: PartitionState): PartitionState {
  return Object.freeze({ ...p, replicas: Object.freeze([...p.replicas]), isr: Object.freeze([...p.isr]) });
}

function setOrDelete(map: Map<string, string>, key: string, value: string | null): void {
  if (value === null) map.delete(key);
  else map.set(key, value);
}

/** The collision-key index with `name` added (names under one key stay sorted). */
function withName(index: PersistentMap<string, readonly string[]>, name: string): PersistentMap<string, readonly string[]> {
  const key = topicCollisionKey(name);
  const names = index.get(key) ?? [];
  if (names.includes(name)) return index;
  return index.set(key, Object.freeze([...names, name].sort()));
}

function withoutName(index: PersistentMap<string, readonly string[]>, name: string): PersistentMap<string, readonly string[]> {
  const key = topicCollisionKey(name);
  const names = index.get(key);
  if (names === undefined || !names.includes(name)) return index;
  const rest = names.filter((n) => n !== name);
  return rest.length === 0 ? index.delete(key) : index.set(key, Object.freeze(rest));
}

/** The image after replaying one batch of records at `offset` over `image`. */
export function replayOnto(image: MetadataImage, records: readonly MetadataRecord[], offset: number): MetadataImage {
  const delta = new MetadataDelta(image);
  delta.replayBatch(records, offset);
  return delta.apply();
}
