// The vocabulary of the pure Raft core: node ids, entries, messages, the Ready
// contract with its driver, and configuration. Nothing here touches I/O.
//
// References: Ongaro, "Consensus: Bridging Theory and Practice" (the thesis),
// and etcd-io/raft (raft.go, rawnode.go) for the Ready/Advance shape.

export type NodeId = number;

/** 0 is never a valid node id: it means "nobody" (no leader, no vote). */
export const NO_NODE: NodeId = 0;

export enum EntryType {
  /** Opaque application data; an empty payload is the leader's no-op (thesis §6.4). */
  Normal = 0,
  /** A single-server membership change (thesis §4.1); `data` is an encoded ConfChange. */
  ConfChange = 1,
}

export interface Entry {
  readonly term: number;
  readonly index: number;
  readonly type: EntryType;
  readonly data: Uint8Array;
}

/** The membership at some log index. Learners receive the log but neither vote nor count. */
export interface ConfState {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

export enum ConfChangeType {
  /** Add a non-voting learner; it catches up before it may be promoted. */
  AddLearner = 0,
  /** Promote a caught-up learner to voter (or add a voter directly when allowed). */
  AddVoter = 1,
  /** Remove a voter or learner. */
  RemoveNode = 2,
}

export interface ConfChange {
  readonly type: ConfChangeType;
  readonly nodeId: NodeId;
}

/** State that must be on stable storage before any message of the same Ready leaves the node. */
export interface HardState {
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
}

export interface SnapshotMetadata {
  readonly index: number;
  readonly term: number;
  readonly confState: ConfState;
}

export interface Snapshot {
  readonly metadata: SnapshotMetadata;
  /** The application's state machine at `metadata.index`, opaque to Raft. */
  readonly data: Uint8Array;
}

export enum MessageType {
  PreVote = 'PreVote',
  PreVoteResp = 'PreVoteResp',
  Vote = 'Vote',
  VoteResp = 'VoteResp',
  Append = 'Append',
  AppendResp = 'AppendResp',
  Heartbeat = 'Heartbeat',
  HeartbeatResp = 'HeartbeatResp',
  InstallSnapshot = 'InstallSnapshot',
  /** Leader transfer: the target starts an election at once (thesis §3.10). */
  TimeoutNow = 'TimeoutNow',
  /** A follower asks the leader for a read index on behalf of a local reader (thesis §6.4). */
  ReadIndex = 'ReadIndex',
  ReadIndexResp = 'ReadIndexResp',
}

export interface Message {
  readonly type: MessageType;
  readonly from: NodeId;
  readonly to: NodeId;
  readonly term: number;
  /** Append: term of the entry at `index`. Vote/PreVote: term of the candidate's last entry. Reject: hint term. */
  readonly logTerm: number;
  /** Append: index preceding `entries`. Vote/PreVote: candidate's last index. AppendResp: match or hint. */
  readonly index: number;
  readonly entries: readonly Entry[];
  readonly commit: number;
  readonly reject: boolean;
  /** AppendResp reject: the follower's suggestion of where to probe next (fast backtracking, thesis §5.3). */
  readonly rejectHint: number;
  readonly snapshot?: Snapshot;
  /** Opaque correlation for ReadIndex and heartbeats; "transfer" marks a leader-transfer election. */
  readonly context: string;
}

export enum StateRole {
  Follower = 'follower',
  PreCandidate = 'pre-candidate',
  Candidate = 'candidate',
  Leader = 'leader',
}

export interface SoftState {
  readonly leaderId: NodeId;
  readonly role: StateRole;
}

/** A linearizable read may be served once the state machine has applied `index` (thesis §6.4). */
export interface ReadState {
  readonly index: number;
  readonly requestCtx: string;
}

/**
 * What the driver must do, in this order (the core relies on it):
 *  1. persist `snapshot` (if any; it replaces the whole stored log: every stored entry is
 *     discarded), then `entries` (replacing any stored entries at or after the first
 *     one's index), then `hardState` (if any), with one fsync for all;
 *  2. only then send `messages` (a vote or an append acknowledgement must never
 *     leave before the state it promises is durable). One exception, thesis §10.2.1:
 *     when `replicateBeforePersist` is true, the messages for which
 *     `isReplicationMessage(m)` holds (a leader's Append and Heartbeat) may be sent before
 *     step 1 completes, so the leader's fsync overlaps the followers' — only then does a
 *     write cost one disk round instead of two. Safe because (a) the core counts the
 *     leader's own entries toward commit only once persisted (its match is the stable
 *     index, set in advance), and (b) the flag is false whenever this Ready changes term
 *     or vote or installs a snapshot, so the term those messages carry is already durable
 *     (a leader that crashed before the fsync cannot lead that term a second time with a
 *     different log);
 *  3. apply `snapshot` to the state machine (if any), then `committedEntries` in order;
 *     serve `readStates` once applied >= their index;
 *  4. call `advance(ready)`.
 * Between `ready()` and `advance()` the driver must not call `step`, `tick` or `propose`.
 * It may call `heartbeatsWhileBusy()` (read-only) and send what it returns, but only while
 * persisting a Ready whose `replicateBeforePersist` is true (same reasoning as (b) above):
 * a leader then keeps heartbeating through a slow fsync instead of losing its term to it.
 */
export interface Ready {
  readonly softState?: SoftState;
  readonly hardState?: HardState;
  readonly snapshot?: Snapshot;
  readonly entries: readonly Entry[];
  readonly messages: readonly Message[];
  readonly committedEntries: readonly Entry[];
  readonly readStates: readonly ReadState[];
  /** See step 2 above: Appends and Heartbeats of this Ready may leave before the fsync. */
  readonly replicateBeforePersist: boolean;
}

/** A leader's replication traffic: what step 2's exception lets leave before the fsync. */
export function isReplicationMessage(m: Message): boolean {
  return m.type === MessageType.Append || m.type === MessageType.Heartbeat;
}

export interface RaftConfig {
  readonly id: NodeId;
  /** Ticks without hearing from a leader before a follower starts a (pre-)election. */
  readonly electionTimeoutTicks: number;
  /** Ticks between leader heartbeats; must be < electionTimeoutTicks. */
  readonly heartbeatTimeoutTicks: number;
  /** Injected randomness, e.g. a seeded PRNG in the simulator: returns [0, 1). */
  readonly random: () => number;
  readonly preVote: boolean;
  readonly checkQuorum: boolean;
  /** Limit on entries in one Append message. */
  readonly maxEntriesPerMsg: number;
  /** Limit on the payload bytes in one Append message (at least one entry is always sent). */
  readonly maxBytesPerMsg: number;
  /** Limit on Append messages in flight to one follower in replicate state. */
  readonly maxInflightMsgs: number;
  /** Limit on bytes proposed but not yet committed at the leader; past it, propose fails. */
  readonly maxUncommittedBytes: number;
  /** Limit on committed entries handed out in one Ready. */
  readonly maxCommittedEntriesPerReady: number;
}

/** What the driver restores a node from after a restart. */
export interface RaftStorageState {
  readonly hardState: HardState;
  readonly snapshot?: Snapshot;
  /** Entries after the snapshot, contiguous. */
  readonly entries: readonly Entry[];
  /** Configuration used when there is neither snapshot nor any ConfChange entry (bootstrap). */
  readonly initialConfState: ConfState;
  /** Highest index already applied to the state machine (>= snapshot index). */
  readonly applied: number;
}

export interface ProgressStatus {
  readonly id: NodeId;
  readonly match: number;
  readonly next: number;
  readonly state: 'probe' | 'replicate' | 'snapshot';
  readonly isLearner: boolean;
  readonly recentActive: boolean;
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly term: number;
  readonly vote: NodeId;
  readonly commit: number;
  readonly applied: number;
  readonly lastIndex: number;
  readonly snapshotIndex: number;
  readonly role: StateRole;
  readonly leaderId: NodeId;
  readonly confState: ConfState;
  readonly leadTransferee: NodeId;
  /** Only on the leader: every other member's replication progress. */
  readonly progress: readonly ProgressStatus[];
}

export const DEFAULT_RAFT_LIMITS = {
  maxEntriesPerMsg: 512,
  maxBytesPerMsg: 1024 * 1024,
  maxInflightMsgs: 64,
  maxUncommittedBytes: 64 * 1024 * 1024,
  maxCommittedEntriesPerReady: 4096,
} as const;
