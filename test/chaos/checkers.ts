// Jepsen-style checkers over a chaos history (history.ts). Pure functions: no I/O, no
// clock; each returns what it found with enough detail to debug a failure, and a `valid`
// flag. Unit-tested on synthetic histories in checkers.test.ts.
//
//   checkMetadata       acknowledged topic creates exist at the end, none twice, no phantoms
//   checkLog            lost, duplicated, reordered (per partition), inconsistent offsets
//                       (for produce/consume histories; Jepsen's Kafka workload)
//   checkUnavailability per fault: operations failed, longest stretch without a success
//   checkLeaders        Raft election safety: at most one leader per term (thesis §3.6.3)
//   checkControllerLogs committed metadata identical on all controllers (log matching)

import type { ControllerLog, FaultRecord, LeaderObservation, MetadataOp, Op, Outcome, ReadOp, SendOp } from './history';

/** Most examples kept per anomaly kind in a result (the counts are exact). */
export const EXAMPLES_MAX = 20;

function pushBounded<T>(xs: T[], x: T): void {
  if (xs.length < EXAMPLES_MAX) xs.push(x);
}

// ------------------------------------------------------------------------------------------
// Metadata: topics created and deleted under faults

/** The topics that exist at the end: name -> topic id (from a linearizable read). */
export type FinalTopics = ReadonlyMap<string, string>;

export interface MetadataCheck {
  readonly valid: boolean;
  readonly creates: { ok: number; fail: number; info: number };
  readonly deletes: { ok: number; fail: number; info: number };
  /** Acknowledged creates (not deleted since) whose topic is missing at the end. */
  readonly lost: string[];
  readonly lostCount: number;
  /** A topic whose id at the end differs from the one its acknowledged create returned. */
  readonly recreated: Array<{ topic: string; ackedId: string; finalId: string }>;
  /** A name listed more than once at the end. */
  readonly listedTwice: string[];
  /** Topics present at the end whose every create failed definitely. */
  readonly phantoms: string[];
  /** Topics whose delete was acknowledged but that exist at the end. */
  readonly resurrected: string[];
}

/**
 * `finalNames` is the raw name list (to catch a name listed twice); `finalTopics` the same
 * as a map with ids. Only topics named in the history are judged (others are not ours).
 *
 * A create that answered TOPIC_ALREADY_EXISTS for a name no one else creates means an
 * earlier attempt of the same request (a client retry after a timeout) committed: the topic
 * is known to exist, as if acknowledged, but with no id to compare.
 */
export function checkMetadata(ops: readonly Op[], finalNames: readonly string[], finalTopics: FinalTopics): MetadataCheck {
  const meta = ops.filter((o): o is MetadataOp => o.kind === 'create-topic' || o.kind === 'delete-topic');
  const creates = { ok: 0, fail: 0, info: 0 };
  const deletes = { ok: 0, fail: 0, info: 0 };
  interface TopicFate {
    ackedIds: string[];
    knownCreated: boolean;
    createOutcomes: Set<string>;
    deleteOk: boolean;
    deleteMaybe: boolean;
  }
  const fates = new Map<string, TopicFate>();
  const fate = (t: string): TopicFate => {
    let f = fates.get(t);
    if (!f) fates.set(t, (f = { ackedIds: [], knownCreated: false, createOutcomes: new Set(), deleteOk: false, deleteMaybe: false }));
    return f;
  };
  for (const op of meta) {
    const f = fate(op.topic);
    if (op.kind === 'create-topic') {
      creates[op.outcome]++;
      const existsAnswer = op.outcome === 'fail' && op.error === 'TOPIC_ALREADY_EXISTS';
      f.createOutcomes.add(existsAnswer ? 'exists' : op.outcome);
      if (op.outcome === 'ok') {
        f.knownCreated = true;
        if (op.topicId) f.ackedIds.push(op.topicId);
      }
      if (existsAnswer) f.knownCreated = true;
    } else {
      deletes[op.outcome]++;
      // UNKNOWN_TOPIC: a retry of a delete that had committed, or never created: gone either way.
      if (op.outcome === 'ok' || (op.outcome === 'fail' && op.error === 'UNKNOWN_TOPIC')) f.deleteOk = true;
      if (op.outcome === 'info') f.deleteMaybe = true;
    }
  }

  const lost: string[] = [];
  let lostCount = 0;
  const recreated: MetadataCheck['recreated'] = [];
  const phantoms: string[] = [];
  const resurrected: string[] = [];
  for (const [topic, f] of fates) {
    const finalId = finalTopics.get(topic);
    const mayBeDeleted = f.deleteOk || f.deleteMaybe;
    if (f.knownCreated && !mayBeDeleted && finalId === undefined) {
      lostCount++;
      pushBounded(lost, topic);
    }
    if (finalId !== undefined) {
      for (const ackedId of new Set(f.ackedIds)) {
        if (ackedId !== finalId) pushBounded(recreated, { topic, ackedId, finalId });
      }
      if (new Set(f.ackedIds).size > 1) pushBounded(recreated, { topic, ackedId: f.ackedIds.join('|'), finalId });
      if (!f.knownCreated && f.createOutcomes.size > 0 && [...f.createOutcomes].every((o) => o === 'fail')) pushBounded(phantoms, topic);
      if (f.deleteOk) pushBounded(resurrected, topic);
    }
  }
  const seen = new Set<string>();
  const listedTwice: string[] = [];
  for (const n of finalNames) {
    if (seen.has(n)) pushBounded(listedTwice, n);
    seen.add(n);
  }
  return {
    valid: lostCount === 0 && recreated.length === 0 && listedTwice.length === 0 && phantoms.length === 0 && resurrected.length === 0,
    creates,
    deletes,
    lost,
    lostCount,
    recreated,
    listedTwice,
    phantoms,
    resurrected,
  };
}

// ------------------------------------------------------------------------------------------
// Records: sends and reads (Jepsen's Kafka queue checks)

export interface LogCheck {
  readonly valid: boolean;
  readonly acked: number;
  readonly read: number;
  /** Acknowledged, never read (after the faults healed and consumers read everything). */
  readonly lost: string[];
  readonly lostCount: number;
  /** A value read at more than one (partition, offset). */
  readonly duplicated: Array<{ value: string; at: string[] }>;
  readonly duplicatedCount: number;
  /**
   * Within a partition, one producer's value B acknowledged after its value A was
   * acknowledged and B invoked after that, yet B sits at a lower offset than A.
   */
  readonly reordered: Array<{ partition: string; first: string; second: string; firstOffset: number; secondOffset: number }>;
  readonly reorderedCount: number;
  /** One (partition, offset) read with two values, or a value acked at one offset and read at another. */
  readonly inconsistentOffsets: Array<{ at: string; values: string[] }>;
  readonly inconsistentOffsetsCount: number;
  /** Read values no send produced, or whose every send failed definitely. */
  readonly unexpected: string[];
  /** Values read whose send was `info` (indeterminate): allowed, counted for the report. */
  readonly recoveredIndeterminate: number;
}

/** `allowDuplicates`: acks=all producers without idempotence may duplicate on retry. */
export function checkLog(ops: readonly Op[], opts: { allowDuplicates?: boolean } = {}): LogCheck {
  const sends = ops.filter((o): o is SendOp => o.kind === 'send');
  const reads = ops.filter((o): o is ReadOp => o.kind === 'read');
  const key = (topic: string, partition: number): string => `${topic}-${partition}`;

  // Where each value was read, and what each (partition, offset) held.
  const readAt = new Map<string, Set<string>>();
  const offsetOf = new Map<string, Map<string, number>>(); // partition -> value -> lowest offset
  const valuesAt = new Map<string, Set<string>>();
  for (const r of reads) {
    const p = key(r.topic, r.partition);
    const at = `${p}@${r.offset}`;
    let s = readAt.get(r.value);
    if (!s) readAt.set(r.value, (s = new Set()));
    s.add(at);
    let v = valuesAt.get(at);
    if (!v) valuesAt.set(at, (v = new Set()));
    v.add(r.value);
    let m = offsetOf.get(p);
    if (!m) offsetOf.set(p, (m = new Map()));
    const prev = m.get(r.value);
    if (prev === undefined || r.offset < prev) m.set(r.value, r.offset);
  }

  const sendsOf = new Map<string, SendOp[]>();
  for (const s of sends) {
    let xs = sendsOf.get(s.value);
    if (!xs) sendsOf.set(s.value, (xs = []));
    xs.push(s);
  }

  const lost: string[] = [];
  let lostCount = 0;
  let acked = 0;
  const inconsistent: LogCheck['inconsistentOffsets'] = [];
  let inconsistentCount = 0;
  for (const [value, xs] of sendsOf) {
    const ok = xs.filter((s) => s.outcome === 'ok');
    if (ok.length === 0) continue;
    acked++;
    const where = readAt.get(value);
    if (!where) {
      lostCount++;
      pushBounded(lost, value);
      continue;
    }
    for (const s of ok) {
      if (s.partition === undefined || s.offset === undefined) continue;
      const at = `${key(s.topic, s.partition)}@${s.offset}`;
      if (!where.has(at)) {
        inconsistentCount++;
        pushBounded(inconsistent, { at, values: [`${value} (acked here, read at ${[...where].join(',')})`] });
      }
    }
  }
  for (const [at, values] of valuesAt) {
    if (values.size > 1) {
      inconsistentCount++;
      pushBounded(inconsistent, { at, values: [...values].sort() });
    }
  }

  const duplicated: LogCheck['duplicated'] = [];
  let duplicatedCount = 0;
  for (const [value, where] of readAt) {
    if (where.size > 1) {
      duplicatedCount++;
      pushBounded(duplicated, { value, at: [...where].sort() });
    }
  }

  // Per producer and partition, in acknowledgement order: a later value at a lower offset.
  const reordered: LogCheck['reordered'] = [];
  let reorderedCount = 0;
  const byProducerPartition = new Map<string, SendOp[]>();
  for (const s of sends) {
    if (s.outcome !== 'ok' || s.partition === undefined) continue;
    const k = `${s.process}/${key(s.topic, s.partition)}`;
    let xs = byProducerPartition.get(k);
    if (!xs) byProducerPartition.set(k, (xs = []));
    xs.push(s);
  }
  for (const [k, xs] of byProducerPartition) {
    const partition = k.slice(k.indexOf('/') + 1);
    const offsets = offsetOf.get(partition);
    if (!offsets) continue;
    const ordered = [...xs].sort((a, b) => a.completeMs - b.completeMs);
    for (let i = 0; i < ordered.length; i++) {
      const a = ordered[i];
      const aOffset = offsets.get(a.value);
      if (aOffset === undefined) continue;
      for (let j = i + 1; j < ordered.length; j++) {
        const b = ordered[j];
        // Only pairs that did not overlap: B was sent after A was acknowledged.
        if (b.invokeMs < a.completeMs) continue;
        const bOffset = offsets.get(b.value);
        if (bOffset !== undefined && bOffset < aOffset) {
          reorderedCount++;
          pushBounded(reordered, { partition, first: a.value, second: b.value, firstOffset: aOffset, secondOffset: bOffset });
        }
      }
    }
  }

  const unexpected: string[] = [];
  let recoveredIndeterminate = 0;
  for (const value of readAt.keys()) {
    const xs = sendsOf.get(value);
    if (!xs || xs.every((s) => s.outcome === 'fail')) pushBounded(unexpected, value);
    else if (!xs.some((s) => s.outcome === 'ok')) recoveredIndeterminate++;
  }

  return {
    valid:
      lostCount === 0 &&
      inconsistentCount === 0 &&
      reorderedCount === 0 &&
      unexpected.length === 0 &&
      (opts.allowDuplicates === true || duplicatedCount === 0),
    acked,
    read: reads.length,
    lost,
    lostCount,
    duplicated,
    duplicatedCount,
    reordered,
    reorderedCount,
    inconsistentOffsets: inconsistent,
    inconsistentOffsetsCount: inconsistentCount,
    unexpected,
    recoveredIndeterminate,
  };
}

// ------------------------------------------------------------------------------------------
// Unavailability: how long operations failed around each fault

export interface FaultAvailability {
  readonly index: number;
  readonly type: string;
  readonly targetKind: string;
  readonly nodes: readonly string[];
  /** Operations invoked in [start, end) that did not succeed. */
  readonly failedOps: number;
  readonly okOps: number;
  /** Longest stretch in [start, end] with no operation completing ok. */
  readonly longestGapMs: number;
  /** From the heal to the first operation completing ok after it; absent if none did. */
  readonly firstOkAfterHealMs?: number;
  /** From the heal to the cluster being whole again (from the fault record). */
  readonly recoveryMs?: number;
}

export interface AvailabilityByType {
  readonly type: string;
  readonly faults: number;
  readonly failedOps: number;
  readonly longestGapMsMax: number;
  readonly recoveryMsMax?: number;
}

/**
 * The window of a fault runs from its start to its recovery (or heal, if it never
 * recovered; or the next fault's start, whichever is first). Only operations of the kinds
 * given count (e.g. the metadata writes; reads after the faults are no availability probe).
 * A read counts as an operation that succeeded at its `atMs` (a consumer's failed fetches
 * are not recorded, only what it read): pass only the reads of a consumer that was tailing
 * the log during the faults, while producers kept writing, to measure consume availability.
 */
export function checkUnavailability(
  ops: readonly Op[],
  faults: readonly FaultRecord[],
  kinds: ReadonlySet<Op['kind']> = new Set(['create-topic', 'delete-topic', 'send']),
): { perFault: FaultAvailability[]; perType: AvailabilityByType[] } {
  type Timed = { invokeMs: number; completeMs: number; outcome: Outcome };
  const timed: Timed[] = ops
    .filter((o) => kinds.has(o.kind))
    .map((o): Timed => (o.kind === 'read' ? { invokeMs: o.atMs, completeMs: o.atMs, outcome: 'ok' } : o))
    .sort((a, b) => a.completeMs - b.completeMs);
  const sortedFaults = [...faults].sort((a, b) => a.startMs - b.startMs);
  const perFault: FaultAvailability[] = sortedFaults.map((f, i) => {
    const next = sortedFaults[i + 1];
    let end = f.recoveredMs ?? f.healMs;
    if (next && next.startMs < end) end = next.startMs;
    if (end < f.startMs) end = f.startMs;
    let failedOps = 0;
    let okOps = 0;
    let lastOk = f.startMs;
    let longestGapMs = 0;
    let firstOkAfterHealMs: number | undefined;
    for (const o of timed) {
      if (o.invokeMs >= f.startMs && o.invokeMs < end) {
        if (o.outcome === 'ok') okOps++;
        else failedOps++;
      }
      if (o.outcome !== 'ok') continue;
      if (o.completeMs >= f.startMs && o.completeMs <= end) {
        longestGapMs = Math.max(longestGapMs, o.completeMs - lastOk);
        lastOk = o.completeMs;
      }
      if (firstOkAfterHealMs === undefined && o.completeMs >= f.healMs) firstOkAfterHealMs = o.completeMs - f.healMs;
    }
    longestGapMs = Math.max(longestGapMs, end - lastOk);
    return {
      index: f.index,
      type: f.type,
      targetKind: f.targetKind,
      nodes: f.nodes,
      failedOps,
      okOps,
      longestGapMs,
      ...(firstOkAfterHealMs !== undefined ? { firstOkAfterHealMs } : {}),
      ...(f.recoveredMs !== undefined ? { recoveryMs: f.recoveredMs - f.healMs } : {}),
    };
  });
  const types = new Map<string, FaultAvailability[]>();
  for (const p of perFault) {
    let xs = types.get(p.type);
    if (!xs) types.set(p.type, (xs = []));
    xs.push(p);
  }
  const perType: AvailabilityByType[] = [...types].map(([type, xs]) => {
    const recoveries = xs.map((x) => x.recoveryMs).filter((r): r is number => r !== undefined);
    return {
      type,
      faults: xs.length,
      failedOps: xs.reduce((n, x) => n + x.failedOps, 0),
      longestGapMsMax: Math.max(...xs.map((x) => x.longestGapMs)),
      ...(recoveries.length > 0 ? { recoveryMsMax: Math.max(...recoveries) } : {}),
    };
  });
  return { perFault, perType };
}

// ------------------------------------------------------------------------------------------
// Raft

export interface LeaderCheck {
  readonly valid: boolean;
  readonly terms: number;
  /** Terms in which two different controllers were seen leading. */
  readonly violations: Array<{ term: number; leaders: Array<{ leaderId: number; source: string }> }>;
}

/** Election safety (Raft thesis §3.6.3): at most one leader can be elected in a given term. */
export function checkLeaders(observations: readonly LeaderObservation[]): LeaderCheck {
  const byTerm = new Map<number, Map<number, string>>();
  for (const o of observations) {
    if (o.leaderId <= 0 || o.term <= 0) continue; // "no leader known"
    let m = byTerm.get(o.term);
    if (!m) byTerm.set(o.term, (m = new Map()));
    if (!m.has(o.leaderId)) m.set(o.leaderId, o.source);
  }
  const violations: LeaderCheck['violations'] = [];
  for (const [term, leaders] of [...byTerm].sort((a, b) => a[0] - b[0])) {
    if (leaders.size > 1) pushBounded(violations, { term, leaders: [...leaders].map(([leaderId, source]) => ({ leaderId, source })) });
  }
  return { valid: violations.length === 0, terms: byTerm.size, violations };
}

export interface ControllerLogCheck {
  readonly valid: boolean;
  readonly controllers: number;
  /** Offsets at which two controllers committed different entries (Log Matching, §3.5). */
  readonly divergent: Array<{ offset: number; entries: Array<{ controller: string; term: number; digest: string }> }>;
  /** Controllers whose image differs from another's at the same offset. */
  readonly imageMismatch: Array<{ offset: number; digests: Array<{ controller: string; digest: string }> }>;
  /** Not every controller reached the same image offset: compared what overlaps only. */
  readonly offsets: Array<{ controller: string; imageOffset: number }>;
  readonly sameFinalOffset: boolean;
}

/**
 * Committed metadata identical everywhere: every offset committed by two controllers holds
 * the same entry (term and bytes), and images at the same offset are the same. Controllers
 * that end at different offsets are reported (`sameFinalOffset`) — a check the caller makes
 * after waiting for them to converge.
 */
export function checkControllerLogs(logs: readonly ControllerLog[]): ControllerLogCheck {
  const byOffset = new Map<number, Array<{ controller: string; term: number; digest: string }>>();
  for (const l of logs) {
    for (const e of l.entries) {
      let xs = byOffset.get(e.offset);
      if (!xs) byOffset.set(e.offset, (xs = []));
      xs.push({ controller: l.controller, term: e.term, digest: e.digest });
    }
  }
  const divergent: ControllerLogCheck['divergent'] = [];
  for (const [offset, xs] of [...byOffset].sort((a, b) => a[0] - b[0])) {
    const first = xs[0];
    if (xs.some((x) => x.term !== first.term || x.digest !== first.digest)) pushBounded(divergent, { offset, entries: xs });
  }
  const imagesAt = new Map<number, Array<{ controller: string; digest: string }>>();
  for (const l of logs) {
    let xs = imagesAt.get(l.imageOffset);
    if (!xs) imagesAt.set(l.imageOffset, (xs = []));
    xs.push({ controller: l.controller, digest: l.imageDigest });
  }
  const imageMismatch: ControllerLogCheck['imageMismatch'] = [];
  for (const [offset, xs] of imagesAt) {
    if (new Set(xs.map((x) => x.digest)).size > 1) pushBounded(imageMismatch, { offset, digests: xs });
  }
  const sameFinalOffset = imagesAt.size <= 1;
  return {
    valid: divergent.length === 0 && imageMismatch.length === 0 && sameFinalOffset,
    controllers: logs.length,
    divergent,
    imageMismatch,
    offsets: logs.map((l) => ({ controller: l.controller, imageOffset: l.imageOffset })),
    sameFinalOffset,
  };
}
