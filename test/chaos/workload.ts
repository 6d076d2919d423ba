import type { Prng } from '../sim/prng';
import { Flotilla, isFlotillaError, type Consumer, type Producer } from '../../client';
import type { ChaosCluster } from './cluster';
import { sleep } from './cluster';
import { checkLog, checkMetadata, checkUnavailability, type AvailabilityByType, type LogCheck, type MetadataCheck } from './checkers';
import type { HistoryRecorder, MetadataOp, Op, Outcome, ReadOp, SendOp } from './history';

// Workloads run while faults come and go, recording every operation in the history. The
// runner starts one, runs the fault schedule, stops it, waits for the cluster to heal, then
// asks it to read back the final state and judge the history.
//
// Two workloads, run together by default:
//   MetadataWorkload        topics created and deleted through brokers and controllers
//   ProduceConsumeWorkload  acks=all and idempotent producers of unique values, a consumer
//                           tailing the log during the faults, and a read of everything
//                           from the beginning after they heal (Jepsen's Kafka queue test)

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
  /** How long the final read took (judged against the 30 s read-back bound). */
  readonly readBackMs?: number;
  /** Unavailability per fault type, by operation kind (e.g. produce, consume). */
  readonly availability?: Readonly<Record<string, readonly AvailabilityByType[]>>;
}

export interface Workload {
  readonly name: string;
  /** Before the faults: creates what the workload needs (bounded). */
  prepare?(ctx: WorkloadContext): Promise<void>;
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

// ------------------------------------------------------------------------------------------
// Records: produce under faults, read everything back after

export interface ProduceConsumeWorkloadOptions {
  /** The topic is `<prefix>-records`. */
  readonly prefix: string;
  /** acks=all producers without idempotence (duplicates on retry are allowed, reported). */
  readonly acksAllProducers?: number;
  /** Idempotent producers (acks=all, 5 batches in flight per partition): no duplicates. */
  readonly idempotentProducers?: number;
  /** Pause between one producer's sends (it does not wait for their answers). */
  readonly intervalMs?: number;
  /** Bound on sends one producer has unanswered; it waits for room beyond it. */
  readonly outstandingMax?: number;
  /** Bound on sends per producer. */
  readonly sendsPerProducerMax?: number;
  /** Bound on the final read (issue 4: readable within 30 s after the last heal). */
  readonly readBackTimeoutMs?: number;
}

export const RECORDS_PARTITIONS = 6;
export const RECORDS_REPLICATION_FACTOR = 3;
export const RECORDS_MIN_INSYNC = 2;
/** `process` ids: producers count from 0; the tailing consumer and the final reader apart. */
const TAIL_PROCESS = 1_000;
const READER_PROCESS = 2_000;
/** How long stop() waits for sends in flight: their delivery timeout plus a margin. */
const DELIVERY_TIMEOUT_MS = 25_000;
const STOP_WAIT_MS = DELIVERY_TIMEOUT_MS + 10_000;
const READ_POLL_MS = 250;

/** An error that says this send definitely reached no broker (Jepsen's `fail`). */
function sendFailedDefinitely(e: unknown, producerWasFatal: boolean): boolean {
  if (!isFlotillaError(e)) return false;
  // Refused before it entered the accumulator: the buffer was full the whole maxBlockMs.
  if (e.details.reason === 'buffer-full') return true;
  // Sent to a producer already stopped by a fatal error: rejected at once, never queued.
  return producerWasFatal;
}

interface ProducerSlot {
  producer: Producer;
  /** Set once a send failed with the producer's fatal error: later sends never leave. */
  fatal: boolean;
}

/**
 * acks=all producers of unique values (RF 3, min.insync.replicas 2, 6 partitions): some
 * idempotent (5 batches in flight per partition), some not. Every send is recorded with its
 * outcome: `ok` with the partition and offset the broker gave, `fail` when it definitely was
 * not written, `info` otherwise (a timeout or an error after retries: it may have been).
 * A consumer tails every partition from the beginning during the faults (its reads measure
 * consume availability and are judged too); after the faults heal a fresh consumer reads
 * every partition from the beginning up to the high watermark, bounded in time.
 *
 * Judged by checkLog: lost = 0, inconsistent offsets = 0, reordered = 0 always; duplicates =
 * 0 for the idempotent producers' values (those of plain acks=all producers are reported).
 */
export class ProduceConsumeWorkload implements Workload {
  readonly name = 'records';
  readonly topic: string;
  private stopping = false;
  private loops: Promise<void>[] = [];
  private readonly idempotentProcesses = new Set<number>();
  private tail: Consumer | undefined;

  constructor(private readonly o: ProduceConsumeWorkloadOptions) {
    this.topic = `${o.prefix}-records`;
  }

  private async client(ctx: WorkloadContext): Promise<Flotilla> {
    // Brokers at their (advertised) container IPs; the metadata they answer gives the rest.
    const brokers = await Promise.all(ctx.cluster.brokers().map((n) => ctx.cluster.address(n)));
    return new Flotilla({ brokers, totalTimeoutMs: 10_000, requestTimeoutMs: 5_000 });
  }

  async prepare(ctx: WorkloadContext): Promise<void> {
    const admin = await ctx.cluster.admin(undefined, { totalTimeoutMs: 30_000, requestTimeoutMs: 5_000 });
    await admin.createTopic({
      name: this.topic,
      partitions: RECORDS_PARTITIONS,
      replicationFactor: RECORDS_REPLICATION_FACTOR,
      configs: { 'min.insync.replicas': String(RECORDS_MIN_INSYNC) },
    });
    // Leaders elected and known to the brokers before the first send (bounded).
    const f = await this.client(ctx);
    const probe = f.consumer();
    try {
      await probe.connect();
      await probe.partitionsFor(this.topic, 30_000);
    } finally {
      await probe.disconnect().catch(() => undefined);
    }
  }

  start(ctx: WorkloadContext): void {
    const plain = this.o.acksAllProducers ?? 2;
    const idempotent = this.o.idempotentProducers ?? 2;
    for (let p = 0; p < plain + idempotent; p++) {
      const isIdempotent = p >= plain;
      if (isIdempotent) this.idempotentProcesses.add(p);
      this.loops.push(this.producerLoop(ctx, p, isIdempotent));
    }
    this.loops.push(this.tailLoop(ctx));
  }

  private async newProducer(ctx: WorkloadContext, idempotent: boolean): Promise<ProducerSlot> {
    const producer = (await this.client(ctx)).producer({
      ...(idempotent ? { qos: 'exactlyOnce' as const, maxInFlightRequests: 5 } : { qos: 'atLeastOnce' as const, maxInFlightRequests: 5 }),
      lingerMs: 2,
      timeoutMs: 5_000,
      requestTimeoutMs: 8_000,
      deliveryTimeoutMs: DELIVERY_TIMEOUT_MS,
      maxBlockMs: 10_000,
    });
    // connect() may fail while the cluster is broken: retried (bounded) by the caller's loop.
    await producer.connect();
    return { producer, fatal: false };
  }

  private async producerLoop(ctx: WorkloadContext, process: number, idempotent: boolean): Promise<void> {
    const { history } = ctx;
    const outstandingMax = this.o.outstandingMax ?? 50;
    const sendsMax = this.o.sendsPerProducerMax ?? 200_000;
    const pending = new Set<Promise<void>>();
    let slot: ProducerSlot | undefined;
    const retired: Producer[] = [];
    for (let seq = 0; seq < sendsMax && !this.stopping; ) {
      if (slot === undefined || slot.fatal) {
        if (slot) retired.push(slot.producer);
        try {
          slot = await this.newProducer(ctx, idempotent);
        } catch (e) {
          ctx.log(`  records: producer ${process} cannot connect (${(e as Error).message}); retrying`);
          slot = undefined;
          await sleep(1_000);
          continue;
        }
      }
      if (pending.size >= outstandingMax) {
        await Promise.race(pending);
        continue;
      }
      const value = `${idempotent ? 'i' : 'a'}${process}-${seq++}`;
      const s = slot;
      const wasFatal = s.fatal;
      const invokeMs = history.now();
      const done = s.producer.send({ topic: this.topic, messages: [{ key: value, value }] }).then(
        ([md]) => {
          const op: SendOp = { kind: 'send', process, value, topic: this.topic, invokeMs, completeMs: history.now(), outcome: 'ok', partition: md!.partition, offset: md!.offset };
          history.record(op);
        },
        (e: unknown) => {
          if (isFlotillaError(e) && e.details.fatal === 1) s.fatal = true;
          const definite = sendFailedDefinitely(e, wasFatal);
          const op: SendOp = {
            kind: 'send',
            process,
            value,
            topic: this.topic,
            invokeMs,
            completeMs: history.now(),
            outcome: definite ? 'fail' : 'info',
            error: isFlotillaError(e) ? e.name : String((e as Error)?.message ?? e),
          };
          history.record(op);
        },
      );
      pending.add(done);
      void done.then(() => pending.delete(done));
      await sleep(this.o.intervalMs ?? 40);
    }
    // Every send is answered within its delivery timeout; bounded all the same.
    await Promise.race([Promise.all(pending), sleep(STOP_WAIT_MS)]);
    for (const p of [...retired, ...(slot ? [slot.producer] : [])]) await Promise.race([p.disconnect().catch(() => undefined), sleep(5_000)]);
  }

  /** A consumer reading every partition from the beginning while the faults happen. */
  private async tailLoop(ctx: WorkloadContext): Promise<void> {
    const f = await this.client(ctx);
    const consumer = f.consumer({ autoOffsetReset: 'earliest', maxWaitMs: 200, requestTimeoutMs: 5_000 });
    this.tail = consumer;
    for (let i = 0; i < 100 && !this.stopping; i++) {
      try {
        await consumer.connect();
        break;
      } catch (e) {
        ctx.log(`  records: tailing consumer cannot connect (${(e as Error).message}); retrying`);
        await sleep(1_000);
      }
    }
    consumer.assign(Array.from({ length: RECORDS_PARTITIONS }, (_, partition) => ({ topic: this.topic, partition })));
    await consumer.run({
      eachMessage: ({ topic, partition, message }) => {
        const op: ReadOp = { kind: 'read', process: TAIL_PROCESS, topic, partition, offset: message.offset, value: message.value?.toString() ?? '', atMs: ctx.history.now() };
        ctx.history.record(op);
      },
    });
    // The loop ends at stop() (or on a fatal error, which the final read makes up for).
    await consumer.join().catch((e: Error) => ctx.log(`  records: tailing consumer ended: ${e.message}`));
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await this.tail?.disconnect().catch(() => undefined);
    await Promise.all(this.loops);
  }

  async finish(ctx: WorkloadContext): Promise<WorkloadResult> {
    const timeoutMs = this.o.readBackTimeoutMs ?? 30_000;
    const started = Date.now();
    const ops = ctx.history.operations();
    const acked = new Set(ops.filter((o): o is SendOp => o.kind === 'send' && o.outcome === 'ok').map((o) => o.value));
    const seen = new Set<string>();
    const f = await this.client(ctx);
    const admin = f.admin();
    const reader = f.consumer({ autoOffsetReset: 'earliest', maxWaitMs: 200, requestTimeoutMs: 5_000 });
    const nextOffset = new Map<number, number>();
    let complete = false;
    let why = '';
    try {
      await reader.connect();
      reader.assign(Array.from({ length: RECORDS_PARTITIONS }, (_, partition) => ({ topic: this.topic, partition })));
      await reader.run({
        eachMessage: ({ topic, partition, message }) => {
          const value = message.value?.toString() ?? '';
          seen.add(value);
          nextOffset.set(partition, Math.max(nextOffset.get(partition) ?? 0, message.offset + 1));
          const op: ReadOp = { kind: 'read', process: READER_PROCESS, topic, partition, offset: message.offset, value, atMs: ctx.history.now() };
          ctx.history.record(op);
        },
      });
      // Done when every partition is read up to its high watermark and every acknowledged
      // value has been seen; a high watermark that lags (a new leader not yet caught up with
      // its followers' positions) is asked again.
      for (let i = 0; Date.now() - started < timeoutMs && i < 10_000; i++) {
        const offsets = await admin.fetchTopicOffsets(this.topic, 5_000).catch((e: Error) => {
          why = e.message;
          return undefined;
        });
        if (offsets) {
          const behind = offsets.filter((p) => p.error !== undefined || (p.high ?? 0) > (nextOffset.get(p.partition) ?? 0));
          const missing = [...acked].filter((v) => !seen.has(v)).length;
          why = behind.length > 0 ? `partitions ${behind.map((p) => p.partition).join(',')} not read to their high watermark` : missing > 0 ? `${missing} acknowledged values not read yet` : '';
          if (behind.length === 0 && missing === 0) {
            complete = true;
            break;
          }
        }
        await sleep(READ_POLL_MS);
      }
    } finally {
      await reader.stop().catch(() => undefined);
      await reader.disconnect().catch(() => undefined);
      await admin.close().catch(() => undefined);
    }
    const readBackMs = Date.now() - started;
    if (!complete) ctx.log(`  records: read-back incomplete after ${readBackMs} ms: ${why}`);

    const all = ctx.history.operations();
    const whole = checkLog(all, { allowDuplicates: true });
    const idempotentValues = new Set(all.filter((o): o is SendOp => o.kind === 'send' && this.idempotentProcesses.has(o.process)).map((o) => o.value));
    const idempotentOnly = checkLog(
      all.filter((o) => (o.kind === 'send' && this.idempotentProcesses.has(o.process)) || (o.kind === 'read' && idempotentValues.has(o.value))),
    );
    const tailReads = all.filter((o): o is ReadOp => o.kind === 'read' && o.process === TAIL_PROCESS);
    const produceAvailability = checkUnavailability(all, ctx.history.faultRecords(), new Set<Op['kind']>(['send']));
    const consumeAvailability = checkUnavailability(tailReads, ctx.history.faultRecords(), new Set<Op['kind']>(['read']));
    const sends = all.filter((o): o is SendOp => o.kind === 'send');
    const count = (outcome: Outcome): number => sends.filter((s) => s.outcome === outcome).length;
    const valid = whole.valid && idempotentOnly.duplicatedCount === 0;
    const summary =
      `sends ok=${count('ok')} fail=${count('fail')} info=${count('info')}, read=${seen.size} values${complete ? '' : ' (INCOMPLETE)'} in ${(readBackMs / 1000).toFixed(1)}s, ` +
      `lost=${whole.lostCount} inconsistent=${whole.inconsistentOffsetsCount} reordered=${whole.reorderedCount} unexpected=${whole.unexpected.length} ` +
      `duplicated[idempotent]=${idempotentOnly.duplicatedCount} duplicated[acks=all]=${whole.duplicatedCount - idempotentOnly.duplicatedCount} indeterminate-read=${whole.recoveredIndeterminate}`;
    return {
      name: this.name,
      valid,
      summary,
      details: {
        topic: this.topic,
        readBack: { complete, ms: readBackMs, why },
        log: whole,
        idempotent: summarizeLog(idempotentOnly),
        availability: { produce: produceAvailability, consume: consumeAvailability },
      },
      readBackMs,
      availability: { produce: produceAvailability.perType, consume: consumeAvailability.perType },
    };
  }
}

function summarizeLog(c: LogCheck): Pick<LogCheck, 'valid' | 'acked' | 'duplicated' | 'duplicatedCount' | 'lostCount' | 'inconsistentOffsetsCount'> {
  return { valid: c.valid, acked: c.acked, duplicated: c.duplicated, duplicatedCount: c.duplicatedCount, lostCount: c.lostCount, inconsistentOffsetsCount: c.inconsistentOffsetsCount };
}
