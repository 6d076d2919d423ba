import * as grpc from '@grpc/grpc-js';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import type { Logger } from '../../shared/log';
import { toGrpcError } from '../../shared/rpc/grpc-errors';
import { ATTRIBUTE_TIMESTAMP_TYPE, RecordBatchHeader, splitBatches, validateRecordBatch } from '../../shared/records/record-batch';
import {
  DELAYED_FETCHES_MAX,
  DELAYED_PRODUCES_MAX,
  FETCH_MAX_WAIT_MS_MAX,
  FETCH_RESPONSE_MAX_BYTES,
  METADATA_TOPICS_MAX,
  PRODUCE_TIMEOUT_MS_DEFAULT,
  PRODUCE_TIMEOUT_MS_MAX,
  REPLICA_PUSH_MAX_BYTES,
  REPLICA_STREAMS_MAX,
  REQUEST_PARTITIONS_MAX,
  STREAM_INFLIGHT_MAX,
} from '../replica/limits';
import type { Partition } from '../replica/partition';
import type { ReplicaManager } from '../replica/replica-manager';
import { FETCH_MAX_WAIT_MS, replicationServiceDefinition } from '../replica/replica-fetcher';
import { DelayedFetches } from './delayed-fetch';
import { ReplicaStreamSession } from './replica-stream';
import type { ReplicaPushWire, ReplicaReportWire } from './replica-stream';

// flotilla.broker.Broker (proto/broker.proto), served on the broker's one gRPC server beside
// the admin proxy: Metadata from the broker's image, Produce / ProduceStream, Fetch (consumers
// and followers), Replicate (the leader's side of a follower broker's replication stream:
// replica-stream.ts, reading positions with readPartition), ListOffsets, InitProducerId (ids from controller-allocated blocks, through
// the ProducerIdSource the process wires to broker/producer). Kafka analogue: KafkaApis' handleProduceRequest / handleFetchRequest /
// handleListOffsetRequest / handleTopicMetadataRequest.
//
// Produce, in three steps so that a refused request appends nothing anywhere (the contract in
// the header of proto/broker.proto):
//   1. validate the whole request synchronously: acks, sizes, every partition known and led
//      here, this broker not fenced, every batch framed / CRC-checked / within
//      max.message.bytes, the ISR not below min.insync.replicas for acks=all. Any failure
//      refuses the request whole with that typed error.
//   2. hand each partition's batches to Partition.appendAsLeader, in the same event-loop turn:
//      requests reach each partition's serialized append section in arrival order, so
//      pipelined requests on a stream are appended in the order they were sent.
//   3. per partition, wait (acks=all) for the high watermark, bounded by timeout_ms; outcomes
//      after the append started (REQUEST_TIMED_OUT, NOT_LEADER_FOR_PARTITION when leadership
//      moved, NOT_ENOUGH_REPLICAS_AFTER_APPEND, a ProducerGuard refusal) are per-partition
//      Errors.

type Wire = Record<string, unknown>;

interface ErrorWire {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

interface PartitionRecordsWire {
  topic: string;
  partition: number;
  records: Buffer;
}

interface ProduceRequestWire {
  correlationId: number;
  acks: number;
  timeoutMs: number;
  partitions: PartitionRecordsWire[];
  transactionalId: string;
}

interface ProduceResultWire {
  topic: string;
  partition: number;
  baseOffset: number;
  logAppendTimeMs: number;
  logStartOffset: number;
  error: ErrorWire | null;
}

interface ProduceResponseWire {
  correlationId: number;
  results: ProduceResultWire[];
  error: ErrorWire | null;
}

interface FetchPartitionWire {
  topic: string;
  partition: number;
  fetchOffset: number;
  partitionMaxBytes: number;
  currentLeaderEpoch: number;
  lastFetchedEpoch: number;
  topicId: string;
}

interface FetchRequestWire {
  replicaId: number;
  replicaEpoch: number;
  maxWaitMs: number;
  minBytes: number;
  maxBytes: number;
  isolationLevel: string;
  partitions: FetchPartitionWire[];
}

interface FetchResultWire {
  topic: string;
  partition: number;
  error: ErrorWire | null;
  highWatermark: number;
  lastStableOffset: number;
  logStartOffset: number;
  records: Buffer;
  divergingEpoch: { epoch: number; endOffset: number } | null;
  leaderEpoch: number;
}

interface ListOffsetsPartitionWire {
  topic: string;
  partition: number;
  timestampMs: number;
  currentLeaderEpoch: number;
}

/** A fetch's max_bytes of 0 means this. */
const FETCH_DEFAULT_MAX_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);
const EARLIEST = -2;
const LATEST = -1;

/** Where InitProducerId gets ids: broker/producer's ProducerIdManager, wired by the process. */
export interface ProducerIdSource {
  /** A fresh producer id (epoch 0); PRODUCER_ID_UNAVAILABLE when no block can be had. */
  next(): Promise<{ readonly producerId: number; readonly producerEpoch: number }>;
}

export interface BrokerServiceOptions {
  readonly brokerId: number;
  readonly replicaManager: ReplicaManager;
  readonly logger: Logger;
  readonly producerIds: ProducerIdSource;
  /**
   * False until this process has caught up with the cluster metadata once (its first unfence).
   * Until then its image is empty or partial, and an answer from it would tell clients that
   * topics do not exist and brokers are gone (Kafka's broker enables request processing only
   * after its initial metadata catch-up). Default: always ready.
   */
  readonly metadataReady?: () => boolean;
}

export function errorWire(err: unknown): ErrorWire {
  const fe = isFlotillaError(err) ? err : new FlotillaError('UNKNOWN', String((err as Error)?.message ?? err));
  return { code: fe.code, name: fe.name, message: fe.message, detailsJson: JSON.stringify(fe.details) };
}

export class BrokerService {
  private readonly rm: ReplicaManager;
  private readonly delayedFetches = new DelayedFetches(DELAYED_FETCHES_MAX);
  private readonly replicaStreams = new Set<ReplicaStreamSession>();
  private closed = false;

  constructor(private readonly o: BrokerServiceOptions) {
    this.rm = o.replicaManager;
    this.rm.onProgress((p) => this.delayedFetches.notify(p));
  }

  /** Adds flotilla.broker.Broker to `server`. */
  register(server: grpc.Server): void {
    // Produce, ProduceStream and Replicate use hand-written codecs (shared/rpc/produce-codec.ts,
    // broker/replica/replicate-codec.ts); the other methods proto-loader's.
    const service = replicationServiceDefinition();
    const impl: grpc.UntypedServiceImplementation = {
      Metadata: this.unary('Metadata', async (req) => this.metadata(req as { topics: string[]; brokersOnly?: boolean })),
      Produce: this.unary('Produce', async (req) => this.produce(req as unknown as ProduceRequestWire)),
      ProduceStream: (call: grpc.ServerDuplexStream<ProduceRequestWire, ProduceResponseWire>) => this.produceStream(call),
      Fetch: (call: grpc.ServerUnaryCall<FetchRequestWire, Wire>, callback: grpc.sendUnaryData<Wire>) => this.fetchCall(call, callback),
      Replicate: (call: grpc.ServerDuplexStream<ReplicaReportWire, ReplicaPushWire>) => this.replicate(call),
      ListOffsets: this.unary('ListOffsets', async (req) => this.listOffsets(req as { partitions: ListOffsetsPartitionWire[]; isolationLevel: string })),
      InitProducerId: this.unary('InitProducerId', async (req) => this.initProducerId(req as { transactionalId: string; transactionTimeoutMs: number })),
    };
    server.addService(service, impl);
  }

  close(): void {
    this.closed = true;
    for (const s of [...this.replicaStreams]) s.end();
  }

  // ======================= replication stream =======================

  /** One follower broker's Replicate stream (broker/server/replica-stream.ts). */
  private replicate(call: grpc.ServerDuplexStream<ReplicaReportWire, ReplicaPushWire>): void {
    if (this.closed || this.replicaStreams.size >= REPLICA_STREAMS_MAX) {
      const why = this.closed ? `broker ${this.o.brokerId} is shutting down` : `broker ${this.o.brokerId} has ${this.replicaStreams.size} replication streams open, the most it serves`;
      call.emit('error', toGrpcError(new FlotillaError(this.closed ? 'NOT_LEADER_FOR_PARTITION' : 'LIMIT_EXCEEDED', why)));
      return;
    }
    const session = new ReplicaStreamSession(call, {
      readPartition: (e, replicaId, budgetBytes, mustReturnOne, firstPass) => this.readPartition(e, replicaId, budgetBytes, mustReturnOne, firstPass),
      checkReplica: (replicaId, replicaEpoch) => this.checkReplica(replicaId, replicaEpoch),
      delayedFetches: this.delayedFetches,
      logger: this.o.logger,
      maxWaitMs: FETCH_MAX_WAIT_MS,
      pushMaxBytes: REPLICA_PUSH_MAX_BYTES,
      onClosed: (s) => this.replicaStreams.delete(s),
    });
    this.replicaStreams.add(session);
  }

  /** A new id for an idempotent producer (transactions, with their ids and epochs, come later). */
  private async initProducerId(req: { transactionalId: string; transactionTimeoutMs: number }): Promise<Wire> {
    if (req.transactionalId !== '') {
      throw new FlotillaError('INVALID_REQUEST', 'transactional producers are not supported yet: transactional_id must be ""');
    }
    if (this.rm.isFenced()) throw new FlotillaError('BROKER_FENCED', `broker ${this.o.brokerId} is fenced`);
    const { producerId, producerEpoch } = await this.o.producerIds.next();
    return { producerId, producerEpoch };
  }

  private unary(method: string, fn: (req: Wire) => Promise<unknown>): grpc.handleUnaryCall<Wire, unknown> {
    return (call, callback) => {
      fn(call.request).then(
        (res) => callback(null, res),
        (err: unknown) => {
          if (!isFlotillaError(err)) this.o.logger.error({ err, method }, `unexpected error in ${method}`);
          callback(toGrpcError(err) as grpc.ServerErrorResponse);
        },
      );
    };
  }

  // ======================= metadata =======================

  metadata(req: { topics: string[]; brokersOnly?: boolean }): Wire {
    this.checkMetadataReady();
    const image = this.rm.image();
    const wanted = req.topics ?? [];
    if (wanted.length > METADATA_TOPICS_MAX) throw new FlotillaError('INVALID_REQUEST', `a Metadata request may name at most ${METADATA_TOPICS_MAX} topics, not ${wanted.length}`);
    if (req.brokersOnly === true && wanted.length > 0) throw new FlotillaError('INVALID_REQUEST', 'a Metadata request with brokers_only names no topics');
    const names = req.brokersOnly === true ? [] : wanted.length === 0 ? [...image.topics.keys()] : [...new Set(wanted)];
    names.sort();
    const topics = names.map((name) => {
      const t = image.topics.get(name);
      if (t === undefined) return { name, topicId: '', partitions: [], error: errorWire(new FlotillaError('UNKNOWN_TOPIC', `topic "${name}" does not exist`, { topic: name })) };
      const partitions = [...t.partitions.values()]
        .sort((a, b) => a.partition - b.partition)
        .map((p) => ({ partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: [...p.replicas], isr: [...p.isr] }));
      return { name, topicId: t.topicId, partitions, error: null };
    });
    const brokers = [...image.brokers.values()]
      .sort((a, b) => a.id - b.id)
      .map((b) => ({ brokerId: b.id, host: b.host, port: b.port, rack: b.rack ?? '', fenced: b.fenced }));
    return { brokers, topics, metadataOffset: image.offset, responderId: this.o.brokerId };
  }

  // ======================= produce =======================

  /** One produce request: refused whole (rejects) or answered per partition. */
  produce(req: ProduceRequestWire): Promise<ProduceResponseWire> {
    // Steps 1 and 2 run synchronously (see the header): no await before the appends.
    let plan: { p: Partition; entry: PartitionRecordsWire; records: Buffer; headers: RecordBatchHeader[] }[];
    let acks: number;
    let timeoutMs: number;
    try {
      ({ plan, acks, timeoutMs } = this.validateProduce(req));
    } catch (err) {
      return Promise.reject(err);
    }
    const appends = plan.map(({ p, records, headers }) => p.appendAsLeader(records, headers, acks));
    return (async () => {
      const results = await Promise.all(
        plan.map(async ({ p, entry }, i): Promise<ProduceResultWire> => {
          const base = { topic: entry.topic, partition: entry.partition, logAppendTimeMs: -1 };
          try {
            const r = await appends[i]!;
            if (acks === -1) {
              const err = await p.waitForCommit(r.lastOffset, timeoutMs);
              if (err !== null) return { ...base, baseOffset: -1, logStartOffset: p.logStartOffset, error: errorWire(this.withLeader(err)) };
            }
            return { ...base, baseOffset: acks === 0 ? -1 : r.baseOffset, logStartOffset: r.logStartOffset, logAppendTimeMs: acks === 0 ? -1 : r.logAppendTimeMs, error: null };
          } catch (err) {
            if (!isFlotillaError(err)) this.o.logger.error({ err, partition: p.label }, 'unexpected append failure');
            return { ...base, baseOffset: -1, logStartOffset: -1, error: errorWire(this.withLeader(err)) };
          }
        }),
      );
      return { correlationId: req.correlationId, results, error: null };
    })();
  }

  private validateProduce(req: ProduceRequestWire): {
    plan: { p: Partition; entry: PartitionRecordsWire; records: Buffer; headers: RecordBatchHeader[] }[];
    acks: number;
    timeoutMs: number;
  } {
    const acks = req.acks;
    if (acks !== -1 && acks !== 0 && acks !== 1) throw new FlotillaError('INVALID_REQUIRED_ACKS', `acks must be -1 (all), 0 or 1, not ${acks}`, { acks });
    if (req.transactionalId !== undefined && req.transactionalId !== '') throw new FlotillaError('INVALID_REQUEST', 'transactional_id must be empty: transactions are not supported yet');
    const timeoutMs = req.timeoutMs === 0 || req.timeoutMs === undefined ? PRODUCE_TIMEOUT_MS_DEFAULT : req.timeoutMs;
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > PRODUCE_TIMEOUT_MS_MAX) {
      throw new FlotillaError('INVALID_REQUEST', `timeout_ms must be from 1 to ${PRODUCE_TIMEOUT_MS_MAX} (0 = ${PRODUCE_TIMEOUT_MS_DEFAULT}), not ${timeoutMs}`);
    }
    const entries = req.partitions ?? [];
    if (entries.length === 0) throw new FlotillaError('INVALID_REQUEST', 'a produce request needs at least one partition');
    if (entries.length > REQUEST_PARTITIONS_MAX) throw new FlotillaError('INVALID_REQUEST', `a produce request may carry at most ${REQUEST_PARTITIONS_MAX} partitions, not ${entries.length}`);
    if (this.closed) throw new FlotillaError('NOT_LEADER_FOR_PARTITION', `broker ${this.o.brokerId} is shutting down`);
    if (this.rm.isFenced()) throw new FlotillaError('BROKER_FENCED', `broker ${this.o.brokerId} is fenced by the controller: it takes no writes`, { brokerId: this.o.brokerId });
    const seen = new Set<string>();
    const plan = entries.map((entry) => {
      const p = this.leaderPartition(entry.topic, entry.partition);
      if (seen.has(p.label)) throw new FlotillaError('INVALID_REQUEST', `partition ${p.label} appears twice in one produce request`, { topic: entry.topic, partition: entry.partition });
      seen.add(p.label);
      const records = entry.records ?? Buffer.alloc(0);
      if (records.length === 0) throw new FlotillaError('INVALID_RECORD', `${p.label}: no record batch`, { topic: entry.topic, partition: entry.partition });
      const maxMessageBytes = p.log.config.maxMessageBytes;
      const headers = splitBatches(records).map((slice) => {
        if (slice.length > maxMessageBytes) {
          throw new FlotillaError('RECORD_TOO_LARGE', `${p.label}: a record batch of ${slice.length} bytes exceeds max.message.bytes ${maxMessageBytes}`, {
            topic: entry.topic,
            partition: entry.partition,
            sizeBytes: slice.length,
            maxMessageBytes,
          });
        }
        const h = validateRecordBatch(slice);
        if ((h.attributes & ATTRIBUTE_TIMESTAMP_TYPE) !== 0) {
          throw new FlotillaError('INVALID_RECORD', `${p.label}: a producer may not set the log-append-time bit (the leader sets it for LogAppendTime topics)`, {
            topic: entry.topic,
            partition: entry.partition,
          });
        }
        return h;
      });
      p.checkLeaderForAppend(acks);
      return { p, entry, records, headers };
    });
    if (acks === -1 && this.rm.ackWaiters.count + plan.length > DELAYED_PRODUCES_MAX) {
      throw new FlotillaError('REQUEST_TIMED_OUT', `broker ${this.o.brokerId} has ${this.rm.ackWaiters.count} acks=all writes waiting for replication; nothing was appended, retry later`);
    }
    return { plan, acks, timeoutMs };
  }

  /** The partition led here, or the typed error for why not (UNKNOWN_*, NOT_LEADER, STORAGE_ERROR). */
  private leaderPartition(topic: string, partition: number): Partition {
    const p = this.hostedPartition(topic, partition);
    if (p.role !== 'leader') throw this.notLeader(topic, partition);
    return p;
  }

  private hostedPartition(topic: string, partition: number): Partition {
    const image = this.rm.image();
    const t = image.topics.get(topic);
    if (t === undefined) throw new FlotillaError('UNKNOWN_TOPIC', `topic "${String(topic).slice(0, 300)}" does not exist`, { topic: String(topic).slice(0, 300) });
    if (!Number.isSafeInteger(partition) || !t.partitions.has(partition)) {
      throw new FlotillaError('UNKNOWN_PARTITION', `topic "${topic}" has no partition ${partition} (${t.partitions.size} partitions)`, { topic, partition });
    }
    const h = this.rm.lookup(topic, partition);
    if (h?.offline) throw new FlotillaError('STORAGE_ERROR', `the replica of ${topic}-${partition} on broker ${this.o.brokerId} is offline: ${h.offline.message}`, { topic, partition });
    if (h?.p === null || h === undefined) throw this.notLeader(topic, partition);
    return h.p;
  }

  /** BROKER_FENCED (retriable: the client asks another broker) until the first metadata catch-up. */
  private checkMetadataReady(): void {
    if (this.o.metadataReady === undefined || this.o.metadataReady()) return;
    throw new FlotillaError('BROKER_FENCED', `broker ${this.o.brokerId} has not caught up with the cluster metadata since it started`, { brokerId: this.o.brokerId });
  }

  /** NOT_LEADER_FOR_PARTITION with the leader the image names, for the client to follow. */
  private notLeader(topic: string, partition: number): FlotillaError {
    const image = this.rm.image();
    const state = image.partition(topic, partition);
    const leaderId = state?.leader ?? -1;
    const b = leaderId >= 0 ? image.brokers.get(leaderId) : undefined;
    const leaderAddress = b === undefined ? '' : `${b.host}:${b.port}`;
    return new FlotillaError(
      'NOT_LEADER_FOR_PARTITION',
      `broker ${this.o.brokerId} is not the leader of ${topic}-${partition}; ${leaderId >= 0 ? `broker ${leaderId} at ${leaderAddress} is (epoch ${state?.leaderEpoch})` : 'no leader is known'}`,
      { topic, partition, leaderId, leaderEpoch: state?.leaderEpoch ?? -1, leaderAddress },
    );
  }

  private withLeader(err: unknown): unknown {
    if (!isFlotillaError(err, 'NOT_LEADER_FOR_PARTITION')) return err;
    const { topic, partition } = err.details;
    return typeof topic === 'string' && typeof partition === 'number' ? this.notLeader(topic, partition) : err;
  }

  /**
   * Pipelined produce: requests are appended in arrival order; a response is written once its
   * request completed and every earlier response sharing a partition with it was written, so
   * one partition's answers keep request order. acks=0 answers only refusals. Reading pauses
   * while STREAM_INFLIGHT_MAX requests are in flight (HTTP/2 flow control pushes back).
   */
  private produceStream(call: grpc.ServerDuplexStream<ProduceRequestWire, ProduceResponseWire>): void {
    let inflight = 0;
    let paused = false;
    let ended = false;
    let broken = false;
    const lastWritten = new Map<string, Promise<void>>();
    const maybeEnd = (): void => {
      if (ended && inflight === 0 && !broken) call.end();
    };
    call.on('error', () => {
      broken = true;
    });
    call.on('cancelled', () => {
      broken = true;
    });
    call.on('end', () => {
      ended = true;
      maybeEnd();
    });
    call.on('data', (req: ProduceRequestWire) => {
      inflight++;
      if (inflight >= STREAM_INFLIGHT_MAX && !paused) {
        paused = true;
        call.pause();
      }
      const keys = [...new Set((req.partitions ?? []).map((e) => `${e.topic}\u0000${e.partition}`))];
      const earlier = Promise.all(keys.map((k) => lastWritten.get(k)));
      const outcome = this.produce(req).then(
        (res) => ({ res, refused: false }),
        (err: unknown) => {
          if (!isFlotillaError(err)) this.o.logger.error({ err }, 'unexpected error in ProduceStream');
          return { res: { correlationId: req.correlationId, results: [], error: errorWire(err) } as ProduceResponseWire, refused: true };
        },
      );
      const written = Promise.all([earlier, outcome]).then(([, { res, refused }]) => {
        if (broken) return;
        if (req.acks === 0 && !refused) return;
        call.write(res);
      });
      for (const k of keys) lastWritten.set(k, written);
      void written.finally(() => {
        for (const k of keys) if (lastWritten.get(k) === written) lastWritten.delete(k);
        inflight--;
        if (paused && inflight < STREAM_INFLIGHT_MAX / 2) {
          paused = false;
          call.resume();
        }
        maybeEnd();
      });
    });
  }

  // ======================= fetch =======================

  private fetchCall(call: grpc.ServerUnaryCall<FetchRequestWire, Wire>, callback: grpc.sendUnaryData<Wire>): void {
    let cancelled = false;
    call.on('cancelled', () => {
      cancelled = true;
    });
    this.fetch(call.request, () => cancelled).then(
      (res) => callback(null, res),
      (err: unknown) => {
        if (!isFlotillaError(err)) this.o.logger.error({ err }, 'unexpected error in Fetch');
        callback(toGrpcError(err) as grpc.ServerErrorResponse);
      },
    );
  }

  /** A fetch: read now; if less than min_bytes, park until data, the max wait, or cancellation. */
  async fetch(req: FetchRequestWire, isCancelled: () => boolean = () => false): Promise<{ partitions: FetchResultWire[] }> {
    this.checkMetadataReady();
    const entries = req.partitions ?? [];
    if (entries.length > REQUEST_PARTITIONS_MAX) throw new FlotillaError('INVALID_REQUEST', `a fetch may carry at most ${REQUEST_PARTITIONS_MAX} partitions, not ${entries.length}`);
    const replicaId = req.replicaId ?? -1;
    if (!Number.isSafeInteger(replicaId) || replicaId < -1) throw new FlotillaError('INVALID_REQUEST', `replica_id must be -1 (consumer) or a broker id, not ${replicaId}`);
    for (const e of entries) {
      if (!Number.isSafeInteger(e.fetchOffset) || e.fetchOffset < 0) throw new FlotillaError('INVALID_REQUEST', `fetch_offset ${e.fetchOffset} of ${e.topic}-${e.partition} must be >= 0`);
    }
    if (replicaId >= 0) this.checkReplica(replicaId, req.replicaEpoch);
    const maxWaitMs = Math.min(req.maxWaitMs ?? 0, FETCH_MAX_WAIT_MS_MAX);
    const minBytes = Math.max(1, req.minBytes ?? 0);
    const maxBytes = Math.min(req.maxBytes || FETCH_DEFAULT_MAX_BYTES, FETCH_RESPONSE_MAX_BYTES);
    const first = await this.readFetch(entries, replicaId, maxBytes, true);
    if (first.bytes >= minBytes || first.hasError || maxWaitMs <= 0 || entries.length === 0) return { partitions: first.results };
    const partitions = first.partitions.filter((p): p is Partition => p !== null);
    return new Promise((resolve) => {
      let reading = false;
      let again = false;
      let finished = false;
      const finish = (res: FetchResultWire[]): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        unpark?.();
        resolve({ partitions: res });
      };
      const reread = async (final: boolean): Promise<void> => {
        if (finished) return;
        if (reading && !final) {
          again = true;
          return;
        }
        reading = true;
        try {
          do {
            again = false;
            const r = await this.readFetch(entries, replicaId, maxBytes, false);
            if (final || r.bytes >= minBytes || r.hasError || isCancelled() || this.closed) return finish(r.results);
          } while (again && !finished);
        } catch (err) {
          this.o.logger.warn({ err }, 'delayed fetch read failed');
          finish(first.results);
        } finally {
          reading = false;
        }
      };
      const timer = setTimeout(() => void reread(true), maxWaitMs);
      const unpark = this.delayedFetches.park({ wake: () => void reread(false) }, partitions);
      if (unpark === null) void reread(true);
      // Data appended while the first read was pending woke nobody (it was not parked yet):
      // read once more now, or such a fetch waits for its max wait.
      else void reread(false);
    });
  }

  private checkReplica(replicaId: number, replicaEpoch: number): void {
    const b = this.rm.image().brokers.get(replicaId);
    if (b === undefined) throw new FlotillaError('UNKNOWN_BROKER', `broker ${replicaId} is not registered (as far as broker ${this.o.brokerId} knows)`, { brokerId: replicaId });
    if (replicaEpoch < b.epoch) {
      throw new FlotillaError('STALE_BROKER_EPOCH', `follower fetch from broker ${replicaId} at broker epoch ${replicaEpoch}, older than its registration at ${b.epoch}`, {
        brokerId: replicaId,
        brokerEpoch: b.epoch,
      });
    }
  }

  private async readFetch(
    entries: readonly FetchPartitionWire[],
    replicaId: number,
    maxBytes: number,
    firstPass: boolean,
  ): Promise<{ results: FetchResultWire[]; bytes: number; hasError: boolean; partitions: (Partition | null)[] }> {
    const results: FetchResultWire[] = [];
    const partitions: (Partition | null)[] = [];
    let bytes = 0;
    let hasError = false;
    for (const e of entries) {
      const r = await this.readPartition(e, replicaId, maxBytes - bytes, bytes === 0, firstPass);
      results.push(r.result);
      partitions.push(r.p);
      bytes += r.result.records.length;
      hasError ||= r.answerNow;
    }
    return { results, bytes, hasError, partitions };
  }

  /**
   * One partition of a fetch (or of a replication stream position). `budgetBytes` is what the
   * response has left; a first partition (`mustReturnOne`) gets a whole batch even past it. A
   * follower's first pass runs the leader's bookkeeping (Partition.onFollowerFetch: divergence
   * check, its log end offset, ISR, high watermark); later passes of a parked fetch only check
   * divergence. `answerNow`: an error or a divergence, which must not wait.
   */
  async readPartition(
    e: FetchPartitionWire,
    replicaId: number,
    budgetBytes: number,
    mustReturnOne: boolean,
    firstPass: boolean,
  ): Promise<{ result: FetchResultWire; p: Partition | null; answerNow: boolean }> {
    const base = { topic: e.topic, partition: e.partition, error: null, highWatermark: -1, lastStableOffset: -1, logStartOffset: -1, records: EMPTY, divergingEpoch: null, leaderEpoch: -1 };
    let p: Partition | null = null;
    try {
      p = this.leaderPartition(e.topic, e.partition);
      if (e.topicId && e.topicId !== p.topicId) throw this.notLeader(e.topic, e.partition);
      checkLeaderEpoch(p, e.currentLeaderEpoch);
      if (replicaId >= 0) {
        const divergence = firstPass ? p.onFollowerFetch(replicaId, e.fetchOffset, e.lastFetchedEpoch ?? -1) : p.divergenceFor(e.fetchOffset, e.lastFetchedEpoch ?? -1);
        if (divergence !== null) {
          const state = { highWatermark: p.highWatermark, lastStableOffset: p.highWatermark, logStartOffset: p.logStartOffset, leaderEpoch: p.leaderEpoch };
          return { result: { ...base, ...state, divergingEpoch: divergence }, p, answerNow: true };
        }
      }
      let records: Buffer = EMPTY;
      if (budgetBytes > 0 || mustReturnOne) {
        const want = Math.max(1, Math.min(e.partitionMaxBytes || budgetBytes, budgetBytes));
        const r = await p.read(e.fetchOffset, want, replicaId >= 0 ? 'logEnd' : 'highWatermark');
        records = r.records;
      }
      return { result: { ...base, highWatermark: p.highWatermark, lastStableOffset: p.highWatermark, logStartOffset: p.logStartOffset, leaderEpoch: p.leaderEpoch, records }, p, answerNow: false };
    } catch (err) {
      if (!isFlotillaError(err)) this.o.logger.error({ err, topic: e.topic, partition: e.partition }, 'unexpected fetch failure');
      const state = p ? { highWatermark: p.highWatermark, logStartOffset: p.logStartOffset, leaderEpoch: p.leaderEpoch } : {};
      return { result: { ...base, ...state, error: errorWire(this.withLeader(err)) }, p, answerNow: true };
    }
  }

  // ======================= list offsets =======================

  async listOffsets(req: { partitions: ListOffsetsPartitionWire[]; isolationLevel: string }): Promise<Wire> {
    this.checkMetadataReady();
    const entries = req.partitions ?? [];
    if (entries.length > REQUEST_PARTITIONS_MAX) throw new FlotillaError('INVALID_REQUEST', `ListOffsets may carry at most ${REQUEST_PARTITIONS_MAX} partitions, not ${entries.length}`);
    for (const e of entries) {
      if (!Number.isSafeInteger(e.timestampMs) || e.timestampMs < EARLIEST) {
        throw new FlotillaError('INVALID_REQUEST', `timestamp_ms ${e.timestampMs} of ${e.topic}-${e.partition}: must be -2 (earliest), -1 (latest) or a time in ms`);
      }
    }
    const out = [];
    for (const e of entries) {
      const base = { topic: e.topic, partition: e.partition, error: null, offset: -1, timestampMs: -1, leaderEpoch: -1 };
      try {
        const p = this.leaderPartition(e.topic, e.partition);
        checkLeaderEpoch(p, e.currentLeaderEpoch);
        const hw = p.highWatermark;
        if (e.timestampMs === EARLIEST) out.push({ ...base, offset: p.logStartOffset, leaderEpoch: p.leaderEpoch });
        else if (e.timestampMs === LATEST) out.push({ ...base, offset: hw, leaderEpoch: p.leaderEpoch });
        else {
          const found = await p.log.lookupByTimestamp(e.timestampMs);
          // Consumers see nothing at or above the high watermark.
          if (found === null || found.offset >= hw) out.push({ ...base, leaderEpoch: p.leaderEpoch });
          else out.push({ ...base, offset: found.offset, timestampMs: found.timestampMs, leaderEpoch: p.leaderEpoch });
        }
      } catch (err) {
        out.push({ ...base, error: errorWire(this.withLeader(err)) });
      }
    }
    return { partitions: out };
  }
}

/** KIP-320: a reader's leader epoch older than the leader's is fenced, a newer one unknown. */
function checkLeaderEpoch(p: Partition, current: number | undefined): void {
  if (current === undefined || current < 0) return;
  const details = { topic: p.topicName, partition: p.partition, leaderEpoch: p.leaderEpoch, requestedEpoch: current };
  if (current < p.leaderEpoch) throw new FlotillaError('FENCED_LEADER_EPOCH', `${p.label}: leader epoch ${current} is older than the current ${p.leaderEpoch}; refresh metadata`, details);
  if (current > p.leaderEpoch) throw new FlotillaError('UNKNOWN_LEADER_EPOCH', `${p.label}: leader epoch ${current} is newer than the ${p.leaderEpoch} broker ${p.leader} knows; retry`, details);
}
