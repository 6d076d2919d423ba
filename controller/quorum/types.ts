// The contracts around the QuorumController: what it needs from the Raft driver
// (MetadataLog), what the driver needs from it (StateMachine), and the shapes of its answers.
// controller/raft-driver and controller/server are written against exactly these names.

import type { MetadataEvent, PartitionState, PartitionStatus } from '../../shared/metadata';

/** Implemented by the Raft driver (controller/raft-driver) and given to the QuorumController. */
export interface MetadataLog {
  /**
   * Resolves after the entry is committed AND applied locally (StateMachine.apply was called
   * for it). Rejects with FlotillaError NOT_CONTROLLER / PROPOSAL_DROPPED / REQUEST_TIMED_OUT.
   */
  propose(data: Uint8Array): Promise<{ index: number; term: number }>;
  /**
   * Resolves with an index; once local state has applied it, a read is linearizable
   * (Raft thesis §6.4). Rejects NOT_CONTROLLER when not leader.
   */
  readIndex(): Promise<number>;
  isLeader(): boolean;
}

/**
 * Implemented by the QuorumController; the Raft driver calls it. `index` is the Raft log
 * index, which is also the metadata offset. The driver must call apply() for committed
 * entries in index order; entries without metadata (the leader's no-op, membership changes)
 * may be passed with empty data so that the applied offset keeps up with the commit index
 * (reads wait until applied >= readIndex()).
 */
export interface StateMachine {
  /** Apply one committed entry. Empty data = no records (leader no-op): only advance the offset. */
  apply(index: number, term: number, data: Uint8Array): void;
  /** The state as of the last applied index, as one encoded MetadataRecordBatch. */
  takeSnapshot(): Uint8Array;
  /**
   * The state as of the last applied index, captured now and encoded over several event-loop
   * turns (same bytes as takeSnapshot). The driver prefers it when present.
   */
  snapshotLater?(): Promise<Uint8Array>;
  /** Replace the state with a snapshot taken at `index`. */
  restoreSnapshot(index: number, data: Uint8Array): void;
}

/** The subset of pino.Logger the controller uses (a pino Logger satisfies it). */
export interface ControllerLogger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface QuorumControllerOptions {
  readonly log: MetadataLog;
  readonly nowMs: () => number;
  readonly logger: ControllerLogger;
  /** A broker without a heartbeat for longer than this is fenced. Default 9000 (KRaft's broker.session.timeout.ms). */
  readonly brokerSessionTimeoutMs?: number;
  /** After a broker's BrokerSession stream closes, fence it if no heartbeat came within this. Default 1000. */
  readonly brokerConnectionGraceMs?: number;
  /** Producer ids per AllocateProducerIds block. Default 1000 (KRaft's block size). */
  readonly producerIdBlockSize?: number;
  /** Uniform in [0, 1): replica placement start and topic ids. Default Math.random / crypto UUIDs. */
  readonly random?: () => number;
  /** Proposals in flight at once; beyond it requests fail PROPOSAL_DROPPED. Default 1000. */
  readonly maxPendingProposals?: number;
  /** Reads waiting for the local state to catch up with readIndex(); default 10000. */
  readonly maxReadWaiters?: number;
  /** How long a read waits for the local state to apply readIndex(); default 5000. */
  readonly readWaitTimeoutMs?: number;
  /** Preferred-leader elections per tick (they are not urgent); default 1000. */
  readonly maxPreferredElectionsPerTick?: number;
  /** Partition changes one departure batch (fencing, replacement) carries at most; the rest follow a batch per tick. Default 250. */
  readonly departureChangesPerBatch?: number;
  /**
   * Preferred-leader election runs on a tick when brokers or a partition off its preferred
   * leader changed, and otherwise at most this often (a backstop); default 10000.
   */
  readonly leaderImbalanceCheckIntervalMs?: number;
}

export interface CreateTopicRequest {
  readonly name: string;
  readonly partitions: number;
  readonly replicationFactor: number;
  readonly configs?: Record<string, string>;
}

export interface PartitionDescription {
  readonly partition: number;
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
  readonly status: PartitionStatus;
  /** Why the status is not online, e.g. "replica 3 out of ISR: broker 3 fenced"; '' when online. */
  readonly why: string;
}

export interface TopicDescription {
  readonly name: string;
  readonly topicId: string;
  /** Topic-level config overrides (defaults are not listed). */
  readonly configs: Readonly<Record<string, string>>;
  /** Ordered by partition index. */
  readonly partitions: readonly PartitionDescription[];
}

export interface BrokerDescription {
  readonly id: number;
  readonly incarnationId: string;
  /** The broker epoch of the current registration. */
  readonly epoch: number;
  readonly host: string;
  readonly port: number;
  /** Absent when the broker declared no rack. */
  readonly rack?: string;
  readonly fenced: boolean;
  /** Partitions it leads. */
  readonly leaderCount: number;
  /** Partitions it is assigned a replica of. */
  readonly replicaCount: number;
  /** Time since its last heartbeat as seen by this (active) controller; absent when unknown. */
  readonly lastHeartbeatAgoMs?: number;
}

export interface RegisterBrokerRequest {
  readonly brokerId: number;
  readonly incarnationId: string;
  readonly host: string;
  readonly port: number;
  readonly rack?: string;
}

export interface BrokerHeartbeatRequest {
  readonly brokerId: number;
  readonly brokerEpoch: number;
  readonly currentMetadataOffset: number;
  readonly wantShutdown?: boolean;
}

export interface BrokerHeartbeatResponse {
  readonly isFenced: boolean;
  /** The controller's Raft term (KRaft sends the controller epoch with every response). */
  readonly leaderEpoch?: number;
}

export interface AlterPartitionRequest {
  readonly brokerId: number;
  readonly brokerEpoch: number;
  readonly topic: string;
  readonly partition: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly newIsr: number[];
  readonly reason?: string;
}

export interface AllocateProducerIdsRequest {
  readonly brokerId: number;
  readonly brokerEpoch: number;
}

export type { MetadataEvent, PartitionState };
