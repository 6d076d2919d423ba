import * as grpc from '@grpc/grpc-js';
import { brokerClientConstructor } from '../../broker/replica/replica-fetcher';
import { FlotillaError, errorNameForCode } from '../../shared/errors/error-codes';
import { fromGrpcError } from '../../shared/rpc/grpc-errors';
import { decodeRecordBatches, encodeRecordBatch } from '../../shared/records/record-batch';

// A small test client for flotilla.broker.Broker (proto/broker.proto): batches encoded with
// shared/records, calls made directly on the gRPC service — no client/ code, so the broker's
// side of the contract is what is tested. Refusals come back as FlotillaError (the trailing
// metadata), per-partition errors as { name } on the results.

const MAX = 101 * 1024 * 1024;

export interface WireError {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

export interface ProduceResult {
  topic: string;
  partition: number;
  baseOffset: number;
  logAppendTimeMs: number;
  logStartOffset: number;
  error: WireError | null;
}

export interface FetchResult {
  topic: string;
  partition: number;
  error: WireError | null;
  highWatermark: number;
  logStartOffset: number;
  records: Buffer;
  divergingEpoch: { epoch: number; endOffset: number } | null;
  leaderEpoch: number;
}

export interface MetadataResponse {
  brokers: { brokerId: number; host: string; port: number; fenced: boolean }[];
  topics: { name: string; topicId: string; partitions: { partition: number; leader: number; leaderEpoch: number; replicas: number[]; isr: number[] }[]; error: WireError | null }[];
  metadataOffset: number;
  responderId: number;
}

/** A batch of string values (keys k<i>), timestamps from `timestampMs`. */
export function batchOf(values: readonly string[], timestampMs = Date.now()): Buffer {
  return encodeRecordBatch({ records: values.map((v, i) => ({ key: Buffer.from(`k${i}`), value: Buffer.from(v), timestampMs: timestampMs + i })) });
}

/** Offsets and values of every record in `records`. */
export function recordsOf(records: Buffer): { offset: number; value: string }[] {
  const out: { offset: number; value: string }[] = [];
  for (const b of decodeRecordBatches(records)) for (const r of b.records) out.push({ offset: r.offset, value: r.value?.toString() ?? '' });
  return out;
}

export class BrokerWire {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;

  constructor(readonly address: string) {
    const Ctor = brokerClientConstructor();
    this.client = new Ctor(address, grpc.credentials.createInsecure(), {
      'grpc.max_receive_message_length': MAX,
      'grpc.max_send_message_length': MAX,
      // Brokers are killed and restarted in tests: reconnect within a second, not two minutes.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1_000,
    }) as unknown as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  }

  metadata(topics: string[] = [], brokersOnly = false, timeoutMs = 20_000): Promise<MetadataResponse> {
    return this.unary('Metadata', { topics, brokersOnly }, timeoutMs);
  }

  produce(req: { acks: number; partitions: { topic: string; partition: number; records: Buffer }[]; timeoutMs?: number; correlationId?: number; transactionalId?: string }): Promise<{ correlationId: number; results: ProduceResult[] }> {
    return this.unary('Produce', req, 60_000);
  }

  fetch(req: {
    partitions: { topic: string; partition: number; fetchOffset: number; partitionMaxBytes?: number; currentLeaderEpoch?: number; lastFetchedEpoch?: number }[];
    maxWaitMs?: number;
    minBytes?: number;
    maxBytes?: number;
    replicaId?: number;
    replicaEpoch?: number;
  }): Promise<{ partitions: FetchResult[] }> {
    return this.unary(
      'Fetch',
      { replicaId: -1, ...req, partitions: req.partitions.map((p) => ({ currentLeaderEpoch: -1, lastFetchedEpoch: -1, ...p })) },
      (req.maxWaitMs ?? 0) + 30_000,
    );
  }

  listOffsets(partitions: { topic: string; partition: number; timestampMs: number; currentLeaderEpoch?: number }[]): Promise<{ partitions: { topic: string; partition: number; offset: number; timestampMs: number; error: WireError | null }[] }> {
    return this.unary('ListOffsets', { partitions: partitions.map((p) => ({ currentLeaderEpoch: -1, ...p })) });
  }

  /** Opens a ProduceStream; answers are collected by correlation id. */
  produceStream(): { send: (req: object) => void; answers: Map<number, { results: ProduceResult[]; error: WireError | null }>; order: number[]; end: () => Promise<void> } {
    const call = (this.client.ProduceStream as (md: grpc.Metadata) => grpc.ClientDuplexStream<object, { correlationId: number; results: ProduceResult[]; error: WireError | null }>).call(
      this.client,
      new grpc.Metadata(),
    );
    const answers = new Map<number, { results: ProduceResult[]; error: WireError | null }>();
    const order: number[] = [];
    const finished = new Promise<void>((resolve, reject) => {
      call.on('data', (res) => {
        answers.set(Number(res.correlationId), res);
        order.push(Number(res.correlationId));
      });
      call.on('end', () => resolve());
      call.on('error', (err) => reject(err));
    });
    return {
      send: (req) => call.write(req),
      answers,
      order,
      end: async () => {
        call.end();
        await finished;
      },
    };
  }

  close(): void {
    this.client.close();
  }

  private unary<T>(method: string, req: object, timeoutMs = 20_000): Promise<T> {
    return new Promise((resolve, reject) => {
      (this.client[method] as (r: object, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<T>) => void).call(
        this.client,
        req,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => (err ? reject(err.metadata?.get('flotilla-error-code')?.length ? fromGrpcError(err) : err) : resolve(res as T)),
      );
    });
  }
}

/** The name of a per-partition error, or null. */
export function errName(e: WireError | null | undefined): string | null {
  return e === null || e === undefined || e.code === 0 ? null : errorNameForCode(e.code);
}

/** Rejects unless `p` rejects with a FlotillaError named `name`; returns it. */
export async function expectRefused(p: Promise<unknown>, name: string): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof FlotillaError && e.name === name) return e;
    throw new Error(`expected ${name}, got ${(e as Error).name}: ${(e as Error).message}`);
  }
  throw new Error(`expected ${name}, got success`);
}

/**
 * Cluster-level helpers over a set of broker addresses: find the leader from metadata, produce
 * there, read a partition to its high watermark.
 */
export class WireCluster {
  private readonly wires = new Map<string, BrokerWire>();

  constructor(public addresses: string[]) {}

  wire(address: string): BrokerWire {
    let w = this.wires.get(address);
    if (w === undefined) this.wires.set(address, (w = new BrokerWire(address)));
    return w;
  }

  /** The leader's address and epoch per any reachable broker's metadata; null when none. */
  async leaderOf(topic: string, partition: number, via?: string): Promise<{ id: number; address: string; epoch: number; isr: number[] } | null> {
    for (const a of via ? [via] : this.addresses) {
      try {
        const md = await this.wire(a).metadata([topic]);
        const p = md.topics[0]?.partitions.find((x) => x.partition === partition);
        const b = md.brokers.find((x) => x.brokerId === p?.leader);
        if (p === undefined || b === undefined) return null;
        return { id: b.brokerId, address: `${b.host}:${b.port}`, epoch: p.leaderEpoch, isr: p.isr };
      } catch {
        // try the next broker
      }
    }
    return null;
  }

  /** Every record of the partition from `from` to the leader's high watermark, in order. */
  async readAll(topic: string, partition: number, from = 0, address?: string): Promise<{ offset: number; value: string }[]> {
    const leader = address ?? (await this.leaderOf(topic, partition))?.address;
    if (leader === undefined) throw new Error(`no leader for ${topic}-${partition}`);
    const out: { offset: number; value: string }[] = [];
    let next = from;
    for (let i = 0; i < 100_000; i++) {
      const res = await this.wire(leader).fetch({ partitions: [{ topic, partition, fetchOffset: next }], maxBytes: 4 * 1024 * 1024 });
      const r = res.partitions[0]!;
      if (errName(r.error) !== null) throw new FlotillaError(errName(r.error) as never, r.error!.message);
      const recs = recordsOf(r.records).filter((x) => x.offset >= next);
      for (const x of recs) if (x.offset >= r.highWatermark) throw new Error(`a consumer fetch returned offset ${x.offset} at or above the high watermark ${r.highWatermark}`);
      out.push(...recs);
      if (recs.length === 0) break;
      next = recs[recs.length - 1]!.offset + 1;
      if (next >= r.highWatermark) break;
    }
    return out;
  }

  close(): void {
    for (const w of this.wires.values()) w.close();
    this.wires.clear();
  }
}
