import type { Prng } from '../sim/prng';
import { isFlotillaError } from '../../client';
import type { ChaosCluster } from './cluster';
import { sleep } from './cluster';
import { checkMetadata, type MetadataCheck } from './checkers';
import type { HistoryRecorder, MetadataOp, Outcome } from './history';

// Workloads run while faults come and go, recording every operation in the history. The
// runner starts one, runs the fault schedule, stops it, waits for the cluster to heal, then
// asks it to read back the final state and judge the history.
//
// Today's workload is metadata: topics created and deleted through brokers and controllers.
// TODO(issue 3 §6): a ProduceConsumeWorkload — acks=all producers of unique values and
// idempotent producers with 5 batches in flight (`new Flotilla({ brokers }).producer(...)`),
// recording SendOps, then consumers reading every partition from the beginning after the
// faults heal (ReadOps); judged by checkLog (lost, duplicated, reordered, inconsistent
// offsets; duplicates allowed only for non-idempotent producers). It plugs in here as
// another Workload; nothing else in the runner changes.

export interface WorkloadContext {
  readonly cluster: ChaosCluster;
  readonly history: HistoryRecorder;
  readonly prng: Prng;
  readonly log: (line: string) => void;
}

export interface WorkloadResult {
  readonly name: string;
  readonly valid: boolean;
  /** One line for the summary. */
  readonly summary: string;
  readonly details: unknown;
}

export interface Workload {
  readonly name: string;
  /** Starts background operations; returns at once. */
  start(ctx: WorkloadContext): void;
  /** Stops invoking new operations and waits (bounded) for those in flight. */
  stop(): Promise<void>;
  /** After the faults healed: reads the final state and checks the history. */
  finish(ctx: WorkloadContext): Promise<WorkloadResult>;
}

export interface MetadataWorkloadOptions {
  /** Topic names start with this (unique per run). */
  readonly prefix: string;
  readonly workers?: number;
  /** Pause between one worker's operations. */
  readonly intervalMs?: number;
  /** Bound on operations per worker. */
  readonly opsPerWorkerMax?: number;
}

const DESCRIBE_BATCH = 500;

/** Errors that say the operation definitely did not happen (Jepsen's `fail`). */
const DEFINITE_FAILURES = new Set([
  'INVALID_REQUEST',
  'INVALID_TOPIC_NAME',
  'TOPIC_ALREADY_EXISTS',
  'UNKNOWN_TOPIC',
  'INVALID_PARTITIONS',
  'INVALID_REPLICATION_FACTOR',
  'INVALID_CONFIG',
  'LIMIT_EXCEEDED',
]);

export function outcomeOf(e: unknown): { outcome: Outcome; error: string } {
  if (isFlotillaError(e)) return { outcome: DEFINITE_FAILURES.has(e.name) ? 'fail' : 'info', error: e.name };
  return { outcome: 'info', error: (e as Error)?.message ?? String(e) };
}

/**
 * Workers each create topics with unique names (1-3 partitions, replication factor 2, or 3
 * now and then — which fails definitely while a broker is fenced) and delete some of the
 * ones they created, each request sent first to a different node (brokers forward to the
 * active controller). Judged by checkMetadata: every acknowledged create exists at the end
 * with the id it was given, none twice, nothing deleted comes back, no failed create appears.
 */
export class MetadataWorkload implements Workload {
  readonly name = 'metadata';
  private stopping = false;
  private loops: Promise<void>[] = [];

  constructor(private readonly o: MetadataWorkloadOptions) {}

  start(ctx: WorkloadContext): void {
    const workers = this.o.workers ?? 3;
    for (let w = 0; w < workers; w++) this.loops.push(this.worker(ctx, w, ctx.prng.fork()));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(this.loops);
  }

  private async worker(ctx: WorkloadContext, process: number, prng: Prng): Promise<void> {
    const { cluster, history } = ctx;
    const created: string[] = [];
    const opsMax = this.o.opsPerWorkerMax ?? 5_000;
    for (let i = 0; i < opsMax && !this.stopping; i++) {
      const via = prng.pick(cluster.nodes);
      const deleting = created.length > 3 && prng.chance(0.25);
      const topic = deleting ? created.splice(prng.int(created.length), 1)[0] : `${this.o.prefix}-w${process}-${i}`;
      const invokeMs = history.now();
      let op: MetadataOp;
      try {
        const admin = await cluster.admin(via);
        if (deleting) {
          await admin.deleteTopic(topic);
          op = { kind: 'delete-topic', process, topic, via: via.name, invokeMs, completeMs: history.now(), outcome: 'ok' };
        } else {
          const t = await admin.createTopic({ name: topic, partitions: 1 + prng.int(3), replicationFactor: prng.chance(0.15) ? 3 : 2 });
          op = { kind: 'create-topic', process, topic, via: via.name, invokeMs, completeMs: history.now(), outcome: 'ok', topicId: t.topicId };
          created.push(topic);
        }
      } catch (e) {
        const { outcome, error } = outcomeOf(e);
        op = { kind: deleting ? 'delete-topic' : 'create-topic', process, topic, via: via.name, invokeMs, completeMs: history.now(), outcome, error };
        // An indeterminate create may exist: a later delete of it is a fair test too.
        if (!deleting && outcome === 'info') created.push(topic);
      }
      history.record(op);
      await sleep(this.o.intervalMs ?? 150);
    }
  }

  async finish(ctx: WorkloadContext): Promise<WorkloadResult> {
    // A linearizable read through the active controller, retried while the cluster settles.
    const admin = await ctx.cluster.admin(undefined, { totalTimeoutMs: 30_000, requestTimeoutMs: 5_000 });
    const names = await admin.listTopics();
    const ours = names.filter((n) => n.startsWith(`${this.o.prefix}-`));
    const finalTopics = new Map<string, string>();
    // DescribeTopics takes at most 1000 names per request.
    for (let i = 0; i < ours.length; i += DESCRIBE_BATCH) {
      for (const t of await admin.describeTopics(ours.slice(i, i + DESCRIBE_BATCH))) finalTopics.set(t.name, t.topicId);
    }
    const check: MetadataCheck = checkMetadata(ctx.history.operations(), ours, finalTopics);
    const summary =
      `creates ok=${check.creates.ok} fail=${check.creates.fail} info=${check.creates.info}, ` +
      `deletes ok=${check.deletes.ok} fail=${check.deletes.fail} info=${check.deletes.info}, ` +
      `lost=${check.lostCount} twice=${check.listedTwice.length + check.recreated.length} phantom=${check.phantoms.length} resurrected=${check.resurrected.length}`;
    return { name: this.name, valid: check.valid, summary, details: { ...check, finalTopics: ours.length } };
  }
}
