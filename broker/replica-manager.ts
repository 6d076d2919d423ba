import type { Logger } from '../shared/log';
import { partitionLabel } from '../shared/metadata';
import type { LocalReplicaChanges } from '../shared/metadata';
import type { MetadataUpdate } from './metadata-follower';

// The replicas this broker hosts (Kafka's ReplicaManager.applyDelta). This step only keeps
// the table of hosted partitions and logs what it would do; partition logs, the follower
// fetchers and the ISR logic arrive with the next step of issue 3 and slot in here:
//   leaders   -> open the partition log, stop fetching, become leader at leaderEpoch
//   followers -> open the log, truncate to the leader epoch, fetch from the new leader
//   deletes   -> stop fetching, close and delete the log
// Everything arrives through onMetadataUpdate, in metadata-offset order, on one thread.

export type ReplicaRole = 'leader' | 'follower';

/** A partition this broker hosts, as of the last metadata applied. */
export interface HostedReplica {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
  readonly role: ReplicaRole;
  /** The leader's broker id (this broker when role is 'leader'); -1 when none. */
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
}

export interface ReplicaManagerOptions {
  readonly brokerId: number;
  readonly logger: Logger;
}

export class ReplicaManager {
  /** "topicId:partition" -> hosted replica. Bounded by the image's partition cap. */
  private readonly hosted = new Map<string, HostedReplica>();

  constructor(private readonly o: ReplicaManagerOptions) {}

  /** A MetadataPublisher: acts on what changed for this broker. */
  readonly onMetadataUpdate = (update: MetadataUpdate): void => {
    this.applyLocalChanges(update.localChanges, update.image.offset);
  };

  /** The partitions hosted here, sorted by topic and partition (a copy). */
  replicas(): HostedReplica[] {
    return [...this.hosted.values()].sort((a, b) =>
      a.topicName < b.topicName ? -1 : a.topicName > b.topicName ? 1 : a.partition - b.partition,
    );
  }

  /** Applies one batch of local changes (deletes first: a re-created topic reuses names). */
  applyLocalChanges(changes: LocalReplicaChanges, metadataOffset: number): void {
    const { brokerId, logger } = this.o;
    for (const d of changes.deletes) {
      const label = partitionLabel(d.topicName, d.partition);
      if (!this.hosted.delete(key(d.topicId, d.partition))) continue;
      logger.info({ partition: label, topicId: d.topicId, metadataOffset }, `would stop replicating ${label} and delete its log`);
    }
    for (const c of [...changes.leaders, ...changes.followers]) {
      const role: ReplicaRole = c.state.leader === brokerId ? 'leader' : 'follower';
      const label = partitionLabel(c.topicName, c.partition);
      const before = this.hosted.get(key(c.topicId, c.partition));
      const next: HostedReplica = {
        topicId: c.topicId,
        topicName: c.topicName,
        partition: c.partition,
        role,
        leader: c.state.leader,
        leaderEpoch: c.state.leaderEpoch,
        partitionEpoch: c.state.partitionEpoch,
        replicas: c.state.replicas,
        isr: c.state.isr,
      };
      this.hosted.set(key(c.topicId, c.partition), next);
      const fields = { partition: label, topicId: c.topicId, leader: next.leader, leaderEpoch: next.leaderEpoch, isr: next.isr, metadataOffset };
      if (before !== undefined && before.role === role && before.leaderEpoch === next.leaderEpoch && before.leader === next.leader) {
        // Same leadership, new ISR or replicas: a leader would update its high-watermark logic.
        logger.debug(fields, `${label}: ISR now ${next.isr.join(',') || 'empty'} (partition epoch ${next.partitionEpoch})`);
      } else if (role === 'leader') {
        logger.info(fields, `would become leader of ${label} at leader epoch ${next.leaderEpoch}`);
      } else {
        const of = next.leader >= 0 ? `leader ${next.leader}` : 'no leader';
        logger.info(fields, `would become follower of ${label} (${of}) at leader epoch ${next.leaderEpoch}`);
      }
    }
  }
}

function key(topicId: string, partition: number): string {
  return `${topicId}:${partition}`;
}
