// What the gRPC layer needs from the Raft driver and the quorum controller, stated as narrow
// structural interfaces. controller/raft-driver's RaftDriver and controller/quorum's
// QuorumController satisfy them (checked where controller-process.ts wires them), and tests
// can hand in fakes without a quorum.

/** A member of the Raft quorum as the driver reports it. */
export interface QuorumMemberView {
  readonly id: number;
  readonly address: string;
  /** Highest index known replicated on the member (leader's view). */
  readonly matchIndex: number;
  /** Leader's last index minus matchIndex. */
  readonly lag: number;
}

export interface QuorumStatusView {
  /** 0 (or null/undefined/-1) when no leader is known. */
  readonly leaderId: number | null | undefined;
  readonly term: number;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly snapshotIndex: number;
  readonly voters: readonly QuorumMemberView[];
  readonly learners: readonly QuorumMemberView[];
}

/** One committed Raft entry with application data: an encoded MetadataRecordBatch. */
export interface CommittedEntryView {
  readonly index: number;
  readonly term: number;
  readonly data: Uint8Array;
}

export type CommittedRead =
  /** `nextIndex`: where the next read starts (past skipped no-ops and membership changes). */
  | { readonly entries: readonly CommittedEntryView[]; readonly nextIndex?: number }
  | { readonly compacted: true; readonly snapshotIndex: number };

type MaybePromise<T> = T | Promise<T>;

/** The subset of RaftDriver the service uses. */
export interface DriverPort {
  isLeader(): boolean;
  /** The leader this node knows of; 0/null/undefined/-1 when none. */
  leaderId(): number | null | undefined;
  /** host:port of a quorum member (the same server serves Raft and the Controller API). */
  peerAddress(id: number): string | null | undefined;
  quorumStatus(): MaybePromise<QuorumStatusView>;
  addController(id: number, address: string): MaybePromise<unknown>;
  removeController(id: number): MaybePromise<unknown>;
  transferLeadership(to: number): MaybePromise<unknown>;
  /** Committed entries from `fromIndex` on, at most `maxEntries`; or where the log was compacted. */
  readCommitted(fromIndex: number, maxEntries: number): MaybePromise<CommittedRead>;
}

export type PartitionStatusView = 'online' | 'offline' | 'under-replicated';

export interface PartitionView extends PartitionStateView {
  readonly partition: number;
  readonly status: PartitionStatusView;
  readonly why?: string;
}

/** A partition's replication state as committed (what AlterPartition answers). */
export interface PartitionStateView {
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
}

export interface TopicView {
  readonly name: string;
  readonly topicId: string;
  readonly configs: Readonly<Record<string, string>>;
  readonly partitions: readonly PartitionView[];
}

export interface BrokerView {
  readonly id: number;
  readonly host: string;
  readonly port: number;
  readonly rack?: string;
  readonly fenced: boolean;
  readonly epoch: number;
}

export interface EventView {
  readonly offset: number;
  readonly timestampMs: number;
  readonly kind: string;
  readonly text: string;
}

/** The subset of QuorumController the service uses. */
export interface QuorumControllerPort {
  createTopic(req: { name: string; partitions: number; replicationFactor: number; configs?: Record<string, string> }): MaybePromise<TopicView>;
  deleteTopic(name: string): MaybePromise<unknown>;
  listTopics(): MaybePromise<readonly string[]>;
  describeTopics(names?: string[]): MaybePromise<readonly TopicView[]>;
  describeCluster(): MaybePromise<{ readonly brokers: readonly BrokerView[] }>;
  listEvents(opts: { fromOffset?: number; max?: number }): MaybePromise<readonly EventView[]>;
  registerBroker(req: { brokerId: number; incarnationId: string; host: string; port: number; rack?: string }): MaybePromise<{ brokerEpoch: number }>;
  brokerHeartbeat(req: { brokerId: number; brokerEpoch: number; currentMetadataOffset: number; wantShutdown?: boolean }): MaybePromise<{ isFenced: boolean; leaderEpoch?: number }>;
  /** A broker's BrokerSession stream opened here (throws STALE_BROKER_EPOCH, NOT_CONTROLLER...). */
  brokerSessionOpened(brokerId: number, brokerEpoch: number): { leaderEpoch: number };
  /** That stream's connection closed. */
  brokerSessionClosed(brokerId: number, brokerEpoch: number, nowMs: number): void;
  alterPartition(req: {
    brokerId: number;
    brokerEpoch: number;
    topic: string;
    partition: number;
    leaderEpoch: number;
    partitionEpoch: number;
    newIsr: number[];
    reason?: string;
  }): MaybePromise<PartitionStateView>;
  allocateProducerIds(req: { brokerId: number; brokerEpoch: number }): MaybePromise<{ firstProducerId: number; count: number }>;
}

/**
 * The current metadata image as encoded MetadataRecordBatch chunks, for a FetchMetadata whose
 * start was compacted. `offset` is the last log index the image reflects.
 */
export interface ImageSnapshot {
  readonly offset: number;
  readonly batches: readonly Uint8Array[];
}

/** Turns a leader id as reported by the driver into a node id, or undefined for "none". */
export function knownLeader(id: number | null | undefined): number | undefined {
  return typeof id === 'number' && Number.isInteger(id) && id > 0 ? id : undefined;
}
