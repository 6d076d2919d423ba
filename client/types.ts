// The admin client's view of cluster state: plain objects, numbers for ids and offsets,
// optional fields absent rather than empty strings. Mirrors proto/controller.proto.

export type PartitionStatus = 'online' | 'offline' | 'under-replicated';

export interface PartitionDescription {
  readonly partition: number;
  /** Broker id of the leader; -1 when there is none. */
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly replicas: number[];
  readonly isr: number[];
  readonly status: PartitionStatus;
  /** Why the status is not online. */
  readonly why?: string;
}

export interface TopicDescription {
  readonly name: string;
  readonly topicId: string;
  readonly configs: Record<string, string>;
  readonly partitions: PartitionDescription[];
}

export interface BrokerDescription {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly rack?: string;
  readonly fenced: boolean;
  readonly epoch: number;
}

export interface ClusterDescription {
  readonly brokers: BrokerDescription[];
  /** The active controller that answered. */
  readonly controllerId: number;
}

export interface QuorumMember {
  readonly id: number;
  readonly address: string;
  readonly matchIndex: number;
  readonly lag: number;
}

/**
 * The Raft state of the controller that answered (leaderId, term, indexes), with every
 * member's replication progress as the leader sees it (when `fromLeader`).
 */
export interface QuorumDescription {
  /** The leader as known by the answering controller; 0 when it knows none. */
  readonly leaderId: number;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly snapshotIndex: number;
  readonly voters: QuorumMember[];
  readonly learners: QuorumMember[];
  /** The controller that answered. */
  readonly servedBy: number;
  /** True when members' matchIndex and lag are the leader's (else they are 0: unknown). */
  readonly fromLeader: boolean;
}

export interface ClusterEvent {
  readonly offset: number;
  readonly timestampMs: number;
  readonly kind: string;
  readonly text: string;
}

export interface CreateTopicOptions {
  readonly name: string;
  readonly partitions: number;
  readonly replicationFactor: number;
  readonly configs?: Record<string, string>;
}

export interface ListEventsOptions {
  readonly fromOffset?: number;
  readonly max?: number;
}
