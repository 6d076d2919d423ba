import { ConfChange, Entry, Message, RaftConfig, RaftStatus, RaftStorageState, Ready, Snapshot } from './types';

/** Why a proposal was refused (operating conditions, not bugs). */
export type RaftRefusal =
  | 'NOT_LEADER'
  | 'PROPOSAL_DROPPED' // leader transfer in progress
  | 'TOO_MANY_UNCOMMITTED'
  | 'RECONFIGURATION_IN_PROGRESS'
  | 'LEARNER_NOT_CAUGHT_UP'
  | 'INVALID_MEMBERSHIP_CHANGE';

export class RaftRefusedError extends Error {
  constructor(readonly refusal: RaftRefusal, message: string, readonly leaderId: number) {
    super(message);
  }
}

/**
 * The pure Raft state machine (etcd RawNode shape). Inputs: step(), tick(), propose*(),
 * readIndex(), transferLeadership(), compact(). Output: ready()/advance().
 */
export class RaftNode {
  constructor(config: RaftConfig, storage: RaftStorageState) { void config; void storage; throw new Error('todo'); }
  /** One logical clock tick. */
  tick(): void { throw new Error('todo'); }
  /** Feed a message received from a peer. Messages not addressed to this node are ignored. */
  step(m: Message): void { void m; throw new Error('todo'); }
  /** Start an election now (skips pre-vote wait; still does pre-vote if enabled). */
  campaign(): void { throw new Error('todo'); }
  /** Append application data; returns the index and term it got. Throws RaftRefusedError. */
  propose(data: Uint8Array): { index: number; term: number } { void data; throw new Error('todo'); }
  /** Propose a single-server membership change. Throws RaftRefusedError. */
  proposeConfChange(cc: ConfChange): { index: number; term: number } { void cc; throw new Error('todo'); }
  /** Request a linearizable read index; answered in a later Ready.readStates with the same ctx. */
  readIndex(requestCtx: string): void { void requestCtx; throw new Error('todo'); }
  /** Leader only: hand leadership to `to` (thesis §3.10). */
  transferLeadership(to: number): void { void to; throw new Error('todo'); }
  /** After applying through `index`, replace the log prefix with a snapshot of the app state. */
  compact(index: number, data: Uint8Array): Snapshot { void index; void data; throw new Error('todo'); }
  /** Committed, applied entries in [lo, hi] still in the in-memory log; undefined if lo was compacted. */
  entries(lo: number, hi: number): Entry[] | undefined { void lo; void hi; throw new Error('todo'); }
  hasReady(): boolean { throw new Error('todo'); }
  ready(): Ready { throw new Error('todo'); }
  advance(rd: Ready): void { void rd; throw new Error('todo'); }
  status(): RaftStatus { throw new Error('todo'); }
}
