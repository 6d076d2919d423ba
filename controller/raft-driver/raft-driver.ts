// The Raft driver: the only code that knows about disks, gRPC and wall-clock time
// (STYLE.md "A pure consensus core, one driver that owns all I/O"). It owns one RaftNode
// and runs it from a single serial loop:
//
//   drain the inbox (ticks, received messages, proposals, reads, admin requests) into the core
//   while core.hasReady():
//     rd = core.ready()
//     1. storage.persist(rd)          snapshot + entries + hard state, ONE synced batch (the fsync)
//     2. send rd.messages             only after the fsync (votes/acks promise durable state)
//     3. apply rd.snapshot, then rd.committedEntries, to the StateMachine; serve readStates
//     4. core.advance(rd)
//     resolve waiters, report role changes, maybe take a snapshot, drain the inbox again
//
// Nothing calls step/tick/propose between ready() and advance(): everything that arrives
// while a Ready is being persisted waits in the inbox and goes into the next Ready — which
// is also group commit: proposals that arrive during one fsync share the next one.
//
// Controller addresses: the configured `voters` map, plus addresses replicated through the
// log by addController() (see driver-payload.ts) and carried inside every snapshot, so they
// survive restarts, compaction and catch-up by snapshot.
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  ConfChange,
  ConfChangeType,
  DEFAULT_RAFT_LIMITS,
  Entry,
  EntryType,
  Message,
  NO_NODE,
  RaftNode,
  RaftRefusedError,
  Ready,
  Snapshot,
  StateRole,
  decodeConfChange,
  isReplicationMessage,
} from '../raft';
import { FlotillaError } from '../../shared/errors/error-codes';
import { RaftStorage } from './raft-storage';
import { RaftTransport, TransportStats } from './raft-transport';
import { decodePayload, decodeSnapshotData, encodeAppPayload, encodePeerAddressPayload, encodeSnapshotData } from './driver-payload';

export interface StateMachine {
  /** Every committed Normal entry, in index order (empty data = the leader's no-op or a driver-internal record). */
  apply(index: number, term: number, data: Uint8Array): void;
  takeSnapshot(): Uint8Array;
  /**
   * Optional: capture the state as of the last applied index now, encode it later (over
   * several event-loop turns, so heartbeats keep flowing). Preferred when present.
   */
  snapshotLater?(): Promise<Uint8Array>;
  restoreSnapshot(index: number, data: Uint8Array): void;
}

export interface RaftDriverOptions {
  nodeId: number;
  /** Initial voters: id -> "host:port" (raft traffic goes to the same gRPC server as the controller API). Include this node's own address. */
  voters: Map<number, string>;
  dataDir: string;
  /** Default 50. */
  tickMs?: number;
  /** Default 8 (400–800 ms randomized). */
  electionTimeoutTicks?: number;
  /** Default 2 (100 ms). */
  heartbeatTimeoutTicks?: number;
  /** Default 10000. */
  snapshotEveryEntries?: number;
  /** Start with no configuration; wait to be added as a learner. */
  join?: boolean;
  logger: Logger;
  /** addController(): how long a learner may take to catch up before LEARNER_NOT_CAUGHT_UP. Default 60000. */
  catchUpTimeoutMs?: number;
  /** readIndex() and transferLeadership(): how long before REQUEST_TIMED_OUT. Default 5000. */
  requestTimeoutMs?: number;
}

export interface QuorumMember {
  id: number;
  address: string;
  matchIndex: number;
  lag: number;
}

export interface QuorumStatus {
  leaderId: number;
  term: number;
  commitIndex: number;
  appliedIndex: number;
  snapshotIndex: number;
  voters: QuorumMember[];
  learners: QuorumMember[];
}

export interface CommittedEntry {
  index: number;
  term: number;
  data: Uint8Array;
}

/**
 * `nextIndex` (an addition to the agreed contract) is where the next call should start:
 * entries without application data (no-ops, membership changes) are skipped, so the last
 * returned entry's index + 1 can be lower than nextIndex.
 */
export type CommittedRead = { entries: CommittedEntry[]; nextIndex: number } | { compacted: true; snapshotIndex: number };

/** Limit on events waiting for the loop (messages, proposals, reads). */
const INBOX_EVENTS_MAX = 16_384;
/** Ticks missed while the loop was busy (a slow fsync) are delivered late, but at most this many at once. */
const PENDING_TICKS_MAX = 4;
/** Limit on the entries scanned by one readCommitted(). */
const READ_COMMITTED_SCAN_MAX = 100_000;
const READ_COMMITTED_SLICE = 1024;
/** A persist slower than this is logged: it delays every vote, ack and commit. */
const SLOW_PERSIST_MS = 500;
/** Limit on addresses learnt from StreamHello frames. */
const HELLO_ADDRESSES_MAX = 1024;
const EMPTY = new Uint8Array(0);

type Resolver<T> = { resolve(v: T): void; reject(e: Error): void };

interface ProposalWaiter extends Resolver<{ index: number; term: number }> {
  index: number;
  term: number;
}

interface ReadWaiter extends Resolver<number> {
  ctx: string;
  /** Set once the core answered: the read is served when applied >= index. */
  index: number;
  timer: NodeJS.Timeout;
}

interface TransferWaiter extends Resolver<void> {
  to: number;
  timer: NodeJS.Timeout;
}

type InboxEvent =
  | { kind: 'message'; m: Message }
  | { kind: 'propose'; data: Uint8Array; waiter: Resolver<{ index: number; term: number }> }
  | { kind: 'confChange'; cc: ConfChange; waiter: Resolver<{ index: number; term: number }> }
  | { kind: 'read'; waiter: ReadWaiter }
  | { kind: 'transfer'; waiter: TransferWaiter };

export class RaftDriver {
  private readonly tickMs: number;
  /** heartbeatTimeoutTicks x tickMs: how often a leader busy persisting still heartbeats. */
  private readonly heartbeatIntervalMs: number;
  /**
   * While the loop awaits the persist of a Ready whose term is durable (replicateBeforePersist):
   * when the leader last sent heartbeats (the persist's start counts). Undefined otherwise.
   */
  private busySinceLastHeartbeatMs: number | undefined;
  private readonly snapshotEveryEntries: number;
  /** A background snapshot encoding is running (sm.snapshotLater). */
  private snapshotEncoding = false;
  /** A background snapshot, encoded and waiting to be installed by maybeCompact(). */
  private snapshotEncoded: { index: number; data: Uint8Array } | undefined;
  private readonly catchUpTimeoutMs: number;
  private readonly requestTimeoutMs: number;
  private readonly log: Logger;
  private readonly transport: RaftTransport;

  private inbox: InboxEvent[] = [];
  private pendingTicks = 0;
  private looping = false;
  private loopScheduled = false;
  private loopDone: Promise<void> = Promise.resolve();
  private ticker?: NodeJS.Timeout;
  private started = false;
  private stopping = false;
  private stopped?: Promise<void>;

  // The driver's own view, updated from Readys (readable at any time, also mid-Ready).
  private role: StateRole = StateRole.Follower;
  private leader = NO_NODE;
  private currentTerm: number;
  private commitIndex: number;
  private applied: number;
  private snapshotIndex: number;
  /** First index of this leader's term (its no-op): once applied, the leader is active. */
  private leaderStartIndex = Number.MAX_SAFE_INTEGER;

  private readonly proposals = new Map<number, ProposalWaiter>();
  private readonly reads = new Map<string, ReadWaiter>();
  private readSeq = 0;
  private readonly transfers = new Set<TransferWaiter>();
  private readonly roleCallbacks: ((isLeader: boolean, leaderId: number, term: number) => void)[] = [];
  private reported = { isLeader: false, leaderId: NO_NODE, term: -1 };

  /** Addresses replicated through the log and snapshots (authoritative). */
  private replicatedAddresses = new Map<number, string>();
  /** Addresses this leader has proposed but not yet applied. */
  private readonly proposedAddresses = new Map<number, string>();
  /** Addresses peers announced in their StreamHello (used only when nothing else is known). */
  private readonly helloAddresses = new Map<number, string>();

  private readonly counters = { inboxDropped: 0, snapshotsTaken: 0, snapshotsRestored: 0, busyHeartbeats: 0 };

  private constructor(
    private readonly opts: RaftDriverOptions,
    private readonly sm: StateMachine,
    private readonly storage: RaftStorage,
    private readonly core: RaftNode,
    restored: { term: number; commit: number; snapshotIndex: number },
  ) {
    this.tickMs = opts.tickMs ?? 50;
    this.heartbeatIntervalMs = (opts.heartbeatTimeoutTicks ?? 2) * this.tickMs;
    this.snapshotEveryEntries = opts.snapshotEveryEntries ?? 10_000;
    this.catchUpTimeoutMs = opts.catchUpTimeoutMs ?? 60_000;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 5_000;
    this.log = opts.logger.child({ component: 'raft-driver' });
    this.currentTerm = restored.term;
    this.commitIndex = restored.commit;
    this.applied = restored.snapshotIndex;
    this.snapshotIndex = restored.snapshotIndex;
    this.transport = new RaftTransport({
      nodeId: opts.nodeId,
      logger: this.log.child({ component: 'raft-transport' }),
      addressOf: (id) => this.peerAddress(id),
      onMessage: (m) => this.onPeerMessage(m),
      onPeerHello: (id, address) => {
        if (!this.peerAddress(id) && this.helloAddresses.size < HELLO_ADDRESSES_MAX) this.helloAddresses.set(id, address);
      },
    });
  }

  /**
   * Loads storage, restores the state machine from the snapshot, and re-applies the
   * committed entries after it, so `sm` reflects everything this node knows committed.
   */
  static async open(opts: RaftDriverOptions, sm: StateMachine): Promise<RaftDriver> {
    check(Number.isInteger(opts.nodeId) && opts.nodeId > 0, `nodeId must be a positive integer, got ${opts.nodeId}`);
    const electionTimeoutTicks = opts.electionTimeoutTicks ?? 8;
    const heartbeatTimeoutTicks = opts.heartbeatTimeoutTicks ?? 2;
    const storage = await RaftStorage.open(opts.dataDir);
    try {
      if (!opts.join && !opts.voters.has(opts.nodeId)) {
        // Harmless after the first start (the stored bootstrap wins); on a first start it
        // means this node waits to be added, as with `join`.
        opts.logger.warn({ nodeId: opts.nodeId }, 'this controller is not in the configured voters');
      }
      const bootstrap = opts.join ? { voters: [], learners: [] } : { voters: [...opts.voters.keys()].sort((a, b) => a - b), learners: [] };
      const state = await storage.load(bootstrap);
      const core = new RaftNode(
        {
          id: opts.nodeId,
          electionTimeoutTicks,
          heartbeatTimeoutTicks,
          random: Math.random,
          preVote: true,
          checkQuorum: true,
          ...DEFAULT_RAFT_LIMITS,
        },
        state,
      );
      const snapIndex = state.snapshot?.metadata.index ?? 0;
      const driver = new RaftDriver(opts, sm, storage, core, { term: state.hardState.term, commit: state.hardState.commit, snapshotIndex: snapIndex });
      if (state.snapshot) driver.restoreSnapshot(state.snapshot);
      // Re-apply the committed tail now: a Ready right after construction holds only
      // committed entries (no ticks have happened, so no messages yet).
      driver.looping = true;
      try {
        await driver.loop();
      } finally {
        driver.looping = false;
      }
      driver.log.info(
        { nodeId: opts.nodeId, term: driver.currentTerm, snapshotIndex: snapIndex, applied: driver.applied, lastIndex: storage.range().lastIndex, join: !!opts.join },
        'raft driver opened',
      );
      return driver;
    } catch (err) {
      await storage.close().catch(() => undefined);
      throw err;
    }
  }

  /** Adds the RaftTransport service to `server` (the controller's gRPC server). */
  registerService(server: grpc.Server): void {
    this.transport.addTo(server);
  }

  /** Starts ticking and connecting to peers. */
  start(): void {
    if (this.started || this.stopping) return;
    this.started = true;
    this.ticker = setInterval(() => this.onTick(), this.tickMs);
    const conf = this.core.status().confState;
    for (const id of [...conf.voters, ...conf.learners]) this.transport.connect(id);
    this.kick();
  }

  /** Stops ticking, finishes the Ready in progress, fails every waiter, closes streams and the db. */
  stop(): Promise<void> {
    if (!this.stopped) this.stopped = this.doStop();
    return this.stopped;
  }

  /**
   * Resolves after the entry is committed AND applied locally. Rejects NOT_CONTROLLER
   * (details: leaderId) on a non-leader; NOT_CONTROLLER or PROPOSAL_DROPPED if leadership is
   * lost before commit or the entry is overwritten (the entry may still commit later under
   * a new leader: a rejection means "unknown outcome", as in Kafka).
   */
  propose(data: Uint8Array): Promise<{ index: number; term: number }> {
    return new Promise((resolve, reject) => {
      const refusal = this.refuseRequest();
      if (refusal) return reject(refusal);
      this.enqueue({ kind: 'propose', data: encodeAppPayload(data), waiter: { resolve, reject } });
    });
  }

  /** Resolves with a linearizable read index once applied >= it (thesis §6.4). Leader only. */
  readIndex(): Promise<number> {
    return new Promise((resolve, reject) => {
      const refusal = this.refuseRequest();
      if (refusal) return reject(refusal);
      const ctx = `r${this.opts.nodeId}-${++this.readSeq}`;
      const waiter: ReadWaiter = {
        ctx,
        index: -1,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (this.reads.delete(ctx)) reject(new FlotillaError('REQUEST_TIMED_OUT', `read index not confirmed within ${this.requestTimeoutMs} ms`));
        }, this.requestTimeoutMs),
      };
      this.reads.set(ctx, waiter);
      this.enqueue({ kind: 'read', waiter });
    });
  }

  /**
   * True once this node is the leader AND has applied every entry up to its own term's
   * first entry, i.e. the state machine reflects everything committed before this term
   * (KRaft: the active controller replays the log before it acts). leaderId() already
   * names this node a little earlier, from the moment it wins the election.
   */
  isLeader(): boolean {
    return this.role === StateRole.Leader && this.applied >= this.leaderStartIndex;
  }

  /** The leader this node knows of; 0 if unknown. */
  leaderId(): number {
    return this.leader;
  }

  term(): number {
    return this.currentTerm;
  }

  /**
   * Called (from the driver loop, after the Ready that caused it was applied) whenever
   * (isLeader(), leaderId(), term()) changes. A callback must not throw; errors are logged.
   */
  onRoleChange(cb: (isLeader: boolean, leaderId: number, term: number) => void): void {
    this.roleCallbacks.push(cb);
  }

  /** Address of a controller: replicated (addController) > proposed > configured > announced by the peer. */
  peerAddress(id: number): string | undefined {
    return this.replicatedAddresses.get(id) ?? this.proposedAddresses.get(id) ?? this.opts.voters.get(id) ?? this.helloAddresses.get(id);
  }

  quorumStatus(): QuorumStatus {
    const s = this.core.status();
    const isLeader = s.role === StateRole.Leader;
    const member = (id: number): QuorumMember => {
      let matchIndex = -1;
      if (isLeader) matchIndex = id === this.opts.nodeId ? s.lastIndex : (s.progress.find((p) => p.id === id)?.match ?? 0);
      return { id, address: this.peerAddress(id) ?? '', matchIndex, lag: isLeader ? s.lastIndex - matchIndex : -1 };
    };
    return {
      leaderId: this.leader,
      term: this.currentTerm,
      commitIndex: this.commitIndex,
      appliedIndex: this.applied,
      snapshotIndex: this.snapshotIndex,
      voters: s.confState.voters.map(member),
      learners: s.confState.learners.map(member),
    };
  }

  /**
   * Adds a controller: replicates its address, adds it as a learner, waits (at most
   * catchUpTimeoutMs) until it has caught up with the commit index, then promotes it to
   * voter. Idempotent: calling it again for a learner resumes at the catch-up step.
   */
  async addController(id: number, address: string): Promise<void> {
    if (!Number.isInteger(id) || id <= 0) throw new FlotillaError('INVALID_REQUEST', `controller id must be a positive integer, got ${id}`);
    if (!/^[^:\s]+:\d+$/.test(address)) throw new FlotillaError('INVALID_REQUEST', `controller address must be host:port, got "${address}"`);
    this.requireLeader();
    let conf = this.core.status().confState;
    if (conf.voters.includes(id)) {
      if (this.peerAddress(id) === address) return;
      throw new FlotillaError('INVALID_MEMBERSHIP_CHANGE', `controller ${id} is already a voter at ${this.peerAddress(id)}`);
    }
    const deadline = Date.now() + this.catchUpTimeoutMs;
    if (this.replicatedAddresses.get(id) !== address) {
      this.proposedAddresses.set(id, address);
      await this.proposeInternal(encodePeerAddressPayload(id, address));
    }
    conf = this.core.status().confState;
    if (!conf.learners.includes(id)) await this.proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: id });
    this.log.info({ id, address }, 'controller added as learner; waiting for it to catch up');

    // Promote once caught up. The core refuses AddVoter (LEARNER_NOT_CAUGHT_UP) while the
    // learner's match index is below the commit index; keep trying until the deadline.
    for (;;) {
      this.requireLeader();
      const s = this.core.status();
      const pr = s.progress.find((p) => p.id === id);
      if (pr && pr.match >= s.commit) {
        try {
          await this.proposeConfChange({ type: ConfChangeType.AddVoter, nodeId: id });
          this.log.info({ id, address }, 'controller promoted to voter');
          return;
        } catch (err) {
          if (!(err instanceof FlotillaError) || (err.name !== 'LEARNER_NOT_CAUGHT_UP' && err.name !== 'RECONFIGURATION_IN_PROGRESS')) throw err;
        }
      }
      if (Date.now() >= deadline) {
        throw new FlotillaError('LEARNER_NOT_CAUGHT_UP', `controller ${id} did not catch up within ${this.catchUpTimeoutMs} ms (match ${pr?.match ?? 0}, commit ${s.commit})`, { id });
      }
      await sleep(this.tickMs);
    }
  }

  /** Removes a voter or learner. Removing the leader itself makes it step down once the change commits (§4.2.2). */
  async removeController(id: number): Promise<void> {
    this.requireLeader();
    const conf = this.core.status().confState;
    if (!conf.voters.includes(id) && !conf.learners.includes(id)) return;
    await this.proposeConfChange({ type: ConfChangeType.RemoveNode, nodeId: id });
    this.log.info({ id }, 'controller removed');
  }

  /** Hands leadership to voter `to` (thesis §3.10); resolves once this node sees `to` as leader. */
  transferLeadership(to: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const refusal = this.refuseRequest();
      if (refusal) return reject(refusal);
      if (to === this.opts.nodeId) return resolve();
      const waiter: TransferWaiter = {
        to,
        resolve,
        reject,
        timer: setTimeout(() => {
          if (this.transfers.delete(waiter)) reject(new FlotillaError('REQUEST_TIMED_OUT', `leadership did not move to ${to} within ${this.requestTimeoutMs} ms`));
        }, this.requestTimeoutMs),
      };
      this.transfers.add(waiter);
      this.enqueue({ kind: 'transfer', waiter });
    });
  }

  /**
   * Committed, applied entries with application data from `fromIndex` on (at most
   * maxEntries), for brokers following the metadata log. No-ops, driver records and
   * membership changes are skipped; `nextIndex` says where to continue. If `fromIndex` was
   * compacted into a snapshot: { compacted, snapshotIndex }.
   */
  readCommitted(fromIndex: number, maxEntries: number): CommittedRead {
    const lo = Math.max(1, Math.floor(fromIndex));
    const max = Math.max(1, Math.floor(maxEntries));
    const entries: CommittedEntry[] = [];
    let next = lo;
    while (entries.length < max && next <= this.applied && next - lo < READ_COMMITTED_SCAN_MAX) {
      const slice = this.core.entries(next, Math.min(this.applied, next + READ_COMMITTED_SLICE - 1));
      if (slice === undefined) {
        if (next === lo) return { compacted: true, snapshotIndex: this.core.status().snapshotIndex };
        break; // compacted under us between two slices: return what we have
      }
      if (slice.length === 0) break;
      for (const e of slice) {
        if (entries.length >= max) break;
        next = e.index + 1;
        if (e.type !== EntryType.Normal) continue;
        const p = decodePayload(e.data);
        if (p.kind === 'app') entries.push({ index: e.index, term: e.term, data: p.data });
      }
    }
    return { entries, nextIndex: next };
  }

  /** Counters for metrics and tests. */
  stats(): { transport: TransportStats; inboxDropped: number; snapshotsTaken: number; snapshotsRestored: number; busyHeartbeats: number } {
    return { transport: { ...this.transport.stats }, ...this.counters };
  }

  // ------------------------------------------------------------------ inbox and loop

  private onTick(): void {
    this.pendingTicks = Math.min(this.pendingTicks + 1, PENDING_TICKS_MAX);
    if (this.busySinceLastHeartbeatMs !== undefined) {
      const now = Date.now();
      if (now - this.busySinceLastHeartbeatMs >= this.heartbeatIntervalMs) {
        this.busySinceLastHeartbeatMs = now;
        for (const m of this.core.heartbeatsWhileBusy()) this.transport.send(m);
        this.counters.busyHeartbeats++;
      }
    }
    this.kick();
  }

  private onPeerMessage(m: Message): void {
    if (this.stopping) return;
    if (this.inbox.length >= INBOX_EVENTS_MAX) {
      this.counters.inboxDropped++; // Raft tolerates loss; the sender retries
      return;
    }
    this.inbox.push({ kind: 'message', m });
    this.kick();
  }

  private enqueue(ev: Exclude<InboxEvent, { kind: 'message' }>): void {
    if (this.inbox.length >= INBOX_EVENTS_MAX) {
      if (ev.kind === 'read') this.reads.delete(ev.waiter.ctx);
      if (ev.kind === 'read' || ev.kind === 'transfer') clearTimeout(ev.waiter.timer);
      if (ev.kind === 'transfer') this.transfers.delete(ev.waiter);
      ev.waiter.reject(new FlotillaError('PROPOSAL_DROPPED', `raft driver inbox full (${INBOX_EVENTS_MAX} events)`));
      return;
    }
    this.inbox.push(ev);
    this.kick();
  }

  /** Schedules the loop. setImmediate lets a burst of arrivals share one drain (and one fsync). */
  private kick(): void {
    if (!this.started || this.looping || this.stopping || this.loopScheduled) return;
    this.loopScheduled = true;
    setImmediate(() => {
      this.loopScheduled = false;
      if (this.started && !this.looping && !this.stopping) this.runLoop();
    });
  }

  private runLoop(): void {
    this.looping = true;
    this.loopDone = this.loop().catch((err) => this.fatal(err));
  }

  private async loop(): Promise<void> {
    try {
      for (;;) {
        this.drainInbox();
        // Between Readys (never inside one): install a snapshot encoded in the background.
        await this.maybeCompact();
        if (this.stopping) return;
        if (!this.core.hasReady()) return;
        const rd = this.core.ready();
        // A leader's Appends leave before its own fsync (Ready step 2's exception, thesis
        // §10.2.1): the followers write while the leader does.
        const early = rd.replicateBeforePersist;
        if (early) {
          for (const m of rd.messages) {
            if (m.to !== this.opts.nodeId && isReplicationMessage(m)) this.transport.send(m);
          }
        }
        const startMs = Date.now();
        // While this write runs, the wall-clock ticker keeps a leader whose term is durable
        // heartbeating (onTick, RaftNode.heartbeatsWhileBusy): a slow fsync must not end its
        // term. The core is not stepped meanwhile, so what it says stays consistent.
        this.busySinceLastHeartbeatMs = early ? startMs : undefined;
        let synced: boolean;
        try {
          synced = await this.storage.persist(rd);
        } finally {
          this.busySinceLastHeartbeatMs = undefined;
        }
        const tookMs = Date.now() - startMs;
        if (tookMs >= SLOW_PERSIST_MS) this.log.warn({ tookMs, synced, entries: rd.entries.length, snapshot: !!rd.snapshot }, synced ? 'slow fsync' : 'slow unsynced write');
        for (const m of rd.messages) {
          if (m.to !== this.opts.nodeId && !(early && isReplicationMessage(m))) this.transport.send(m);
        }
        this.applyReady(rd);
        this.core.advance(rd);
        this.afterAdvance();
        if (this.stopping) return;
        await this.maybeSnapshot();
        if (this.stopping) return;
      }
    } finally {
      // Cleared in the same synchronous step as the last hasReady() check (not in a later
      // .then), so a request made by a promise continuation right after still kicks a loop.
      this.looping = false;
    }
  }

  private drainInbox(): void {
    const ticks = this.pendingTicks;
    this.pendingTicks = 0;
    for (let i = 0; i < ticks; i++) this.core.tick();
    const events = this.inbox;
    this.inbox = [];
    for (const ev of events) {
      switch (ev.kind) {
        case 'message':
          this.core.step(ev.m);
          break;
        case 'propose':
        case 'confChange':
          try {
            const r = ev.kind === 'propose' ? this.core.propose(ev.data) : this.core.proposeConfChange(ev.cc);
            this.proposals.set(r.index, { ...ev.waiter, index: r.index, term: r.term });
          } catch (err) {
            ev.waiter.reject(this.refusalError(err));
          }
          break;
        case 'read':
          if (!this.reads.has(ev.waiter.ctx)) break; // timed out while queued
          try {
            // If the core stepped down earlier in this drain it forwards the request to the
            // new leader (a follower read); the answer is just as linearizable.
            this.core.readIndex(ev.waiter.ctx);
          } catch (err) {
            this.reads.delete(ev.waiter.ctx);
            clearTimeout(ev.waiter.timer);
            ev.waiter.reject(this.refusalError(err));
          }
          break;
        case 'transfer':
          try {
            this.core.transferLeadership(ev.waiter.to);
          } catch (err) {
            if (this.transfers.delete(ev.waiter)) {
              clearTimeout(ev.waiter.timer);
              ev.waiter.reject(this.refusalError(err));
            }
          }
          break;
      }
    }
  }

  /** Step 3 of the Ready contract: snapshot, then committed entries, then read states. */
  private applyReady(rd: Ready): void {
    if (rd.softState) {
      const wasLeader = this.role === StateRole.Leader;
      this.role = rd.softState.role;
      this.leader = rd.softState.leaderId;
      if (this.role === StateRole.Leader && !wasLeader) {
        // The new leader's no-op is the last entry of this Ready's append.
        this.leaderStartIndex = rd.entries.length > 0 ? rd.entries[rd.entries.length - 1].index : this.core.status().lastIndex;
        this.log.info({ term: rd.hardState?.term ?? this.currentTerm, leaderStartIndex: this.leaderStartIndex }, 'became leader');
      } else if (this.role !== StateRole.Leader) {
        this.leaderStartIndex = Number.MAX_SAFE_INTEGER;
      }
    }
    if (rd.hardState) {
      this.currentTerm = rd.hardState.term;
      this.commitIndex = rd.hardState.commit;
    }
    if (rd.snapshot) this.restoreSnapshot(rd.snapshot);
    for (const e of rd.committedEntries) this.applyEntry(e);
    for (const rs of rd.readStates) {
      const w = this.reads.get(rs.requestCtx);
      if (w) w.index = rs.index;
    }
    this.serveReads();
  }

  private applyEntry(e: Entry): void {
    check(e.index === this.applied + 1, `applying entry ${e.index} after ${this.applied}`);
    if (e.type === EntryType.Normal) {
      const p = decodePayload(e.data);
      if (p.kind === 'app') {
        this.sm.apply(e.index, e.term, p.data);
      } else {
        if (p.kind === 'peerAddress') {
          this.replicatedAddresses.set(p.id, p.address);
          this.proposedAddresses.delete(p.id);
        }
        this.sm.apply(e.index, e.term, EMPTY);
      }
    } else {
      this.onConfChangeApplied(decodeConfChange(e.data));
      // The state machine sees every index, so its offset (and reads waiting on it) move on.
      this.sm.apply(e.index, e.term, EMPTY);
    }
    this.applied = e.index;
    const w = this.proposals.get(e.index);
    if (w) {
      this.proposals.delete(e.index);
      if (w.term === e.term) w.resolve({ index: e.index, term: e.term });
      else w.reject(new FlotillaError('PROPOSAL_DROPPED', `entry ${e.index} of term ${w.term} was overwritten by term ${e.term}`));
    }
  }

  private onConfChangeApplied(cc: ConfChange): void {
    this.log.info({ type: ConfChangeType[cc.type], id: cc.nodeId }, 'membership change applied');
    if (cc.type === ConfChangeType.RemoveNode) {
      if (cc.nodeId === this.opts.nodeId) this.log.warn('this controller was removed from the quorum');
      else this.transport.closePeer(cc.nodeId);
    }
  }

  private restoreSnapshot(snap: Snapshot): void {
    const { addresses, appData } = decodeSnapshotData(snap.data);
    this.replicatedAddresses = addresses;
    this.sm.restoreSnapshot(snap.metadata.index, appData);
    this.applied = snap.metadata.index;
    this.snapshotIndex = snap.metadata.index;
    this.commitIndex = Math.max(this.commitIndex, snap.metadata.index);
    this.counters.snapshotsRestored++;
    for (const [index, w] of this.proposals) {
      if (index > snap.metadata.index) continue;
      this.proposals.delete(index);
      w.reject(new FlotillaError('PROPOSAL_DROPPED', `entry ${index} was replaced by a snapshot at ${snap.metadata.index}`));
    }
    this.log.info({ index: snap.metadata.index, term: snap.metadata.term, bytes: snap.data.length }, 'state machine restored from snapshot');
  }

  private serveReads(): void {
    for (const [ctx, w] of this.reads) {
      if (w.index < 0 || w.index > this.applied) continue;
      this.reads.delete(ctx);
      clearTimeout(w.timer);
      w.resolve(w.index);
    }
  }

  private afterAdvance(): void {
    if (this.role !== StateRole.Leader) {
      // Leadership lost: entries above the commit index may never commit (or may, under the
      // new leader — the caller cannot tell, so it must treat the outcome as unknown).
      for (const [index, w] of this.proposals) {
        if (index <= this.commitIndex) continue;
        this.proposals.delete(index);
        w.reject(this.notController(`leadership lost before entry ${index} committed`));
      }
      // Reads the core had not answered will never be answered by it.
      for (const [ctx, w] of this.reads) {
        if (w.index >= 0) continue;
        this.reads.delete(ctx);
        clearTimeout(w.timer);
        w.reject(this.notController('leadership lost before the read index was confirmed'));
      }
    }
    // A leader never truncates its own log, so a proposal still pending while we lead
    // (even one from an earlier term of ours) is resolved or rejected by applyEntry.
    for (const w of [...this.transfers]) {
      if (this.leader !== w.to) continue;
      this.transfers.delete(w);
      clearTimeout(w.timer);
      w.resolve();
    }
    this.reportRoleChange();
  }

  /**
   * Snapshot policy: compact after every snapshotEveryEntries applied entries. With
   * sm.snapshotLater the state is captured now and encoded in the background; maybeCompact()
   * installs it at the top of a later loop turn.
   */
  private async maybeSnapshot(): Promise<void> {
    if (this.applied - this.snapshotIndex < this.snapshotEveryEntries) return;
    if (this.sm.snapshotLater) {
      if (this.snapshotEncoding || this.snapshotEncoded) return;
      const index = this.applied;
      this.snapshotEncoding = true;
      this.sm.snapshotLater().then(
        (data) => {
          this.snapshotEncoding = false;
          this.snapshotEncoded = { index, data };
          this.kick();
        },
        (err: unknown) => {
          this.snapshotEncoding = false;
          this.log.error({ err, index }, 'snapshot encoding failed; will retry at the next threshold');
        },
      );
      return;
    }
    await this.compactAt(this.applied, this.sm.takeSnapshot());
  }

  private async maybeCompact(): Promise<void> {
    const done = this.snapshotEncoded;
    if (!done) return;
    this.snapshotEncoded = undefined;
    // A snapshot installed from the leader meanwhile already covers this index.
    if (done.index <= this.snapshotIndex) return;
    await this.compactAt(done.index, done.data);
  }

  private async compactAt(index: number, appData: Uint8Array): Promise<void> {
    const data = encodeSnapshotData(this.addressesForSnapshot(), appData);
    const snap = this.core.compact(index, data);
    await this.storage.saveSnapshotAndCompact(snap);
    this.snapshotIndex = index;
    this.counters.snapshotsTaken++;
    this.log.info({ index, bytes: data.length }, 'snapshot taken; log compacted');
  }

  private addressesForSnapshot(): Map<number, string> {
    const all = new Map(this.opts.voters);
    for (const [id, a] of this.replicatedAddresses) all.set(id, a);
    return all;
  }

  private reportRoleChange(): void {
    const now = { isLeader: this.isLeader(), leaderId: this.leader, term: this.currentTerm };
    const r = this.reported;
    if (now.isLeader === r.isLeader && now.leaderId === r.leaderId && now.term === r.term) return;
    this.reported = now;
    if (now.isLeader !== r.isLeader || now.leaderId !== r.leaderId) this.log.info(now, 'raft role changed');
    for (const cb of this.roleCallbacks) {
      try {
        cb(now.isLeader, now.leaderId, now.term);
      } catch (err) {
        this.log.error({ err }, 'onRoleChange callback threw');
      }
    }
  }

  private async doStop(): Promise<void> {
    this.stopping = true;
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
    await this.loopDone;
    const err = () => new FlotillaError('CONTROLLER_UNAVAILABLE', `raft driver of controller ${this.opts.nodeId} stopped`);
    for (const w of this.proposals.values()) w.reject(err());
    this.proposals.clear();
    for (const w of this.reads.values()) {
      clearTimeout(w.timer);
      w.reject(err());
    }
    this.reads.clear();
    for (const w of this.transfers) {
      clearTimeout(w.timer);
      w.reject(err());
    }
    this.transfers.clear();
    for (const ev of this.inbox) if (ev.kind !== 'message') ev.waiter.reject(err());
    this.inbox = [];
    this.role = StateRole.Follower;
    this.leader = NO_NODE;
    this.reportRoleChange();
    await this.transport.stop();
    await this.storage.close();
    this.log.info('raft driver stopped');
  }

  /** A storage failure or a broken invariant: the node must not go on (STYLE.md "Errors"). */
  private fatal(err: unknown): void {
    this.log.fatal({ err }, 'raft driver loop failed; crashing');
    process.nextTick(() => {
      throw err;
    });
  }

  // ------------------------------------------------------------------ helpers

  private proposeInternal(data: Uint8Array): Promise<{ index: number; term: number }> {
    return new Promise((resolve, reject) => {
      const refusal = this.refuseRequest();
      if (refusal) return reject(refusal);
      this.enqueue({ kind: 'propose', data, waiter: { resolve, reject } });
    });
  }

  private proposeConfChange(cc: ConfChange): Promise<{ index: number; term: number }> {
    return new Promise((resolve, reject) => {
      const refusal = this.refuseRequest();
      if (refusal) return reject(refusal);
      this.enqueue({ kind: 'confChange', cc, waiter: { resolve, reject } });
    });
  }

  /** The error to fail a request with right away, if any. */
  private refuseRequest(): FlotillaError | undefined {
    if (this.stopping) return new FlotillaError('CONTROLLER_UNAVAILABLE', `raft driver of controller ${this.opts.nodeId} stopped`);
    if (!this.started) return new FlotillaError('CONTROLLER_UNAVAILABLE', `raft driver of controller ${this.opts.nodeId} not started`);
    if (this.role !== StateRole.Leader) return this.notController(`controller ${this.opts.nodeId} is not the leader`);
    return undefined;
  }

  private requireLeader(): void {
    const e = this.refuseRequest();
    if (e) throw e;
  }

  private notController(message: string): FlotillaError {
    const details: Record<string, string | number> = { leaderId: this.leader };
    const address = this.leader ? this.peerAddress(this.leader) : undefined;
    if (address) details.leaderAddress = address;
    return new FlotillaError('NOT_CONTROLLER', message, details);
  }

  /** Core refusals become typed errors; anything else is a bug and propagates (crash). */
  private refusalError(err: unknown): FlotillaError {
    if (!(err instanceof RaftRefusedError)) throw err;
    switch (err.refusal) {
      case 'NOT_LEADER':
        return this.notController(err.message);
      case 'PROPOSAL_DROPPED':
      case 'TOO_MANY_UNCOMMITTED':
        return new FlotillaError('PROPOSAL_DROPPED', err.message, { reason: err.refusal }, { cause: err });
      default:
        return new FlotillaError(err.refusal, err.message, { leaderId: err.leaderId }, { cause: err });
    }
  }
}

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(`raft driver: ${message}`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
