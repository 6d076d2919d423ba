// The history of a chaos run, in the manner of Jepsen: every operation a workload invoked,
// with when it started, when it completed and how (ok / fail / info), and every fault the
// scheduler applied. The checkers (checkers.ts) read only this, so they are pure and can be
// tested on synthetic histories; the run writes it to the JSON report.
//
// Outcome semantics (Jepsen's): `ok` — the system acknowledged it, it happened; `fail` — the
// system said definitely not (a non-retriable error such as INVALID_REPLICATION_FACTOR);
// `info` — unknown (a timeout, an unavailable quorum): it may or may not have happened.

export type Outcome = 'ok' | 'fail' | 'info';

/** A metadata operation (the workload until produce/consume exists). */
export interface MetadataOp {
  readonly kind: 'create-topic' | 'delete-topic';
  /** The worker that ran it (one operation at a time per worker). */
  readonly process: number;
  readonly topic: string;
  /** Which node the client was pointed at first, e.g. "broker-2". */
  readonly via: string;
  readonly invokeMs: number;
  readonly completeMs: number;
  readonly outcome: Outcome;
  /** FlotillaError name when not ok. */
  readonly error?: string;
  /** The topic id a successful create returned. */
  readonly topicId?: string;
}

/** A send of one unique value (acks=all or idempotent producers). */
export interface SendOp {
  readonly kind: 'send';
  readonly process: number;
  readonly value: string;
  readonly topic: string;
  readonly invokeMs: number;
  readonly completeMs: number;
  readonly outcome: Outcome;
  readonly error?: string;
  /** Where the broker said it stored the value (when ok). */
  readonly partition?: number;
  readonly offset?: number;
}

/** One record a consumer read. */
export interface ReadOp {
  readonly kind: 'read';
  readonly process: number;
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly value: string;
  readonly atMs: number;
}

export type Op = MetadataOp | SendOp | ReadOp;

/** A fault as the scheduler applied it. */
export interface FaultRecord {
  readonly index: number;
  /** e.g. "kill", "pause-long", "isolate-outbound". */
  readonly type: string;
  /** What the target selector was asked for, e.g. "active-controller". */
  readonly targetKind: string;
  /** The nodes it hit, e.g. ["controller-2"]. */
  readonly nodes: readonly string[];
  readonly startMs: number;
  /** When the fault was lifted (the node unpaused, restarted, rules removed). */
  readonly healMs: number;
  /** When the cluster was whole again (leader, every broker unfenced); absent if never. */
  readonly recoveredMs?: number;
  readonly detail?: string;
  /** Why the cluster was not whole yet after the heal (e.g. "broker-2 is fenced"). */
  readonly waitedFor?: readonly string[];
}

/** Who some controller said led a term (a log line or a `quorum status` sample). */
export interface LeaderObservation {
  readonly term: number;
  readonly leaderId: number;
  /** e.g. "controller-2 log" or "quorum status via controller-1". */
  readonly source: string;
  readonly atMs?: number;
}

/** One committed metadata log entry of one controller, reduced to what must agree. */
export interface CommittedEntry {
  readonly offset: number;
  readonly term: number;
  /** sha256 of the encoded batch. */
  readonly digest: string;
}

/** What one controller had committed at the end of the run (FetchMetadata from 0). */
export interface ControllerLog {
  readonly controller: string;
  /** Entries after the controller's snapshot (if it sent one). */
  readonly entries: readonly CommittedEntry[];
  /** The image replayed from the stream: its offset and a digest of its records. */
  readonly imageOffset: number;
  readonly imageDigest: string;
}

/** Collects operations in completion order, with times relative to the run's start. */
export class HistoryRecorder {
  private readonly ops: Op[] = [];
  private readonly faults: FaultRecord[] = [];
  readonly startedAtMs = Date.now();

  constructor(private readonly opsMax = 1_000_000) {}

  /** Milliseconds since the run started (history times are relative). */
  now(): number {
    return Date.now() - this.startedAtMs;
  }

  record(op: Op): void {
    // A bound on what grows: a runaway workload must not exhaust memory.
    if (this.ops.length >= this.opsMax) throw new Error(`history is full (${this.opsMax} operations)`);
    this.ops.push(op);
  }

  recordFault(f: FaultRecord): void {
    this.faults.push(f);
  }

  operations(): readonly Op[] {
    return this.ops;
  }

  faultRecords(): readonly FaultRecord[] {
    return this.faults;
  }
}
