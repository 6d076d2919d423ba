import * as grpc from '@grpc/grpc-js';
import { ErrorName, FlotillaError } from '../../shared/errors/error-codes';
import { toGrpcError } from '../../shared/rpc/grpc-errors';
import { SERVER_OPTIONS, loadProto } from '../../shared/rpc/proto';
import { LogRecord, decodeRecordBatch, readBatchHeader, splitBatches } from '../../shared/records';
import { stampBatch } from '../../shared/records/record-batch';

// An in-memory cluster of fake brokers serving proto/broker.proto on 127.0.0.1, for client
// and CLI tests while the real broker is being built. Faithful where the client depends on
// it, like a real leader:
// - one shared log per partition (replication is instantaneous: high watermark = log end),
//   batches checked (CRC, framing) and stamped with offset and leader epoch as sent;
// - a partition leader map that tests move (leader epoch + 1); a non-leader refuses the whole
//   request NOT_LEADER_FOR_PARTITION with {leaderId, leaderEpoch, leaderAddress};
// - idempotent producers: per producer and partition the epoch and the last 5 batches'
//   sequence ranges; a retried batch is answered with its original offset and not appended,
//   a gap is OUT_OF_ORDER_SEQUENCE, an old epoch INVALID_PRODUCER_EPOCH (per partition);
// - Fetch long-polls until data or max_wait_ms, returns whole batches from the one holding
//   fetch_offset, OFFSET_OUT_OF_RANGE outside [log start, high watermark]; ListOffsets.
// Faults: scripted errors (refusals or per-partition), dropped responses (appended, never
// answered), held responses (to observe pipelining), unreachable brokers (server stopped).
// Every produce request is recorded (broker, partitions, sequence, outstanding count).

export interface StoredBatch {
  readonly baseOffset: number;
  readonly lastOffset: number;
  readonly bytes: Buffer;
}

interface ProducerEntry {
  epoch: number;
  /** Last 5 appended batches: sequence range and base offset. */
  readonly recent: { firstSeq: number; lastSeq: number; baseOffset: number }[];
}

export interface FakePartition {
  leader: number;
  leaderEpoch: number;
  readonly batches: StoredBatch[];
  logStartOffset: number;
  readonly producers: Map<number, ProducerEntry>;
}

export interface ProduceLogEntry {
  readonly brokerId: number;
  readonly correlationId: number;
  readonly acks: number;
  readonly stream: boolean;
  readonly partitions: { topic: string; partition: number; baseSequence: number; recordCount: number; producerId: number }[];
}

/** A scripted fault, consumed when it matches. */
export interface Fault {
  readonly method: 'Produce' | 'Fetch' | 'ListOffsets' | 'Metadata' | 'InitProducerId';
  readonly broker?: number;
  readonly topic?: string;
  readonly partition?: number;
  /** 'refuse': the whole request (stream: ProduceResponse.error); 'partition': in the result; 'drop': append, then never answer. */
  readonly kind: 'refuse' | 'partition' | 'drop';
  readonly error?: ErrorName;
  /** How many matching requests it applies to. Default 1. */
  times?: number;
  /** Matching requests let through before it applies. Default 0. */
  skip?: number;
}

function brokerServiceDefinition(): grpc.ServiceDefinition {
  const pkg = loadProto('broker.proto') as unknown as { flotilla: { broker: { Broker: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.broker.Broker.service;
}

type Wire = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export class FakeBroker {
  server: grpc.Server | undefined;
  constructor(
    readonly id: number,
    readonly port: number,
    readonly cluster: FakeCluster,
  ) {}
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }
}

export class FakeCluster {
  readonly brokers: FakeBroker[] = [];
  readonly topics = new Map<string, FakePartition[]>();
  readonly produceLog: ProduceLogEntry[] = [];
  readonly faults: Fault[] = [];
  readonly calls: { brokerId: number; method: string }[] = [];
  /** Max produce requests per partition received but not yet answered (held or pending). */
  readonly maxOutstanding = new Map<string, number>();
  private readonly outstanding = new Map<string, number>();
  private held: (() => void)[] | undefined;
  private waiters: (() => void)[] = [];
  private nextProducerId = 1000;

  static async start(o: { brokers?: number; topics?: Record<string, number> } = {}): Promise<FakeCluster> {
    const c = new FakeCluster();
    for (let i = 1; i <= (o.brokers ?? 1); i++) {
      const b = new FakeBroker(i, 0, c);
      c.brokers.push(await c.serve(b));
    }
    for (const [name, n] of Object.entries(o.topics ?? {})) c.createTopic(name, n);
    return c;
  }

  get addresses(): string[] {
    return this.brokers.map((b) => b.address);
  }

  broker(id: number): FakeBroker {
    const b = this.brokers.find((x) => x.id === id);
    if (!b) throw new Error(`no fake broker ${id}`);
    return b;
  }

  /** Leaders round-robin over the brokers unless given. */
  createTopic(name: string, partitions: number, leaders?: number[]): void {
    this.topics.set(
      name,
      Array.from({ length: partitions }, (_, i) => ({
        leader: leaders?.[i] ?? this.brokers[i % this.brokers.length]!.id,
        leaderEpoch: 0,
        batches: [],
        logStartOffset: 0,
        producers: new Map(),
      })),
    );
  }

  partition(topic: string, partition: number): FakePartition {
    const p = this.topics.get(topic)?.[partition];
    if (!p) throw new Error(`no fake partition ${topic}-${partition}`);
    return p;
  }

  /** Moves leadership (leader epoch + 1); -1 = no leader. */
  moveLeader(topic: string, partition: number, to: number): void {
    const p = this.partition(topic, partition);
    p.leader = to;
    p.leaderEpoch++;
  }

  /** The records of a partition's log, decoded, in offset order. */
  records(topic: string, partition: number): LogRecord[] {
    return this.partition(topic, partition).batches.flatMap((b) => decodeRecordBatch(b.bytes).records);
  }

  /** Values (UTF-8) of a partition's records, in offset order. */
  values(topic: string, partition: number): string[] {
    return this.records(topic, partition).map((r) => r.value?.toString('utf8') ?? '');
  }

  endOffset(topic: string, partition: number): number {
    const p = this.partition(topic, partition);
    const last = p.batches[p.batches.length - 1];
    return last ? last.lastOffset + 1 : p.logStartOffset;
  }

  /** Appends records as a producer would (for consumer tests), in one batch. */
  append(topic: string, partition: number, batch: Buffer): number {
    const p = this.partition(topic, partition);
    const bytes = Buffer.from(batch);
    const base = this.endOffset(topic, partition);
    stampBatch(bytes, 0, base, p.leaderEpoch);
    const h = readBatchHeader(bytes);
    p.batches.push({ baseOffset: base, lastOffset: h.lastOffset, bytes });
    this.notify();
    return base;
  }

  /** Retention: drops whole batches below `offset`. */
  truncateBefore(topic: string, partition: number, offset: number): void {
    const p = this.partition(topic, partition);
    while (p.batches.length > 0 && p.batches[0]!.lastOffset < offset) p.batches.shift();
    p.logStartOffset = p.batches[0]?.baseOffset ?? this.endOffset(topic, partition);
  }

  inject(f: Fault): void {
    this.faults.push({ ...f, times: f.times ?? 1, skip: f.skip ?? 0 });
  }

  /** Holds every produce answer until release() (the appends still happen). */
  holdProduceAnswers(): void {
    this.held ??= [];
  }

  release(): void {
    const h = this.held ?? [];
    this.held = undefined;
    for (const f of h) f();
  }

  /** Stops a broker's server (its address refuses connections) until restart(). */
  async stopBroker(id: number): Promise<void> {
    const b = this.broker(id);
    b.server?.forceShutdown();
    b.server = undefined;
  }

  async restartBroker(id: number): Promise<void> {
    const i = this.brokers.findIndex((x) => x.id === id);
    this.brokers[i] = await this.serve(this.brokers[i]!);
  }

  stop(): void {
    this.release();
    for (const b of this.brokers) b.server?.forceShutdown();
    for (const w of this.waiters.splice(0)) w();
  }

  // ---------------------------------------------------------------- server

  private async serve(b: FakeBroker): Promise<FakeBroker> {
    const server = new grpc.Server(SERVER_OPTIONS);
    server.addService(brokerServiceDefinition(), this.implementation(b.id));
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${b.port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const served = new FakeBroker(b.id, port, this);
    served.server = server;
    return served;
  }

  private takeFault(method: Fault['method'], brokerId: number, tps: { topic: string; partition: number }[], kinds: Fault['kind'][]): Fault | undefined {
    const i = this.faults.findIndex(
      (f) =>
        f.method === method &&
        kinds.includes(f.kind) &&
        (f.broker === undefined || f.broker === brokerId) &&
        (f.topic === undefined || tps.some((tp) => tp.topic === f.topic && (f.partition === undefined || tp.partition === f.partition))),
    );
    if (i < 0) return undefined;
    const f = this.faults[i]!;
    if (f.skip! > 0) {
      f.skip!--;
      return undefined;
    }
    if (--f.times! <= 0) this.faults.splice(i, 1);
    return f;
  }

  private implementation(brokerId: number): grpc.UntypedServiceImplementation {
    const unary =
      (method: Fault['method'], fn: (req: Wire) => Promise<Wire> | Wire) =>
      (call: grpc.ServerUnaryCall<Wire, Wire>, cb: grpc.sendUnaryData<Wire>): void => {
        this.calls.push({ brokerId, method });
        Promise.resolve()
          .then(() => {
            const f = this.takeFault(method, brokerId, (call.request.partitions ?? []) as { topic: string; partition: number }[], ['refuse']);
            if (f) throw new FlotillaError(f.error ?? 'UNKNOWN', `fake: injected ${f.error}`);
            return fn(call.request);
          })
          .then(
            (res) => cb(null, res),
            (err) => cb(toGrpcError(err)),
          );
      };
    return {
      Metadata: unary('Metadata', (req) => this.onMetadata(brokerId, req)),
      InitProducerId: unary('InitProducerId', () => ({ producerId: this.nextProducerId++, producerEpoch: 0 })),
      ListOffsets: unary('ListOffsets', (req) => this.onListOffsets(brokerId, req)),
      Fetch: unary('Fetch', (req) => this.onFetch(brokerId, req)),
      Produce: (call: grpc.ServerUnaryCall<Wire, Wire>, cb: grpc.sendUnaryData<Wire>) => {
        this.calls.push({ brokerId, method: 'Produce' });
        const out = this.onProduce(brokerId, call.request, false);
        if (out.refusal) {
          this.settle(out.tps);
          return cb(toGrpcError(out.refusal));
        }
        if (out.drop) return this.settle(out.tps);
        this.answer(out.tps, () => cb(null, out.response));
      },
      ProduceStream: (call: grpc.ServerDuplexStream<Wire, Wire>) => {
        call.on('data', (req: Wire) => {
          this.calls.push({ brokerId, method: 'ProduceStream' });
          const out = this.onProduce(brokerId, req, true);
          if (out.refusal) {
            const fe = out.refusal;
            this.settle(out.tps);
            call.write({ correlationId: req.correlationId, results: [], error: { code: fe.code, name: fe.name, message: fe.message, detailsJson: JSON.stringify(fe.details) } });
            return;
          }
          if (out.drop || req.acks === 0) return this.settle(out.tps);
          this.answer(out.tps, () => {
            if (!call.cancelled && call.writable) call.write(out.response!);
          });
        });
        call.on('end', () => call.end());
        call.on('error', () => undefined);
      },
    };
  }

  private answer(tps: string[], send: () => void): void {
    const go = (): void => {
      this.settle(tps);
      send();
    };
    if (this.held) this.held.push(go);
    else go();
  }

  private settle(tps: string[]): void {
    for (const k of tps) this.outstanding.set(k, (this.outstanding.get(k) ?? 1) - 1);
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private notLeader(topic: string, partition: number, p: FakePartition): FlotillaError {
    const leader = this.brokers.find((b) => b.id === p.leader);
    return new FlotillaError('NOT_LEADER_FOR_PARTITION', `fake: not the leader of ${topic}-${partition}`, {
      topic,
      partition,
      leaderId: leader ? leader.id : -1,
      leaderEpoch: p.leaderEpoch,
      leaderAddress: leader ? leader.address : '',
    });
  }

  private onMetadata(_brokerId: number, req: Wire): Wire {
    const names: string[] = req.topics?.length ? req.topics : [...this.topics.keys()];
    return {
      brokers: this.brokers.map((b) => ({ brokerId: b.id, host: '127.0.0.1', port: b.port, rack: '', fenced: false })),
      topics: [...names].sort().map((name) => {
        const ps = this.topics.get(name);
        if (!ps) return { name, topicId: '', partitions: [], error: { code: 12, name: 'UNKNOWN_TOPIC', message: `no topic ${name}`, detailsJson: '' } };
        return {
          name,
          topicId: `id-${name}`,
          partitions: ps.map((p, i) => ({ partition: i, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: this.brokers.map((b) => b.id), isr: this.brokers.map((b) => b.id) })),
        };
      }),
      metadataOffset: 1,
      responderId: _brokerId,
    };
  }

  private onProduce(brokerId: number, req: Wire, stream: boolean): { refusal?: FlotillaError; drop?: boolean; response?: Wire; tps: string[] } {
    const parts = (req.partitions ?? []) as { topic: string; partition: number; records: Buffer }[];
    const tps = parts.map((x) => `${x.topic}-${x.partition}`);
    for (const k of tps) {
      const n = (this.outstanding.get(k) ?? 0) + 1;
      this.outstanding.set(k, n);
      this.maxOutstanding.set(k, Math.max(this.maxOutstanding.get(k) ?? 0, n));
    }
    const entry: ProduceLogEntry = { brokerId, correlationId: req.correlationId, acks: req.acks, stream, partitions: [] };
    this.produceLog.push(entry);
    try {
      if (![-1, 0, 1].includes(req.acks)) throw new FlotillaError('INVALID_REQUIRED_ACKS', `acks ${req.acks}`);
      const decoded = parts.map((x) => {
        const ps = this.topics.get(x.topic);
        if (!ps) throw new FlotillaError('UNKNOWN_TOPIC', `fake: no topic ${x.topic}`, { topic: x.topic });
        const p = ps[x.partition];
        if (!p) throw new FlotillaError('UNKNOWN_PARTITION', `fake: no partition ${x.topic}-${x.partition}`, { topic: x.topic, partition: x.partition });
        if (p.leader !== brokerId) throw this.notLeader(x.topic, x.partition, p);
        const batches = splitBatches(Buffer.from(x.records)).map((b) => ({ bytes: Buffer.from(b), h: decodeRecordBatch(b) }));
        for (const b of batches) entry.partitions.push({ topic: x.topic, partition: x.partition, baseSequence: b.h.baseSequence, recordCount: b.h.recordCount, producerId: b.h.producerId });
        return { x, p, batches };
      });
      const f = this.takeFault('Produce', brokerId, parts, ['refuse']);
      if (f) throw new FlotillaError(f.error ?? 'UNKNOWN', `fake: injected ${f.error}`);
      const results = decoded.map(({ x, p, batches }) => {
        const pf = this.takeFault('Produce', brokerId, [x], ['partition']);
        if (pf && !ErrorCodeAfterAppend.has(pf.error!)) return this.partitionError(x, pf.error!);
        let baseOffset = -1;
        for (const b of batches) {
          const r = this.appendIdempotent(p, b.bytes, b.h.producerId, b.h.producerEpoch, b.h.baseSequence, b.h.recordCount);
          if (typeof r !== 'number') return { topic: x.topic, partition: x.partition, baseOffset: -1, logAppendTimeMs: -1, logStartOffset: p.logStartOffset, error: r };
          if (baseOffset < 0) baseOffset = r;
        }
        if (pf) return this.partitionError(x, pf.error!);
        return { topic: x.topic, partition: x.partition, baseOffset, logAppendTimeMs: -1, logStartOffset: p.logStartOffset };
      });
      const drop = this.takeFault('Produce', brokerId, parts, ['drop']);
      return { tps, drop: drop !== undefined, response: { correlationId: req.correlationId, results } };
    } catch (e) {
      const fe = e instanceof FlotillaError ? e : new FlotillaError('CORRUPT_RECORD', String((e as Error).message));
      return { tps, refusal: fe };
    }
  }

  private partitionError(x: { topic: string; partition: number }, name: ErrorName): Wire {
    return { topic: x.topic, partition: x.partition, baseOffset: -1, logAppendTimeMs: -1, logStartOffset: 0, error: { code: new FlotillaError(name, '').code, name, message: `fake: injected ${name}`, detailsJson: '' } };
  }

  /** Appends one batch as an idempotent-aware leader; returns its base offset or an Error message. */
  private appendIdempotent(p: FakePartition, bytes: Buffer, producerId: number, producerEpoch: number, baseSequence: number, count: number): number | Wire {
    const err = (name: ErrorName, message: string): Wire => ({ code: new FlotillaError(name, '').code, name, message, detailsJson: '' });
    if (producerId >= 0) {
      const lastSeq = baseSequence + count - 1;
      const st = p.producers.get(producerId);
      if (st) {
        if (producerEpoch < st.epoch) return err('INVALID_PRODUCER_EPOCH', `epoch ${producerEpoch} < ${st.epoch}`);
        const dup = st.recent.find((r) => r.firstSeq === baseSequence && r.lastSeq === lastSeq);
        if (producerEpoch === st.epoch && dup) return dup.baseOffset;
        const expected = producerEpoch > st.epoch ? 0 : st.recent[st.recent.length - 1]!.lastSeq + 1;
        if (baseSequence !== expected) return err('OUT_OF_ORDER_SEQUENCE', `sequence ${baseSequence}, expected ${expected}`);
      } else if (baseSequence !== 0) {
        return err('UNKNOWN_PRODUCER_ID', `no state for producer ${producerId} and sequence ${baseSequence} is not 0`);
      }
    }
    const base = this.endOffset2(p);
    const stored = Buffer.from(bytes);
    stampBatch(stored, 0, base, p.leaderEpoch);
    p.batches.push({ baseOffset: base, lastOffset: base + count - 1, bytes: stored });
    if (producerId >= 0) {
      let st = p.producers.get(producerId);
      if (!st || producerEpoch > st.epoch) p.producers.set(producerId, (st = { epoch: producerEpoch, recent: [] }));
      st.recent.push({ firstSeq: baseSequence, lastSeq: baseSequence + count - 1, baseOffset: base });
      if (st.recent.length > 5) st.recent.shift();
    }
    this.notify();
    return base;
  }

  private endOffset2(p: FakePartition): number {
    const last = p.batches[p.batches.length - 1];
    return last ? last.lastOffset + 1 : p.logStartOffset;
  }

  private onListOffsets(brokerId: number, req: Wire): Wire {
    return {
      partitions: (req.partitions ?? []).map((q: Wire) => {
        const p = this.topics.get(q.topic)?.[q.partition];
        const base = { topic: q.topic, partition: q.partition, offset: -1, timestampMs: -1, leaderEpoch: p?.leaderEpoch ?? -1 };
        if (!p) return { ...base, error: { code: 32, name: 'UNKNOWN_PARTITION', message: 'fake: no such partition', detailsJson: '' } };
        if (p.leader !== brokerId) {
          const e = this.notLeader(q.topic, q.partition, p);
          return { ...base, error: { code: e.code, name: e.name, message: e.message, detailsJson: JSON.stringify(e.details) } };
        }
        if (q.timestampMs === -2) return { ...base, offset: p.logStartOffset };
        if (q.timestampMs === -1) return { ...base, offset: this.endOffset2(p) };
        for (const b of p.batches) for (const r of decodeRecordBatch(b.bytes).records) if (r.timestampMs >= q.timestampMs) return { ...base, offset: r.offset, timestampMs: r.timestampMs };
        return base;
      }),
    };
  }

  private async onFetch(brokerId: number, req: Wire): Promise<Wire> {
    const deadline = Date.now() + (req.maxWaitMs ?? 0);
    for (;;) {
      const results = (req.partitions ?? []).map((q: Wire) => this.fetchOne(brokerId, q, req.maxBytes));
      const any = results.some((r: Wire) => r.error || r.records.length > 0);
      if (any || Date.now() >= deadline) {
        const f = this.takeFault('Fetch', brokerId, req.partitions ?? [], ['partition']);
        if (f) for (const r of results) if (f.topic === undefined || (r.topic === f.topic && (f.partition === undefined || r.partition === f.partition))) {
          r.error = { code: new FlotillaError(f.error!, '').code, name: f.error, message: `fake: injected ${f.error}`, detailsJson: '' };
          r.records = Buffer.alloc(0);
        }
        return { partitions: results };
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  private fetchOne(brokerId: number, q: Wire, maxBytesDefault: number): Wire {
    const p = this.topics.get(q.topic)?.[q.partition];
    const out: Wire = { topic: q.topic, partition: q.partition, highWatermark: -1, lastStableOffset: -1, logStartOffset: -1, records: Buffer.alloc(0), leaderEpoch: p?.leaderEpoch ?? -1 };
    const error = (e: FlotillaError): Wire => ({ ...out, error: { code: e.code, name: e.name, message: e.message, detailsJson: JSON.stringify(e.details) } });
    if (!p) return error(new FlotillaError('UNKNOWN_PARTITION', 'fake: no such partition'));
    if (p.leader !== brokerId) return error(this.notLeader(q.topic, q.partition, p));
    if (q.currentLeaderEpoch >= 0 && q.currentLeaderEpoch < p.leaderEpoch) return error(new FlotillaError('FENCED_LEADER_EPOCH', `fake: epoch ${q.currentLeaderEpoch} < ${p.leaderEpoch}`));
    if (q.currentLeaderEpoch > p.leaderEpoch) return error(new FlotillaError('UNKNOWN_LEADER_EPOCH', `fake: epoch ${q.currentLeaderEpoch} > ${p.leaderEpoch}`));
    const hw = this.endOffset2(p);
    Object.assign(out, { highWatermark: hw, lastStableOffset: hw, logStartOffset: p.logStartOffset });
    if (q.fetchOffset < p.logStartOffset || q.fetchOffset > hw) return { ...error(new FlotillaError('OFFSET_OUT_OF_RANGE', `fake: ${q.fetchOffset} outside [${p.logStartOffset}, ${hw}]`)), highWatermark: hw, logStartOffset: p.logStartOffset };
    const maxBytes = q.partitionMaxBytes || maxBytesDefault || 1 << 20;
    const chosen: Buffer[] = [];
    let size = 0;
    for (const b of p.batches) {
      if (b.lastOffset < q.fetchOffset) continue;
      if (chosen.length > 0 && size + b.bytes.length > maxBytes) break;
      chosen.push(b.bytes);
      size += b.bytes.length;
    }
    out.records = Buffer.concat(chosen);
    return out;
  }
}

/** Injected per-partition errors that a real leader reports after appending. */
const ErrorCodeAfterAppend = new Set<ErrorName>(['NOT_ENOUGH_REPLICAS_AFTER_APPEND']);
