import * as readline from 'node:readline';
import { Flotilla, FlotillaError, isFlotillaError } from '../client';
import type { Acks } from '../client';

// `flotilla produce` and `flotilla consume`: the client's producer and consumer on stdin and
// stdout. Progress and the summary go to stderr, so stdout carries only data.

/** Sends awaiting acknowledgement before reading more input (stdin is not read ahead of this). */
const SENDS_IN_FLIGHT_MAX = 10_000;
const PROGRESS_EVERY_MS = 500;

export interface ProduceOptions {
  readonly bootstrap: readonly string[];
  readonly topic: string;
  readonly key?: string;
  readonly acks: Acks;
  readonly idempotent: boolean;
  readonly count?: number;
  readonly sizeBytes: number;
  readonly lingerMs: number;
  /** Bound on each record's delivery and on waits for metadata and buffer space. */
  readonly timeoutMs: number;
  readonly stdin: NodeJS.ReadableStream;
  readonly stderr: NodeJS.WriteStream;
}

export interface ProduceSummary {
  readonly records: number;
  readonly acknowledged: number;
  readonly failed: number;
  readonly firstError?: FlotillaError;
}

/** Produces every line of stdin (or `count` generated records); never throws for a record that fails — it is counted. */
export async function produce(o: ProduceOptions): Promise<ProduceSummary> {
  const producer = new Flotilla({ brokers: o.bootstrap }).producer({
    acks: o.acks,
    idempotent: o.idempotent,
    lingerMs: o.lingerMs,
    deliveryTimeoutMs: o.timeoutMs,
    maxBlockMs: o.timeoutMs,
    timeoutMs: Math.min(30_000, o.timeoutMs),
    requestTimeoutMs: Math.min(35_000, o.timeoutMs),
  });
  await producer.connect();
  const startMs = Date.now();
  let records = 0;
  let acknowledged = 0;
  let failed = 0;
  let bytes = 0;
  let firstError: FlotillaError | undefined;
  const inFlight = new Set<Promise<void>>();
  const progress = o.stderr.isTTY ? setInterval(() => o.stderr.write(`\r${rate(acknowledged, bytes, startMs)}   `), PROGRESS_EVERY_MS) : undefined;

  const sendOne = async (value: Buffer | string): Promise<void> => {
    records++;
    bytes += typeof value === 'string' ? Buffer.byteLength(value) : value.length;
    const p = producer
      .send({ topic: o.topic, messages: [{ key: o.key ?? null, value }] })
      .then(
        () => {
          acknowledged++;
        },
        (e: unknown) => {
          failed++;
          firstError ??= isFlotillaError(e) ? e : new FlotillaError('UNKNOWN', String((e as Error)?.message ?? e));
        },
      )
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
    if (inFlight.size >= SENDS_IN_FLIGHT_MAX) await Promise.race(inFlight);
  };

  try {
    if (o.count !== undefined) {
      const value = Buffer.alloc(o.sizeBytes, 'x');
      for (let i = 0; i < o.count; i++) await sendOne(value);
    } else {
      const lines = readline.createInterface({ input: o.stdin, crlfDelay: Infinity });
      for await (const line of lines) await sendOne(line);
    }
    await Promise.allSettled([...inFlight]);
  } finally {
    if (progress) clearInterval(progress);
    await producer.disconnect().catch(() => undefined);
  }
  o.stderr.write(`${o.stderr.isTTY ? '\r' : ''}${rate(acknowledged, bytes, startMs)}${failed > 0 ? `; ${failed} not acknowledged` : ''}\n`);
  return { records, acknowledged, failed, ...(firstError ? { firstError } : {}) };
}

function rate(records: number, bytes: number, startMs: number): string {
  const s = Math.max(0.001, (Date.now() - startMs) / 1000);
  const mb = bytes / 1e6;
  return `produced ${records} records (${mb.toFixed(1)} MB) in ${s.toFixed(1)} s: ${Math.round(records / s)} records/s, ${(mb / s).toFixed(1)} MB/s`;
}

export interface ConsumeOptions {
  readonly bootstrap: readonly string[];
  readonly topic: string;
  readonly partition?: number;
  readonly from: 'beginning' | 'end' | number;
  readonly max?: number;
  /** Stop when nothing arrived for this long; undefined = run until max or a signal. */
  readonly idleTimeoutMs?: number;
  /** How long an unknown topic is asked about again before UNKNOWN_TOPIC. */
  readonly metadataWaitMs: number;
  readonly stdout: NodeJS.WritableStream;
}

/** Prints one record value per line; resolves with the number printed. */
export async function consume(o: ConsumeOptions): Promise<number> {
  const consumer = new Flotilla({ brokers: o.bootstrap }).consumer({ autoOffsetReset: o.from === 'beginning' ? 'earliest' : 'latest' });
  let printed = 0;
  let idle: NodeJS.Timeout | undefined;
  const stop = (): void => {
    void consumer.stop();
  };
  const armIdle = (): void => {
    if (o.idleTimeoutMs === undefined) return;
    if (idle) clearTimeout(idle);
    idle = setTimeout(stop, o.idleTimeoutMs);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await consumer.connect();
    const all = await consumer.partitionsFor(o.topic, o.metadataWaitMs);
    const partitions = o.partition !== undefined ? [o.partition] : all;
    if (o.partition !== undefined && !all.includes(o.partition)) {
      throw new FlotillaError('UNKNOWN_PARTITION', `topic ${o.topic} has no partition ${o.partition}`, { topic: o.topic, partition: o.partition });
    }
    consumer.assign(partitions.map((partition) => ({ topic: o.topic, partition })));
    for (const partition of partitions) {
      consumer.seek({ topic: o.topic, partition, offset: o.from === 'beginning' ? 'earliest' : o.from === 'end' ? 'latest' : o.from });
    }
    if (o.max === 0) return 0;
    armIdle();
    await consumer.run({
      eachMessage: async ({ message }) => {
        armIdle();
        const line = `${message.value?.toString('utf8') ?? ''}\n`;
        if (!o.stdout.write(line)) await new Promise<void>((resolve) => o.stdout.once('drain', () => resolve()));
        printed++;
        if (o.max !== undefined && printed >= o.max) stop();
      },
    });
    await consumer.join();
    return printed;
  } finally {
    if (idle) clearTimeout(idle);
    process.removeListener('SIGINT', stop);
    process.removeListener('SIGTERM', stop);
    await consumer.disconnect();
  }
}
