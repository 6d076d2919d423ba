import type { LocalPartitionChange, LocalPartitionRemoval, LocalReplicaChanges, MetadataImage } from '../shared/metadata';

// What one broker must do when its image is replaced wholesale by a snapshot rather than
// advanced by a delta (KRaft's TopicsImage-vs-TopicsImage comparison on snapshot load).
// MetadataDelta.localChanges() covers the record-by-record case; this covers the case where
// only the before and after images are known. Pure.

/**
 * The partitions whose state differs between `before` and `after`, from `brokerId`'s point
 * of view: the ones it now leads or follows (new or changed), and the ones it hosted and no
 * longer does (topic gone, re-created under a new id, or the broker left the replicas).
 */
export function localChangesBetween(before: MetadataImage, after: MetadataImage, brokerId: number): LocalReplicaChanges {
  const leaders: LocalPartitionChange[] = [];
  const followers: LocalPartitionChange[] = [];
  const deletes: LocalPartitionRemoval[] = [];
  for (const [topicId, topic] of after.topicsById) {
    const old = before.topicsById.get(topicId);
    for (const [partition, state] of topic.partitions) {
      if (!state.replicas.includes(brokerId)) continue;
      const was = old?.partitions.get(partition);
      if (was !== undefined && samePartitionState(was, state)) continue;
      (state.leader === brokerId ? leaders : followers).push({ topicId, topicName: topic.name, partition, state });
    }
  }
  for (const [topicId, old] of before.topicsById) {
    const now = after.topicsById.get(topicId);
    for (const [partition, state] of old.partitions) {
      if (!state.replicas.includes(brokerId)) continue;
      if (now?.partitions.get(partition)?.replicas.includes(brokerId)) continue;
      deletes.push({ topicId, topicName: old.name, partition });
    }
  }
  return { leaders: leaders.sort(byLabel), followers: followers.sort(byLabel), deletes: deletes.sort(byLabel) };
}

/** True when nothing a replica acts on changed (partition epoch moves with every change). */
function samePartitionState(a: LocalPartitionChange['state'], b: LocalPartitionChange['state']): boolean {
  return (
    a.leader === b.leader &&
    a.leaderEpoch === b.leaderEpoch &&
    a.partitionEpoch === b.partitionEpoch &&
    sameIds(a.replicas, b.replicas) &&
    sameIds(a.isr, b.isr)
  );
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function byLabel(a: { topicName: string; partition: number }, b: { topicName: string; partition: number }): number {
  return a.topicName < b.topicName ? -1 : a.topicName > b.topicName ? 1 : a.partition - b.partition;
}

/** True when there is nothing to do. */
export function isEmptyChange(c: LocalReplicaChanges): boolean {
  return c.leaders.length === 0 && c.followers.length === 0 && c.deletes.length === 0;
}
