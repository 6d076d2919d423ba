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
 * cause appended to the reason of every change it triggers.
 */
export function changesForDepartingBrokers(
  image: MetadataImage,
  causes: ReadonlyMap<number, string>,
  nowMs: number,
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
    }
  }
  return records;
}

/**
 * When a broker becomes live again: elect leaders for its partitions that have none
 * (it may be their last ISR member, or an unclean candidate where the topic allows it).
 */
export function changesForReturningBroker(image: MetadataImage, brokerId: number, cause: string, nowMs: number): PartitionChangeRecord[] {
  const live = (id: number) => id === brokerId || image.isUnfenced(id);
  const records: PartitionChangeRecord[] = [];
  for (const topic of sortedTopics(image)) {
    const unclean = parseTopicConfig(topic.configs).uncleanLeaderElectionEnable;
    for (const state of sortedPartitions(topic)) {
      if (state.leader !== NO_LEADER || !state.replicas.includes(brokerId)) continue;
      const result = electLeader(state, live, { uncleanLeaderElection: unclean, label: partitionLabel(topic.name, state.partition) });
      if (result !== null) records.push(changeRecord(topic, state, result, cause, nowMs));
    }
  }
  return records;
}

/**
 * The periodic sweep: partitions without a leader that could have one, and partitions led
 * by another broker while their preferred replica is live and in the ISR (Kafka's
 * auto.leader.rebalance). At most `max` changes, so one tick stays a bounded batch.
 */
export function changesForLeaderBalance(image: MetadataImage, max: number, nowMs: number): PartitionChangeRecord[] {
  const live = (id: number) => image.isUnfenced(id);
  const records: PartitionChangeRecord[] = [];
  for (const topic of sortedTopics(image)) {
    const unclean = parseTopicConfig(topic.configs).uncleanLeaderElectionEnable;
    for (const state of sortedPartitions(topic)) {
      if (records.length >= max) return records;
      const label = partitionLabel(topic.name, state.partition);
      const result =
        state.leader === NO_LEADER
          ? electLeader(state, live, { uncleanLeaderElection: unclean, label })
          : preferredLeaderChange(state, live, label);
      if (result !== null && result.leader !== NO_LEADER) records.push(changeRecord(topic, state, result, '', nowMs));
    }
  }
  return records;
}
