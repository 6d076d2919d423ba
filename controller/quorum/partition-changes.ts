import { strict as assert } from 'node:assert';
import {
  electLeader,
  MetadataImage,
  NO_LEADER,
  parseTopicConfig,
  partitionLabel,
  PartitionChangeRecord,
  PartitionState,
  preferredLeaderChange,
  ElectionResult,
  TopicImage,
} from '../../shared/metadata';

// Record generation for partition leadership: pure functions from an image to
// PartitionChange records. They read the image and never change it (the QuorumController
// proposes what they return; state changes when the records are replayed).

function changeRecord(topic: TopicImage, state: PartitionState, result: ElectionResult, cause: string, nowMs: number): PartitionChangeRecord {
  const isrChanged = result.isr.length !== state.isr.length || result.isr.some((b, i) => b !== state.isr[i]);
  return {
    type: 'PartitionChange',
    topicId: topic.topicId,
    partition: state.partition,
    ...(result.leader !== state.leader ? { leader: result.leader } : {}),
    ...(isrChanged ? { isr: result.isr } : {}),
    reason: cause === '' ? result.reason : `${result.reason}; ${cause}`,
    timestampMs: nowMs,
  };
}

function sortedTopics(image: MetadataImage): TopicImage[] {
  return [...image.topics.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function sortedPartitions(topic: TopicImage): PartitionState[] {
  return [...topic.partitions.values()].sort((a, b) => a.partition - b.partition);
}

/**
 * When brokers stop being live (fenced, or replaced by a new incarnation): move leadership
 * of their partitions to another ISR member and take them out of ISRs (KRaft's
 * ReplicationControlManager.handleBrokerFenced). `causes` maps each departing broker to the
 * cause appended to the reason of every change it triggers. At most `maxChanges` records
 * (the first ones in topic-name and partition order): the caller writes the rest later.
 */
export function changesForDepartingBrokers(
  image: MetadataImage,
  causes: ReadonlyMap<number, string>,
  nowMs: number,
  maxChanges = Number.POSITIVE_INFINITY,
): PartitionChangeRecord[] {
  const live = (id: number) => image.isUnfenced(id) && !causes.has(id);
  const records: PartitionChangeRecord[] = [];
  for (const topic of sortedTopics(image)) {
    const unclean = parseTopicConfig(topic.configs).uncleanLeaderElectionEnable;
    for (const state of sortedPartitions(topic)) {
      const involved = [...new Set([state.leader, ...state.isr])].filter((b) => causes.has(b)).sort((a, b) => a - b);
      if (involved.length === 0) continue;
      const result = electLeader(state, live, { uncleanLeaderElection: unclean, label: partitionLabel(topic.name, state.partition) });
      if (result === null) continue;
      records.push(changeRecord(topic, state, result, involved.map((b) => causes.get(b)).join('; '), nowMs));
      if (records.length >= maxChanges) return records;
    }
  }
  return records;
}

/**
 * The partitions the image indexes as not led by their preferred replica (leaderless ones
 * included), by topic name and partition: the only ones a returning broker or
 * preferred-leader election can give a (new) leader. O(those), not O(all partitions).
 */
function sortedOffPreferred(image: MetadataImage): { topic: TopicImage; state: PartitionState }[] {
  const candidates: { topic: TopicImage; state: PartitionState }[] = [];
  for (const { topicId, state } of image.partitionsOffPreferredLeader.values()) {
    const topic = image.topicsById.get(topicId);
    assert(topic !== undefined && topic.partitions.get(state.partition) === state, `off-preferred index out of date at ${topicId}:${state.partition}`);
    candidates.push({ topic, state });
  }
  return candidates.sort((a, b) => (a.topic.name < b.topic.name ? -1 : a.topic.name > b.topic.name ? 1 : a.state.partition - b.state.partition));
}

/**
 * When a broker becomes live again: elect leaders for its partitions that have none
 * (it may be their last ISR member, or an unclean candidate where the topic allows it).
 */
export function changesForReturningBroker(image: MetadataImage, brokerId: number, cause: string, nowMs: number): PartitionChangeRecord[] {
  const live = (id: number) => id === brokerId || image.isUnfenced(id);
  const records: PartitionChangeRecord[] = [];
  for (const { topic, state } of sortedOffPreferred(image)) {
    if (state.leader !== NO_LEADER || !state.replicas.includes(brokerId)) continue;
    const unclean = parseTopicConfig(topic.configs).uncleanLeaderElectionEnable;
    const result = electLeader(state, live, { uncleanLeaderElection: unclean, label: partitionLabel(topic.name, state.partition) });
    if (result !== null) records.push(changeRecord(topic, state, result, cause, nowMs));
  }
  return records;
}

/**
 * The periodic sweep: partitions without a leader that could have one, and partitions led
 * by another broker while their preferred replica is live and in the ISR (Kafka's
 * auto.leader.rebalance). At most `max` changes, so one tick stays a bounded batch.
 * A partition led by its preferred replica gets null from both elections, so only the
 * indexed ones are looked at: nothing at all in a balanced cluster.
 */
export function changesForLeaderBalance(image: MetadataImage, max: number, nowMs: number): PartitionChangeRecord[] {
  const live = (id: number) => image.isUnfenced(id);
  const records: PartitionChangeRecord[] = [];
  for (const { topic, state } of sortedOffPreferred(image)) {
    if (records.length >= max) break;
    const label = partitionLabel(topic.name, state.partition);
    const result =
      state.leader === NO_LEADER
        ? electLeader(state, live, { uncleanLeaderElection: parseTopicConfig(topic.configs).uncleanLeaderElectionEnable, label })
        : preferredLeaderChange(state, live, label);
    if (result !== null && result.leader !== NO_LEADER) records.push(changeRecord(topic, state, result, '', nowMs));
  }
  return records;
}
