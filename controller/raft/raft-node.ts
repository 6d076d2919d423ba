import {
  ConfChange,
  ConfChangeType,
  ConfState,
  Entry,
  EntryType,
  HardState,
  Message,
  MessageType,
  NO_NODE,
  NodeId,
  ProgressStatus,
  RaftConfig,
  RaftStatus,
  RaftStorageState,
  ReadState,
  Ready,
  Snapshot,
  SoftState,
  StateRole,
} from './types';
import { RaftLog } from './raft-log';
import { Progress } from './progress';
import { raftAssert } from './raft-assert';
import { decodeConfChange, encodeConfChange } from './conf-change';

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

const TRANSFER_CONTEXT = 'transfer';
/** Limit on read requests waiting at the leader (STYLE: a limit on everything that grows). */
const MAX_PENDING_READS = 4096;

interface PendingRead {
  readonly ctx: string;
  readonly from: NodeId;
  index: number;
  readonly acks: Set<NodeId>;
}

const EMPTY = new Uint8Array(0);

function applyConfChange(conf: ConfState, cc: ConfChange): ConfState {
  const voters = conf.voters.filter((v) => v !== cc.nodeId);
  const learners = conf.learners.filter((v) => v !== cc.nodeId);
  if (cc.type === ConfChangeType.AddLearner) learners.push(cc.nodeId);
  if (cc.type === ConfChangeType.AddVoter) voters.push(cc.nodeId);
  voters.sort((a, b) => a - b);
  learners.sort((a, b) => a - b);
  return { voters, learners };
}

/**
 * The pure Raft state machine (etcd RawNode shape). Inputs: step(), tick(),
 * propose(), proposeConfChange(), readIndex(), transferLeadership(), compact().
 * Output: ready()/advance(), whose ordering contract is documented on `Ready`.
 *
 * Deliberate choices (thesis references are to Ongaro's dissertation):
 *  - membership takes effect when the ConfChange entry is appended, not committed
 *    (§4.1), one server at a time; a truncated ConfChange reverts the configuration;
 *  - a new leader accepts no ConfChange until an entry of its own term commits
 *    (the fix to single-server changes described in Ongaro's 2015 raft-dev note);
 *  - the leader counts itself towards a quorum only for entries it has persisted;
 *  - pre-vote (§9.6) and check-quorum (§6.2) with the leader lease that lets a node
 *    ignore vote requests while it hears from a leader (§4.2.3);
 *  - ReadIndex reads (§6.4) confirmed by a heartbeat round.
 */
export class RaftNode {
  readonly id: NodeId;
  private readonly cfg: RaftConfig;
  private readonly log: RaftLog;

  private term = 0;
  private vote: NodeId = NO_NODE;
  private role: StateRole = StateRole.Follower;
  private leaderId: NodeId = NO_NODE;

  /** Configurations in log order; the last one is in force (§4.1). confs[0] is the base. */
  private confs: { index: number; conf: ConfState }[];
  private snapshot: Snapshot | undefined;
  /** A snapshot received from the leader, not yet handed to the driver. */
  private pendingSnapshot: Snapshot | undefined;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  private votes = new Map<NodeId, boolean>();
  private prs = new Map<NodeId, Progress>();
  private leadTransferee: NodeId = NO_NODE;
  /** Index of the last ConfChange (or the leader's first no-op) not known committed. */
  private pendingConfIndex = 0;
  private uncommittedBytes = 0;

  private msgs: Message[] = [];
  /**
   * Leader: new entries or a new commit index are waiting to be sent. Set by propose, by an
   * acknowledgement and by the leader's own persist; turned into messages once, by
   * flushAppends() in ready(). So the proposals and acknowledgements stepped between two
   * Readys (a driver drains everything that arrived during one fsync) leave as ONE Append per
   * follower, not one per proposal and one per acknowledgement: under load that is what
   * keeps the message count, and the transport's CPU, per write low.
   */
  private appendsDue = false;
  private readStates: ReadState[] = [];
  /** Reads accepted before this leader committed an entry of its term. */
  private readsWaitingForCommit: { ctx: string; from: NodeId }[] = [];
  private readsInFlight: PendingRead[] = [];

  private prevHardState: HardState;
  private prevSoftState: SoftState;

  constructor(config: RaftConfig, storage: RaftStorageState) {
    raftAssert(config.id !== NO_NODE, 'node id 0 is reserved');
    raftAssert(config.heartbeatTimeoutTicks > 0 && config.heartbeatTimeoutTicks < config.electionTimeoutTicks, 'heartbeat timeout must be in (0, election timeout)');
    this.id = config.id;
    this.cfg = config;
    this.snapshot = storage.snapshot;
    this.log = new RaftLog(storage.snapshot, storage.entries);
    const base = storage.snapshot
      ? { index: storage.snapshot.metadata.index, conf: storage.snapshot.metadata.confState }
      : { index: 0, conf: storage.initialConfState };
    this.confs = [base];
    for (const e of storage.entries) {
      if (e.type === EntryType.ConfChange) this.pushConf(e);
    }
    const hs = storage.hardState;
    raftAssert(hs.commit <= this.log.lastIndex(), `stored commit ${hs.commit} beyond last index ${this.log.lastIndex()}`);
    this.term = hs.term;
    this.vote = hs.vote;
    this.log.committed = Math.max(hs.commit, this.log.snapIndex);
    this.log.applied = Math.max(storage.applied, this.log.snapIndex);
    raftAssert(this.log.applied <= this.log.committed, `applied ${this.log.applied} beyond commit ${this.log.committed}`);
    this.prevHardState = { term: hs.term, vote: hs.vote, commit: hs.commit };
    this.becomeFollower(this.term, NO_NODE);
    this.prevSoftState = { leaderId: NO_NODE, role: StateRole.Follower };
  }

  // ---------------------------------------------------------------- configuration

  private conf(): ConfState {
    return this.confs[this.confs.length - 1].conf;
  }

  private confAt(index: number): ConfState {
    let c = this.confs[0].conf;
    for (const x of this.confs) {
      if (x.index <= index) c = x.conf;
      else break;
    }
    return c;
  }

  private pushConf(e: Entry): void {
    const cc = decodeConfChange(e.data);
    this.confs.push({ index: e.index, conf: applyConfChange(this.conf(), cc) });
  }

  private isVoter(id: NodeId): boolean {
    return this.conf().voters.includes(id);
  }

  private quorum(): number {
    return Math.floor(this.conf().voters.length / 2) + 1;
  }

  /**
   * A node campaigns while it is a voter in its latest configuration, and also (§4.2.2,
   * Figure 4.6) while a configuration entry that removes it is not yet committed: it may
   * still be needed to commit that entry. It then does not count its own vote, because
   * poll() counts only the voters of the latest configuration.
   */
  private promotable(): boolean {
    if (this.isVoter(this.id)) return true;
    const latest = this.confs[this.confs.length - 1];
    return latest.index > this.log.committed && this.confAt(this.log.committed).voters.includes(this.id);
  }

  /** Keep the leader's progress map equal to the configuration in force. */
  private syncProgress(): void {
    if (this.role !== StateRole.Leader) return;
    const c = this.conf();
    const members = new Set([...c.voters, ...c.learners]);
    for (const id of [...this.prs.keys()]) {
      if (!members.has(id)) this.prs.delete(id);
    }
    for (const id of members) {
      if (id === this.id) continue;
      const learner = c.learners.includes(id);
      const pr = this.prs.get(id);
      if (pr) pr.isLearner = learner;
      else this.prs.set(id, new Progress(id, this.log.lastIndex() + 1, learner));
    }
    if (this.leadTransferee !== NO_NODE && !c.voters.includes(this.leadTransferee)) this.leadTransferee = NO_NODE;
  }

  // ---------------------------------------------------------------- role changes

  private reset(term: number): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = NO_NODE;
    }
    this.leaderId = NO_NODE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.randomizedElectionTimeout = this.cfg.electionTimeoutTicks + Math.floor(this.cfg.random() * this.cfg.electionTimeoutTicks);
    this.votes.clear();
    this.prs.clear();
    this.leadTransferee = NO_NODE;
    this.pendingConfIndex = 0;
    this.uncommittedBytes = 0;
    // Reads waiting at a former leader can no longer be confirmed; the driver times them out.
    this.readsWaitingForCommit = [];
    this.readsInFlight = [];
    this.appendsDue = false;
  }

  private becomeFollower(term: number, leaderId: NodeId): void {
    this.reset(term);
    this.role = StateRole.Follower;
    this.leaderId = leaderId;
  }

  private becomePreCandidate(): void {
    raftAssert(this.role !== StateRole.Leader, 'leader cannot become pre-candidate');
    // Pre-vote changes neither term nor vote (§9.6).
    this.role = StateRole.PreCandidate;
    this.votes.clear();
    this.leaderId = NO_NODE;
  }

  private becomeCandidate(): void {
    raftAssert(this.role !== StateRole.Leader, 'leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = StateRole.Candidate;
  }

  private becomeLeader(): void {
    raftAssert(this.role === StateRole.Candidate, `only a candidate becomes leader (was ${this.role})`);
    this.reset(this.term);
    this.role = StateRole.Leader;
    this.leaderId = this.id;
    this.syncProgress();
    // A no-op of the new term: commits everything before it (§3.6.2) and gates
    // membership changes and reads until it commits.
    this.appendEntry(EntryType.Normal, EMPTY);
    this.pendingConfIndex = this.log.lastIndex();
    this.bcastAppend();
  }

  // ---------------------------------------------------------------- time

  /** One logical clock tick. */
  tick(): void {
    if (this.role === StateRole.Leader) this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.cfg.electionTimeoutTicks) {
      this.electionElapsed = 0;
      if (this.cfg.checkQuorum && !this.quorumActive()) {
        // §6.2: a leader that has not heard from a quorum within an election timeout steps down.
        this.becomeFollower(this.term, NO_NODE);
        return;
      }
      // A transfer that did not finish within an election timeout is abandoned (§3.10).
      this.leadTransferee = NO_NODE;
    }
    for (const pr of this.prs.values()) {
      if (pr.state === 'snapshot' && ++pr.snapshotTicks >= 2 * this.cfg.electionTimeoutTicks) {
        // The snapshot or its acknowledgement was lost: probe again, which resends it.
        pr.becomeProbe();
      }
    }
    if (this.heartbeatElapsed >= this.cfg.heartbeatTimeoutTicks) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat('');
    }
  }

  private quorumActive(): boolean {
    let active = this.isVoter(this.id) ? 1 : 0;
    for (const pr of this.prs.values()) {
      if (!pr.isLearner && pr.recentActive) active++;
      pr.recentActive = false;
    }
    return active >= this.quorum();
  }

  // ---------------------------------------------------------------- elections

  /** Start an election now (with pre-vote when enabled). */
  campaign(): void {
    this.hup(false);
  }

  private hup(transfer: boolean): void {
    if (this.role === StateRole.Leader || !this.promotable()) return;
    if (this.cfg.preVote && !transfer) this.startElection(true, false);
    else this.startElection(false, transfer);
  }

  private startElection(pre: boolean, transfer: boolean): void {
    let term: number;
    if (pre) {
      this.becomePreCandidate();
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      term = this.term;
    }
    if (this.poll(this.id, true) === 'won') {
      if (pre) this.startElection(false, transfer);
      else this.becomeLeader();
      return;
    }
    const type = pre ? MessageType.PreVote : MessageType.Vote;
    for (const v of this.conf().voters) {
      if (v === this.id) continue;
      this.send({
        type,
        to: v,
        term,
        index: this.log.lastIndex(),
        logTerm: this.log.lastTerm(),
        context: transfer ? TRANSFER_CONTEXT : '',
      });
    }
  }

  private poll(from: NodeId, granted: boolean): 'won' | 'lost' | 'pending' {
    if (!this.votes.has(from)) this.votes.set(from, granted);
    let yes = 0;
    let no = 0;
    for (const v of this.conf().voters) {
      const g = this.votes.get(v);
      if (g === true) yes++;
      else if (g === false) no++;
    }
    if (yes >= this.quorum()) return 'won';
    if (no >= this.quorum()) return 'lost';
    return 'pending';
  }

  // ---------------------------------------------------------------- messages in

  /** Feed a message received from a peer. Messages not addressed to this node are ignored. */
  step(m: Message): void {
    if (m.to !== this.id || m.from === this.id) return;
    if (m.term > this.term) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = m.context === TRANSFER_CONTEXT;
        const inLease = this.cfg.checkQuorum && this.leaderId !== NO_NODE && this.electionElapsed < this.cfg.electionTimeoutTicks;
        // §4.2.3: while we hear from a leader, a (pre-)vote request cannot disrupt us.
        if (!force && inLease) return;
      }
      if (m.type === MessageType.PreVote) {
        // Never change term for a pre-vote (§9.6).
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote carries the future term we asked for; the term moves only if we win.
      } else if (m.type === MessageType.Append || m.type === MessageType.Heartbeat || m.type === MessageType.InstallSnapshot) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NO_NODE);
      }
    } else if (m.term < this.term) {
      if ((this.cfg.checkQuorum || this.cfg.preVote) && (m.type === MessageType.Heartbeat || m.type === MessageType.Append)) {
        // A stale leader (e.g. one that was partitioned away) learns the new term from this
        // reply and steps down; without it, pre-vote could leave it stranded.
        this.send({ type: MessageType.AppendResp, to: m.from, term: this.term });
      } else if (m.type === MessageType.PreVote) {
        this.send({ type: MessageType.PreVoteResp, to: m.from, term: this.term, reject: true });
      }
      return;
    }

    if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
      this.onVoteRequest(m);
      return;
    }
    switch (this.role) {
      case StateRole.Leader:
        this.stepLeader(m);
        break;
      case StateRole.Candidate:
      case StateRole.PreCandidate:
        this.stepCandidate(m);
        break;
      case StateRole.Follower:
        this.stepFollower(m);
        break;
    }
  }

  private onVoteRequest(m: Message): void {
    const pre = m.type === MessageType.PreVote;
    const respType = pre ? MessageType.PreVoteResp : MessageType.VoteResp;
    const canVote =
      this.vote === m.from || (this.vote === NO_NODE && this.leaderId === NO_NODE) || (pre && m.term > this.term);
    if (canVote && this.log.isUpToDate(m.index, m.logTerm)) {
      // The grant carries the requested term: for a pre-vote that is our term + 1.
      this.send({ type: respType, to: m.from, term: m.term });
      if (!pre) {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ type: respType, to: m.from, term: this.term, reject: true });
    }
  }

  private stepCandidate(m: Message): void {
    const myRespType = this.role === StateRole.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Append:
        this.becomeFollower(m.term, m.from);
        this.onAppend(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.onHeartbeat(m);
        return;
      case MessageType.InstallSnapshot:
        this.becomeFollower(m.term, m.from);
        this.onInstallSnapshot(m);
        return;
      case myRespType: {
        const r = this.poll(m.from, !m.reject);
        if (r === 'won') {
          if (this.role === StateRole.PreCandidate) this.startElection(false, false);
          else this.becomeLeader();
        } else if (r === 'lost') {
          this.becomeFollower(this.term, NO_NODE);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Append:
        this.electionElapsed = 0;
        this.leaderId = m.from;
        this.onAppend(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.leaderId = m.from;
        this.onHeartbeat(m);
        return;
      case MessageType.InstallSnapshot:
        this.electionElapsed = 0;
        this.leaderId = m.from;
        this.onInstallSnapshot(m);
        return;
      case MessageType.TimeoutNow:
        // Leader transfer (§3.10): campaign at once, skipping pre-vote and lease checks.
        this.hup(true);
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, requestCtx: m.context });
        return;
      default:
        return;
    }
  }

  private stepLeader(m: Message): void {
    if (m.type === MessageType.Append || m.type === MessageType.Heartbeat || m.type === MessageType.InstallSnapshot) {
      raftAssert(false, `two leaders in term ${this.term}: ${this.id} and ${m.from}`);
    }
    if (m.type === MessageType.ReadIndex) {
      this.onReadRequest(m.context, m.from);
      return;
    }
    const pr = this.prs.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case MessageType.AppendResp:
        pr.recentActive = true;
        if (m.reject) this.onAppendRejected(pr, m);
        else this.onAppendAccepted(pr, m);
        return;
      case MessageType.HeartbeatResp:
        pr.recentActive = true;
        pr.probeSent = false;
        if (pr.state !== 'snapshot' && m.index < pr.match) this.onFollowerLostLog(pr, m.index);
        if (pr.state === 'replicate' && pr.inflights.length >= this.cfg.maxInflightMsgs) pr.inflights.shift();
        if (pr.match < this.log.lastIndex()) this.sendAppend(pr.id);
        if (m.context !== '') this.onReadAck(m.context, m.from);
        return;
      default:
        return;
    }
  }

  private onAppendRejected(pr: Progress, m: Message): void {
    if (pr.state !== 'snapshot' && pr.match > 0 && m.index === pr.match && m.rejectHint < pr.match) {
      // The follower rejects the very entry it acknowledged: a durable follower never does.
      this.onFollowerLostLog(pr, m.rejectHint);
      return;
    }
    // Fast backtracking (§5.3 optimisation as in etcd): the follower sent the last index
    // whose term is <= the term we asked about; skip every index of a conflicting term.
    const nextProbe = m.logTerm > 0 ? this.log.findConflictByTerm(m.rejectHint, m.logTerm) : m.rejectHint;
    if (pr.maybeDecrTo(m.index, nextProbe)) {
      if (pr.state === 'replicate') pr.becomeProbe();
      this.sendAppend(pr.id);
    }
  }

  /**
   * A follower reports a log shorter than the match index it acknowledged. A durable
   * follower cannot (it never truncates below a match), so an operator wiped its data dir.
   * Raft assumes durable storage; rather than stall forever on a match that no longer
   * holds, replicate again from what it has (by InstallSnapshot when compacted). A stale,
   * reordered response can also land here: that costs one extra probe, never safety, since
   * a lower match only delays commits.
   */
  private onFollowerLostLog(pr: Progress, followerLastIndex: number): void {
    pr.match = followerLastIndex;
    pr.becomeProbe();
    this.sendAppend(pr.id);
  }

  private onAppendAccepted(pr: Progress, m: Message): void {
    const wasPaused = pr.isPaused(this.cfg.maxInflightMsgs);
    if (!pr.maybeUpdate(m.index)) {
      if (wasPaused && pr.state === 'probe') this.sendAppend(pr.id);
      return;
    }
    if (pr.state === 'probe') pr.becomeReplicate();
    else if (pr.state === 'snapshot' && (pr.match >= pr.pendingSnapshot || pr.match >= this.log.snapIndex)) pr.becomeReplicate();
    else if (pr.state === 'replicate') pr.freeInflightsTo(m.index);

    // The pipeline refill and the new commit index leave with the next Ready (flushAppends).
    if (this.maybeCommit() || pr.next <= this.log.lastIndex() || pr.sentCommit < Math.min(pr.next - 1, this.log.committed)) this.appendsDue = true;

    if (pr.id === this.leadTransferee && pr.match === this.log.lastIndex()) {
      this.send({ type: MessageType.TimeoutNow, to: pr.id, term: this.term });
    }
  }

  private onAppend(m: Message): void {
    if (m.index < this.log.committed) {
      this.send({ type: MessageType.AppendResp, to: m.from, term: this.term, index: this.log.committed });
      return;
    }
    if (this.log.matchTerm(m.index, m.logTerm)) {
      const { truncatedAt, appendedFrom } = this.log.appendFollowing(m.entries);
      // §4.1: the configuration is the latest in the log, so a truncated ConfChange reverts it.
      if (truncatedAt !== undefined) this.confs = this.confs.filter((c, i) => i === 0 || c.index < truncatedAt);
      if (appendedFrom !== undefined) {
        for (const e of m.entries) {
          if (e.index >= appendedFrom && e.type === EntryType.ConfChange) this.pushConf(e);
        }
      }
      const lastNew = m.index + m.entries.length;
      this.log.commitTo(Math.min(m.commit, lastNew));
      this.send({ type: MessageType.AppendResp, to: m.from, term: this.term, index: lastNew });
      return;
    }
    const hintIndex = this.log.findConflictByTerm(Math.min(m.index, this.log.lastIndex()), m.logTerm);
    this.send({
      type: MessageType.AppendResp,
      to: m.from,
      term: this.term,
      index: m.index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: this.log.term(hintIndex) ?? 0,
    });
  }

  private onHeartbeat(m: Message): void {
    this.log.commitTo(Math.min(m.commit, this.log.lastIndex()));
    // `index` tells the leader how long our log is: see the lost-log check in stepLeader.
    this.send({ type: MessageType.HeartbeatResp, to: m.from, term: this.term, context: m.context, index: this.log.lastIndex() });
  }

  private onInstallSnapshot(m: Message): void {
    const s = m.snapshot;
    raftAssert(s !== undefined, 'InstallSnapshot without snapshot');
    const { index, term } = s.metadata;
    if (index <= this.log.committed) {
      this.send({ type: MessageType.AppendResp, to: m.from, term: this.term, index: this.log.committed });
      return;
    }
    if (this.log.matchTerm(index, term)) {
      // We already hold this prefix: just learn that it is committed.
      this.log.commitTo(index);
      this.send({ type: MessageType.AppendResp, to: m.from, term: this.term, index: this.log.committed });
      return;
    }
    this.log.restore(s);
    this.snapshot = s;
    this.pendingSnapshot = s;
    this.confs = [{ index, conf: s.metadata.confState }];
    this.send({ type: MessageType.AppendResp, to: m.from, term: this.term, index: this.log.lastIndex() });
  }

  // ---------------------------------------------------------------- leader: replication

  private appendEntry(type: EntryType, data: Uint8Array): Entry {
    const e: Entry = { term: this.term, index: this.log.lastIndex() + 1, type, data };
    this.log.appendNew(e);
    if (type === EntryType.ConfChange) {
      this.pushConf(e);
      this.syncProgress();
    }
    return e;
  }

  private bcastAppend(): void {
    for (const id of this.prs.keys()) this.sendAppend(id);
  }

  /**
   * What appendsDue stands for, once per Ready: every follower gets the entries it has not
   * been sent (as many Appends as the inflight window and the per-message limits allow), and
   * one that was sent everything but not the current commit index gets an empty Append that
   * carries it — so its state machine, and anything served from it, is not a heartbeat
   * behind. An Append with entries carries the commit index too.
   */
  private flushAppends(): void {
    this.appendsDue = false;
    if (this.role !== StateRole.Leader) return;
    for (const pr of this.prs.values()) {
      while (this.sendAppend(pr.id, false)) { /* fill the pipeline */ }
      // Up to what the follower holds or has been sent (in order, on one stream): it applies
      // min(commit, last index of the Append) only.
      const sent = pr.state === 'replicate' ? pr.next - 1 : pr.match;
      if (pr.sentCommit < Math.min(sent, this.log.committed)) this.sendAppend(pr.id, true);
    }
  }

  /**
   * Leader only, and without changing any state: the heartbeats the leader may send while
   * the driver is still persisting a Ready whose replicateBeforePersist is true (its term and
   * vote are already durable). A disk stall longer than the election timeout otherwise
   * silences the leader — it sends nothing until the fsync returns — and the followers
   * elect another one (the chaos suite saw terms end every few seconds under 0.5–1 s
   * fsyncs). Each carries only what an ordinary heartbeat does: the term, and a commit index
   * no higher than what that follower is known to hold. No read-index context: the answers
   * count for liveness only (they are stepped like any HeartbeatResp once the loop runs).
   */
  heartbeatsWhileBusy(): Message[] {
    if (this.role !== StateRole.Leader) return [];
    const out: Message[] = [];
    for (const pr of this.prs.values()) {
      if (pr.id === this.id) continue;
      out.push({
        from: this.id,
        logTerm: 0,
        index: 0,
        entries: [],
        commit: Math.min(pr.match, this.log.committed),
        reject: false,
        rejectHint: 0,
        context: '',
        type: MessageType.Heartbeat,
        to: pr.id,
        term: this.term,
      });
    }
    return out;
  }

  private bcastHeartbeat(ctx: string): void {
    for (const pr of this.prs.values()) {
      // Never tell a follower to commit past what it is known to hold.
      const commit = Math.min(pr.match, this.log.committed);
      pr.sentCommit = Math.max(pr.sentCommit, commit);
      this.send({ type: MessageType.Heartbeat, to: pr.id, term: this.term, commit, context: ctx });
    }
  }

  /** Returns whether a message was sent. */
  private sendAppend(to: NodeId, sendIfEmpty = true): boolean {
    const pr = this.prs.get(to);
    if (!pr || pr.isPaused(this.cfg.maxInflightMsgs)) return false;
    const prevIndex = pr.next - 1;
    const prevTerm = this.log.term(prevIndex);
    const ents = this.log.slice(pr.next, this.log.lastIndex(), this.cfg.maxEntriesPerMsg, this.cfg.maxBytesPerMsg);
    if (prevTerm === undefined || ents === undefined) return this.sendSnapshot(pr);
    if (ents.length === 0 && !sendIfEmpty) return false;
    this.send({
      type: MessageType.Append,
      to,
      term: this.term,
      index: prevIndex,
      logTerm: prevTerm,
      entries: ents,
      commit: this.log.committed,
    });
    pr.sentCommit = Math.max(pr.sentCommit, Math.min(this.log.committed, prevIndex + ents.length));
    if (ents.length > 0 && pr.state === 'replicate') {
      const last = ents[ents.length - 1].index;
      pr.next = last + 1;
      pr.inflights.push(last);
    } else if (pr.state === 'probe') {
      pr.probeSent = true;
    }
    return true;
  }

  private sendSnapshot(pr: Progress): boolean {
    const snap = this.snapshot;
    raftAssert(snap !== undefined, `log compacted below ${pr.next} but no snapshot is held`);
    this.send({ type: MessageType.InstallSnapshot, to: pr.id, term: this.term, snapshot: snap });
    pr.becomeSnapshot(snap.metadata.index);
    return true;
  }

  /** §3.6.2: commit by counting replicas only for an entry of the current term. */
  private maybeCommit(): boolean {
    const matches: number[] = [];
    for (const v of this.conf().voters) {
      if (v === this.id) matches.push(this.log.stableIndex);
      else matches.push(this.prs.get(v)?.match ?? 0);
    }
    if (matches.length === 0) return false;
    matches.sort((a, b) => b - a);
    const candidate = matches[this.quorum() - 1];
    if (candidate <= this.log.committed || this.log.term(candidate) !== this.term) return false;
    const old = this.log.committed;
    this.log.commitTo(candidate);
    this.onCommitAdvanced(old);
    return true;
  }

  private onCommitAdvanced(oldCommit: number): void {
    for (let i = oldCommit + 1; i <= this.log.committed; i++) {
      const e = this.log.entry(i);
      if (e && e.term === this.term) this.uncommittedBytes = Math.max(0, this.uncommittedBytes - e.data.length);
    }
    if (this.log.term(this.log.committed) === this.term && this.readsWaitingForCommit.length > 0) {
      const waiting = this.readsWaitingForCommit;
      this.readsWaitingForCommit = [];
      for (const r of waiting) this.onReadRequest(r.ctx, r.from);
    }
    if (!this.isVoter(this.id) && this.confs[this.confs.length - 1].index <= this.log.committed) {
      // §4.2.2: a leader removed from the configuration steps down once that change commits.
      // Tell the followers about the commit first so the change takes hold everywhere.
      this.bcastAppend();
      this.becomeFollower(this.term, NO_NODE);
    }
  }

  // ---------------------------------------------------------------- proposals

  private refuse(refusal: RaftRefusal, message: string): never {
    throw new RaftRefusedError(refusal, message, this.leaderId);
  }

  private checkCanPropose(): void {
    if (this.role !== StateRole.Leader) this.refuse('NOT_LEADER', `node ${this.id} is not the leader (leader: ${this.leaderId || 'unknown'})`);
    if (this.leadTransferee !== NO_NODE) this.refuse('PROPOSAL_DROPPED', `leadership is being transferred to ${this.leadTransferee}`);
  }

  /** Append application data; returns the index and term it got. Throws RaftRefusedError. */
  propose(data: Uint8Array): { index: number; term: number } {
    this.checkCanPropose();
    if (this.uncommittedBytes > 0 && this.uncommittedBytes + data.length > this.cfg.maxUncommittedBytes) {
      this.refuse('TOO_MANY_UNCOMMITTED', `${this.uncommittedBytes} bytes proposed and not yet committed (limit ${this.cfg.maxUncommittedBytes})`);
    }
    const e = this.appendEntry(EntryType.Normal, data);
    this.uncommittedBytes += data.length;
    this.appendsDue = true;
    return { index: e.index, term: e.term };
  }

  /** Propose a single-server membership change (§4.1). Throws RaftRefusedError. */
  proposeConfChange(cc: ConfChange): { index: number; term: number } {
    this.checkCanPropose();
    if (this.pendingConfIndex > this.log.committed) {
      this.refuse('RECONFIGURATION_IN_PROGRESS', `a membership change (or the leader's first entry) at index ${this.pendingConfIndex} is not committed yet`);
    }
    const c = this.conf();
    const isVoter = c.voters.includes(cc.nodeId);
    const isLearner = c.learners.includes(cc.nodeId);
    if (cc.nodeId === NO_NODE) this.refuse('INVALID_MEMBERSHIP_CHANGE', 'node id 0 is reserved');
    switch (cc.type) {
      case ConfChangeType.AddLearner:
        if (isVoter || isLearner) this.refuse('INVALID_MEMBERSHIP_CHANGE', `node ${cc.nodeId} is already a ${isVoter ? 'voter' : 'learner'}`);
        break;
      case ConfChangeType.AddVoter: {
        if (isVoter) this.refuse('INVALID_MEMBERSHIP_CHANGE', `node ${cc.nodeId} is already a voter`);
        // §4.2.1: a new server joins as a non-voting learner and catches up first, so
        // adding it cannot stall commits.
        if (!isLearner) this.refuse('INVALID_MEMBERSHIP_CHANGE', `node ${cc.nodeId} must be added as a learner and catch up first`);
        const pr = this.prs.get(cc.nodeId)!;
        if (pr.match < this.log.committed) {
          this.refuse('LEARNER_NOT_CAUGHT_UP', `learner ${cc.nodeId} has match index ${pr.match}, commit index is ${this.log.committed}`);
        }
        break;
      }
      case ConfChangeType.RemoveNode:
        if (!isVoter && !isLearner) this.refuse('INVALID_MEMBERSHIP_CHANGE', `node ${cc.nodeId} is not a member`);
        if (isVoter && c.voters.length === 1) this.refuse('INVALID_MEMBERSHIP_CHANGE', 'cannot remove the last voter');
        break;
    }
    const e = this.appendEntry(EntryType.ConfChange, encodeConfChange(cc));
    this.pendingConfIndex = e.index;
    // A smaller quorum may commit what is already replicated; the broadcast below carries
    // the new entry and any new commit index.
    this.maybeCommit();
    this.bcastAppend();
    return { index: e.index, term: e.term };
  }

  /** Leader only: hand leadership to `to` (§3.10). Throws RaftRefusedError. */
  transferLeadership(to: NodeId): void {
    if (this.role !== StateRole.Leader) this.refuse('NOT_LEADER', `node ${this.id} is not the leader`);
    if (to === this.id) return;
    if (!this.isVoter(to)) this.refuse('INVALID_MEMBERSHIP_CHANGE', `node ${to} is not a voter`);
    if (this.leadTransferee === to) return;
    this.leadTransferee = to;
    // The transfer must finish within one election timeout or it is abandoned.
    this.electionElapsed = 0;
    const pr = this.prs.get(to)!;
    if (pr.match === this.log.lastIndex()) this.send({ type: MessageType.TimeoutNow, to, term: this.term });
    else this.sendAppend(to);
  }

  // ---------------------------------------------------------------- reads (§6.4)

  /** Request a linearizable read index; answered in a later Ready.readStates with the same ctx. */
  readIndex(requestCtx: string): void {
    if (this.role === StateRole.Leader) {
      this.onReadRequest(requestCtx, this.id);
    } else if (this.leaderId !== NO_NODE) {
      this.send({ type: MessageType.ReadIndex, to: this.leaderId, term: this.term, context: requestCtx });
    } else {
      this.refuse('NOT_LEADER', `node ${this.id} knows no leader to ask for a read index`);
    }
  }

  private onReadRequest(ctx: string, from: NodeId): void {
    if (this.readsWaitingForCommit.length + this.readsInFlight.length >= MAX_PENDING_READS) return; // dropped; the requester times out
    if (this.log.term(this.log.committed) !== this.term) {
      // The commit index is not known to be current until an entry of this term commits.
      this.readsWaitingForCommit.push({ ctx, from });
      return;
    }
    const read: PendingRead = { ctx, from, index: this.log.committed, acks: new Set([this.id]) };
    if (this.quorum() <= 1 && this.isVoter(this.id)) {
      this.releaseRead(read);
      return;
    }
    this.readsInFlight.push(read);
    this.bcastHeartbeat(ctx);
  }

  private onReadAck(ctx: string, from: NodeId): void {
    const pos = this.readsInFlight.findIndex((r) => r.ctx === ctx);
    if (pos < 0) return;
    const r = this.readsInFlight[pos];
    r.acks.add(from);
    const voters = this.conf().voters;
    const acks = voters.filter((v) => r.acks.has(v)).length;
    if (acks < this.quorum()) return;
    // A quorum confirmed leadership after every earlier request too: release them all.
    const released = this.readsInFlight.splice(0, pos + 1);
    for (const x of released) this.releaseRead(x);
  }

  private releaseRead(r: PendingRead): void {
    if (r.from === this.id) this.readStates.push({ index: r.index, requestCtx: r.ctx });
    else this.send({ type: MessageType.ReadIndexResp, to: r.from, term: this.term, index: r.index, context: r.ctx });
  }

  // ---------------------------------------------------------------- compaction

  /** After applying through `index`, replace the log prefix with a snapshot of the app state. */
  compact(index: number, data: Uint8Array): Snapshot {
    raftAssert(index <= this.log.applied, `compact(${index}) beyond applied ${this.log.applied}`);
    raftAssert(index > this.log.snapIndex, `compact(${index}) not after snapshot ${this.log.snapIndex}`);
    const term = this.log.term(index)!;
    const snap: Snapshot = { metadata: { index, term, confState: this.confAt(index) }, data };
    this.log.compactTo(index);
    const base = { index, conf: this.confAt(index) };
    this.confs = [base, ...this.confs.filter((c) => c.index > index)];
    this.snapshot = snap;
    return snap;
  }

  /** Committed, applied entries in [lo, hi] still in the in-memory log; undefined if lo was compacted. */
  entries(lo: number, hi: number): Entry[] | undefined {
    if (lo <= this.log.snapIndex) return undefined;
    return this.log.slice(lo, Math.min(hi, this.log.applied)) ?? [];
  }

  // ---------------------------------------------------------------- Ready / Advance

  private send(m: Partial<Message> & Pick<Message, 'type' | 'to' | 'term'>): void {
    if (m.type === MessageType.AppendResp && !m.reject && m.index !== undefined) {
      // Several Appends stepped between two Readys are acknowledged by one response: an
      // acceptance up to n covers every acceptance below it (the leader's match and
      // inflight window only move forward), so a follower answers once per fsync.
      const last = this.msgs[this.msgs.length - 1];
      if (last && last.type === MessageType.AppendResp && !last.reject && last.to === m.to && last.term === m.term && last.index <= m.index) {
        this.msgs.pop();
      }
    }
    this.msgs.push({
      from: this.id,
      logTerm: 0,
      index: 0,
      entries: [],
      commit: 0,
      reject: false,
      rejectHint: 0,
      context: '',
      ...m,
    });
  }

  private hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.log.committed };
  }

  private softState(): SoftState {
    return { leaderId: this.leaderId, role: this.role };
  }

  private applyUpTo(): number {
    return Math.min(this.log.committed, this.log.stableIndex);
  }

  hasReady(): boolean {
    const hs = this.hardState();
    const ss = this.softState();
    return (
      this.msgs.length > 0 ||
      this.appendsDue ||
      this.readStates.length > 0 ||
      this.pendingSnapshot !== undefined ||
      this.log.lastIndex() > this.log.stableIndex ||
      this.log.applied < this.applyUpTo() ||
      hs.term !== this.prevHardState.term ||
      hs.vote !== this.prevHardState.vote ||
      hs.commit !== this.prevHardState.commit ||
      ss.leaderId !== this.prevSoftState.leaderId ||
      ss.role !== this.prevSoftState.role
    );
  }

  ready(): Ready {
    if (this.appendsDue) this.flushAppends();
    const hs = this.hardState();
    const ss = this.softState();
    const hsChanged = hs.term !== this.prevHardState.term || hs.vote !== this.prevHardState.vote || hs.commit !== this.prevHardState.commit;
    const ssChanged = ss.leaderId !== this.prevSoftState.leaderId || ss.role !== this.prevSoftState.role;
    const entries = this.log.slice(this.log.stableIndex + 1, this.log.lastIndex()) ?? [];
    const committedEntries =
      this.log.applied < this.applyUpTo()
        ? this.log.slice(this.log.applied + 1, this.applyUpTo(), this.cfg.maxCommittedEntriesPerReady) ?? []
        : [];
    const rd: Ready = {
      softState: ssChanged ? ss : undefined,
      hardState: hsChanged ? hs : undefined,
      snapshot: this.pendingSnapshot,
      entries,
      messages: this.msgs,
      committedEntries,
      readStates: this.readStates,
      replicateBeforePersist:
        this.role === StateRole.Leader &&
        !this.pendingSnapshot &&
        hs.term === this.prevHardState.term &&
        hs.vote === this.prevHardState.vote,
    };
    this.msgs = [];
    this.readStates = [];
    return rd;
  }

  advance(rd: Ready): void {
    if (rd.softState) this.prevSoftState = rd.softState;
    if (rd.hardState) this.prevHardState = rd.hardState;
    if (rd.snapshot && rd.snapshot === this.pendingSnapshot) this.pendingSnapshot = undefined;
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      // Only if that entry is still ours (steps are not allowed in between, so it is).
      raftAssert(this.log.term(last.index) === last.term, `advance: entry ${last.index} changed while persisting`);
      this.log.stableIndex = Math.max(this.log.stableIndex, last.index);
    }
    if (rd.committedEntries.length > 0) {
      this.log.applied = rd.committedEntries[rd.committedEntries.length - 1].index;
    }
    if (this.role === StateRole.Leader && this.maybeCommit()) this.appendsDue = true;
  }

  // ---------------------------------------------------------------- inspection

  status(): RaftStatus {
    const progress: ProgressStatus[] = [];
    if (this.role === StateRole.Leader) {
      for (const pr of this.prs.values()) {
        progress.push({ id: pr.id, match: pr.match, next: pr.next, state: pr.state, isLearner: pr.isLearner, recentActive: pr.recentActive });
      }
      progress.sort((a, b) => a.id - b.id);
    }
    return {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.log.committed,
      applied: this.log.applied,
      lastIndex: this.log.lastIndex(),
      snapshotIndex: this.log.snapIndex,
      role: this.role,
      leaderId: this.leaderId,
      confState: this.conf(),
      leadTransferee: this.leadTransferee,
      progress,
    };
  }

  /** For tests and the simulator: the whole in-memory log after the snapshot. */
  logEntries(): Entry[] {
    return this.log.slice(this.log.firstIndex(), this.log.lastIndex()) ?? [];
  }
}
