import { FlotillaError, type ErrorName } from '../shared/errors/error-codes';
import { BATCH_HEADER_BYTES, MAX_TIMESTAMP_MS, encodeRecordBatch, type RecordHeader, type RecordInput } from '../shared/records';
import { STREAM_PENDING_MAX, type BrokerConnections } from './broker-connections';
import { ClusterMetadata, errorFromWire, sleep, type TopicMetadata } from './cluster-metadata';
import { StickyPartitioner, partitionForKey } from './partitioner';
import { resolveProducerConfig, type ProducerConfig, type ResolvedProducerConfig } from './producer-config';
import { backoffMs } from './retry-policy';
import type { InitProducerIdResponseWire, ProduceRequestWire, ProduceResponseWire } from './wire';

// The producer (Kafka's KafkaProducer = RecordAccumulator + Sender; KafkaJS's API).
//
// send() places each record on a partition (partitioner.ts), appends it to that partition's
// open batch and returns a promise that settles when every record of the call has its fate:
// resolved with one {topic, partition, offset, timestamp} per record (offset -1 with acks 0),
// or rejected with a FlotillaError whose details say how many records failed
// (failedRecords of records). Records of one call that went to different partitions may
// partly succeed; the error says how many did not.
//
// Batching: a partition's batch is sent when it is full (batchSizeBytes), when its oldest
// record has waited lingerMs, or at once while flush()/disconnect() runs or send() is waiting
// for buffer space. A drain puts at most one batch per partition in a request and groups the
// partitions led by one broker into one request (up to maxRequestBytes), written on that
// broker's ProduceStream; responses come back by correlation id.
//
// Retries: only errors the code table marks retriable, with exponential backoff and jitter,
// at most retry.retries times and never past deliveryTimeoutMs from the batch's creation.
// A retried batch goes back in front of the partition's newer batches (creation order).
// acks=0 never retries (there is no answer to retry on). NOT_LEADER_FOR_PARTITION moves the
// cached leader at once when it names a newer one; it and UNKNOWN_LEADER_EPOCH,
// FENCED_LEADER_EPOCH, LEADER_NOT_AVAILABLE and lost connections refresh metadata.
//
// Idempotence (issue 3 §5, Kafka's KIP-98 producer side): InitProducerId at connect; each
// batch gets its partition's next sequence number when it is first sent and keeps it, and
// its bytes, across retries. At most maxInFlightRequests (<= 5, the broker's dedup window)
// batches per partition are in flight. When one fails retriably the partition stops
// sending new batches until everything in flight has come back, then resends the failed
// ones in sequence order, one at a time, before going on — so retries keep order, and a
// retry of a batch the broker did append is answered with its original offset. An
// OUT_OF_ORDER_SEQUENCE for a batch behind one being retried is that retry's echo and is
// retried too; for the batch right after the last acknowledged one it means the broker lost
// a batch, and is fatal. OUT_OF_ORDER_SEQUENCE, INVALID_PRODUCER_EPOCH and
// UNKNOWN_PRODUCER_ID are fatal, as is any failure of a batch that already had a sequence
// number (the partition's sequence can no longer be trusted): the producer rejects every
// pending and later send with that typed error and must be replaced (Kafka before KIP-360
// behaved the same; epoch bumping comes with transactions).
//
// Bounds: bufferMemoryBytes of records buffered until acknowledged — send() waits for room
// up to maxBlockMs and then rejects REQUEST_TIMED_OUT with details.reason "buffer-full"
// (Kafka's BufferExhaustedException is a TimeoutException); a single send larger than the
// whole buffer or a record larger than maxRequestBytes is RECORD_TOO_LARGE at once. Batches
// in flight: maxInFlightRequests per partition, STREAM_PENDING_MAX per broker.

export interface Message {
  readonly key?: Buffer | string | null;
  readonly value: Buffer | string | null;
  /** A repeated header key takes an array. */
  readonly headers?: Readonly<Record<string, Buffer | string | null | readonly (Buffer | string)[]>>;
  /** Explicit partition; otherwise by key (murmur2) or sticky when keyless. */
  readonly partition?: number;
  /** Create time in ms since the epoch (a number, or a string of digits as in KafkaJS); default now. */
  readonly timestamp?: number | string;
}

export interface ProducerRecord {
  readonly topic: string;
  readonly messages: readonly Message[];
}

export interface RecordMetadata {
  readonly topic: string;
  readonly partition: number;
  /** The record's offset; -1 with acks 0 (nobody answers). */
  readonly offset: number;
  /** The leader's append time on a LogAppendTime topic (as the consumer will see it), else the record's own. */
  readonly timestamp: number;
}

export interface ProducerDeps {
  readonly bootstrap: readonly string[];
  readonly connections: BrokerConnections;
  readonly metadata: ClusterMetadata;
  readonly random: () => number;
  readonly logger?: { debug(obj: object, msg: string): void } | undefined;
}

/** How long send() re-asks for a topic the brokers do not know (a new topic reaches brokers a heartbeat later). */
/** Bound on waiting for brokers to end the produce streams at disconnect. */
const STREAM_FINISH_TIMEOUT_MS = 5_000;
const UNKNOWN_TOPIC_WAIT_MS = 5_000;
/** Errors after which the cached leader is suspect. */
const REFRESH_ON = new Set<ErrorName>(['NOT_LEADER_FOR_PARTITION', 'UNKNOWN_LEADER_EPOCH', 'FENCED_LEADER_EPOCH', 'LEADER_NOT_AVAILABLE', 'REQUEST_TIMED_OUT', 'UNKNOWN_TOPIC', 'UNKNOWN_PARTITION']);
/** Errors that end an idempotent producer (see the header). */
const FATAL_WHEN_IDEMPOTENT = new Set<ErrorName>(['OUT_OF_ORDER_SEQUENCE', 'INVALID_PRODUCER_EPOCH', 'UNKNOWN_PRODUCER_ID']);
/** Bytes a record adds to a batch beyond its key, value and headers (varints, attributes), at most. */
const RECORD_OVERHEAD_BYTES = 26;

class SendTracker {
  readonly results: RecordMetadata[];
  private remaining: number;
  private failed = 0;
  private firstError: FlotillaError | undefined;
  readonly promise: Promise<RecordMetadata[]>;
  private resolve!: (r: RecordMetadata[]) => void;
  private reject!: (e: FlotillaError) => void;

  constructor(
    readonly topic: string,
    readonly count: number,
  ) {
    this.results = new Array<RecordMetadata>(count);
    this.remaining = count;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  ok(index: number, md: RecordMetadata): void {
    this.results[index] = md;
    this.settleOne();
  }

  fail(err: FlotillaError): void {
    this.failed++;
    this.firstError ??= err;
    this.settleOne();
  }

  private settleOne(): void {
    if (--this.remaining > 0) return;
    if (this.failed === 0) return this.resolve(this.results);
    const e = this.firstError!;
    this.reject(
      new FlotillaError(e.name, `${this.failed} of ${this.count} record(s) to ${this.topic} not acknowledged: ${e.message}`, { ...e.details, failedRecords: this.failed, records: this.count }, { cause: e }),
    );
  }
}

interface Owner {
  readonly tracker: SendTracker;
  readonly index: number;
}

class ProducerBatch {
  readonly records: RecordInput[] = [];
  readonly owners: Owner[] = [];
  sizeBytes = BATCH_HEADER_BYTES;
  closed = false;
  done = false;
  /** Times sent. */
  attempts = 0;
  baseSequence = -1;
  encoded: Buffer | undefined;
  retryAtMs = 0;
  lastError: FlotillaError | undefined;

  constructor(
    readonly pq: PartitionQueue,
    readonly createdMs: number,
    readonly order: number,
  ) {}
}

class PartitionQueue {
  /** Batches waiting to be sent (retries first, in creation order); the last may be open. */
  readonly queue: ProducerBatch[] = [];
  open: ProducerBatch | undefined;
  readonly inFlight = new Set<ProducerBatch>();
  nextSequence = 0;
  lastAckedSequence = -1;
  /** Idempotent: a batch is being retried; send one at a time until retries are done. */
  recovering = false;
  nextOrder = 0;

  constructor(
    readonly topic: string,
    readonly partition: number,
    public numPartitions: number,
  ) {}
}

interface PendingRequest {
  batches: ProducerBatch[];
  bytes: number;
  partitions: Set<PartitionQueue>;
}

interface BufferWaiter {
  readonly bytes: number;
  readonly resolve: () => void;
  readonly reject: (e: FlotillaError) => void;
  readonly timer: NodeJS.Timeout;
}

export class Producer {
  private readonly cfg: ResolvedProducerConfig;
  private readonly partitions = new Map<string, PartitionQueue>();
  private readonly sticky: StickyPartitioner;
  private readonly inProgress = new Set<Promise<RecordMetadata[]>>();
  private readonly bufferWaiters: BufferWaiter[] = [];
  private bufferedBytes = 0;
  private producerId = -1;
  private producerEpoch = -1;
  private connected = false;
  private closing = false;
  private flushing = 0;
  private fatal: FlotillaError | undefined;
  private nextCorrelationId = 1;
  private timer: NodeJS.Timeout | undefined;
  private timerAtMs = Infinity;
  private metadataRefreshing = false;

  constructor(
    config: ProducerConfig,
    private readonly deps: ProducerDeps,
  ) {
    this.cfg = resolveProducerConfig(config);
    this.sticky = new StickyPartitioner(deps.random);
  }

  /** The resolved settings (presets applied, defaults filled in). */
  get config(): ResolvedProducerConfig {
    return this.cfg;
  }

  /** The producer id and epoch (idempotent producers; -1 otherwise). */
  get producerIdentity(): { producerId: number; producerEpoch: number } {
    return { producerId: this.producerId, producerEpoch: this.producerEpoch };
  }

  /** Fetches cluster metadata and, when idempotent, a producer id; bounded by maxBlockMs. */
  async connect(): Promise<void> {
    if (this.closing) throw new FlotillaError('INVALID_REQUEST', 'the producer was disconnected; create a new one');
    if (this.connected) return;
    const deadline = Date.now() + Math.max(this.cfg.maxBlockMs, 1);
    await this.deps.metadata.refresh(true, deadline);
    if (this.cfg.idempotent) await this.initProducerId(deadline);
    this.connected = true;
  }

  send(record: ProducerRecord): Promise<RecordMetadata[]> {
    // Tracked from the start (metadata and buffer waits included), so that flush() and
    // disconnect() also wait for sends that have not reached the accumulator yet.
    const p = this.sendInner(record);
    this.inProgress.add(p);
    const forget = (): void => {
      this.inProgress.delete(p);
    };
    p.then(forget, forget);
    return p;
  }

  private async sendInner(record: ProducerRecord): Promise<RecordMetadata[]> {
    if (this.fatal) throw this.fatal;
    if (this.closing) throw new FlotillaError('INVALID_REQUEST', 'the producer was disconnected');
    if (!this.connected) throw new FlotillaError('INVALID_REQUEST', 'call producer.connect() before send()');
    const { topic, messages } = validateRecord(record);
    const meta = await this.deps.metadata.topic(topic, Math.min(this.cfg.maxBlockMs, UNKNOWN_TOPIC_WAIT_MS));
    const now = Date.now();
    const placed = messages.map((m, i) => toRecordInput(m, i, now));
    let total = 0;
    for (const p of placed) {
      if (p.sizeBytes + BATCH_HEADER_BYTES > this.cfg.maxRequestBytes) {
        throw new FlotillaError('RECORD_TOO_LARGE', `a record of about ${p.sizeBytes} bytes exceeds maxRequestBytes ${this.cfg.maxRequestBytes}`, { sizeBytes: p.sizeBytes });
      }
      total += p.sizeBytes;
    }
    if (total > this.cfg.bufferMemoryBytes) {
      throw new FlotillaError('RECORD_TOO_LARGE', `one send of ${total} bytes exceeds bufferMemoryBytes ${this.cfg.bufferMemoryBytes}`, { sizeBytes: total });
    }
    const partitionOf = placed.map((p, i) => this.choosePartition(topic, meta, messages[i]!, p.record, i));
    await this.reserve(total);
    if (this.fatal) {
      this.release(total);
      throw this.fatal;
    }
    const tracker = new SendTracker(topic, placed.length);
    for (let i = 0; i < placed.length; i++) {
      this.append(this.queueFor(topic, partitionOf[i]!, meta.partitions.length), placed[i]!.record, placed[i]!.sizeBytes, { tracker, index: i });
    }
    return tracker.promise;
  }

  /** Sends everything buffered now and waits until it is acknowledged or failed. */
  async flush(): Promise<void> {
    this.flushing++;
    try {
      this.wake(0);
      await Promise.allSettled([...this.inProgress]);
    } finally {
      this.flushing--;
    }
  }

  /** Flushes (bounded by deliveryTimeoutMs), then closes the connections. */
  async disconnect(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    try {
      await this.flush();
    } finally {
      if (this.timer) clearTimeout(this.timer);
      this.timer = undefined;
      for (const w of this.bufferWaiters.splice(0)) {
        clearTimeout(w.timer);
        w.reject(new FlotillaError('INVALID_REQUEST', 'the producer was disconnected'));
      }
      // Let brokers take what was written (acks=0 requests have no answer to wait for).
      await this.deps.connections.closeGracefully(STREAM_FINISH_TIMEOUT_MS);
    }
  }

  // ---------------------------------------------------------------- accumulate

  private choosePartition(topic: string, meta: TopicMetadata, m: Message, r: RecordInput, i: number): number {
    const n = meta.partitions.length;
    if (n === 0) throw new FlotillaError('LEADER_NOT_AVAILABLE', `topic ${topic} has no partitions in metadata`, { topic });
    if (m.partition !== undefined) {
      if (!Number.isInteger(m.partition) || m.partition < 0) throw new FlotillaError('INVALID_REQUEST', `messages[${i}].partition must be an integer >= 0`);
      if (m.partition >= n) throw new FlotillaError('UNKNOWN_PARTITION', `topic ${topic} has ${n} partitions; there is no partition ${m.partition}`, { topic, partition: m.partition });
      return m.partition;
    }
    if (r.key) return partitionForKey(r.key, n);
    return this.sticky.partition(topic, n);
  }

  private queueFor(topic: string, partition: number, numPartitions: number): PartitionQueue {
    const k = `${topic}\u0000${partition}`;
    let pq = this.partitions.get(k);
    if (!pq) {
      pq = new PartitionQueue(topic, partition, numPartitions);
      this.partitions.set(k, pq);
    }
    pq.numPartitions = numPartitions;
    return pq;
  }

  private append(pq: PartitionQueue, record: RecordInput, sizeBytes: number, owner: Owner): void {
    let b = pq.open;
    if (b && b.records.length > 0 && b.sizeBytes + sizeBytes > this.cfg.batchSizeBytes) {
      this.closeBatch(b);
      this.wake(0);
      b = undefined;
    }
    if (!b) {
      b = new ProducerBatch(pq, Date.now(), pq.nextOrder++);
      pq.queue.push(b);
      pq.open = b;
    }
    b.records.push(record);
    b.owners.push(owner);
    b.sizeBytes += sizeBytes;
    if (b.sizeBytes >= this.cfg.batchSizeBytes) {
      this.closeBatch(b);
      this.wake(0);
    } else {
      this.wake(b.createdMs + this.cfg.lingerMs);
    }
  }

  private closeBatch(b: ProducerBatch): void {
    if (b.closed) return;
    b.closed = true;
    if (b.pq.open === b) b.pq.open = undefined;
    this.sticky.onBatchClosed(b.pq.topic, b.pq.partition, b.pq.numPartitions);
  }

  // ---------------------------------------------------------------- buffer

  private reserve(bytes: number): Promise<void> {
    if (this.bufferWaiters.length === 0 && this.bufferedBytes + bytes <= this.cfg.bufferMemoryBytes) {
      this.bufferedBytes += bytes;
      return Promise.resolve();
    }
    this.wake(0); // drain eagerly while someone waits for room
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.bufferWaiters.indexOf(w);
        if (i >= 0) this.bufferWaiters.splice(i, 1);
        reject(
          new FlotillaError('REQUEST_TIMED_OUT', `no room in the producer buffer (${this.bufferedBytes} of ${this.cfg.bufferMemoryBytes} bytes used) within maxBlockMs ${this.cfg.maxBlockMs}`, {
            reason: 'buffer-full',
            bufferedBytes: this.bufferedBytes,
          }),
        );
        this.grantWaiters();
      }, this.cfg.maxBlockMs);
      const w: BufferWaiter = { bytes, resolve, reject, timer };
      this.bufferWaiters.push(w);
    });
  }

  private release(bytes: number): void {
    this.bufferedBytes -= bytes;
    this.grantWaiters();
  }

  private grantWaiters(): void {
    while (this.bufferWaiters.length > 0 && this.bufferedBytes + this.bufferWaiters[0]!.bytes <= this.cfg.bufferMemoryBytes) {
      const w = this.bufferWaiters.shift()!;
      clearTimeout(w.timer);
      this.bufferedBytes += w.bytes;
      w.resolve();
    }
  }

  // ---------------------------------------------------------------- sender

  /** Runs a drain at `atMs` (or sooner if one is already due sooner). */
  private wake(atMs = 0): void {
    if (atMs >= this.timerAtMs) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAtMs = atMs;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAtMs = Infinity;
        this.drain();
      },
      Math.max(0, atMs - Date.now()),
    );
  }

  private refreshMetadata(): void {
    if (this.metadataRefreshing) return;
    this.metadataRefreshing = true;
    this.deps.metadata
      .refresh(false)
      .catch((e: FlotillaError) => this.deps.logger?.debug({ error: e.name, message: e.message }, 'producer metadata refresh failed'))
      .finally(() => {
        this.metadataRefreshing = false;
        this.wake(0);
      });
  }

  private drain(): void {
    if (this.fatal) return;
    const now = Date.now();
    let nextWakeMs = Infinity;
    const urgent = this.flushing > 0 || this.bufferWaiters.length > 0;
    const requests = new Map<string, PendingRequest[]>();
    const pendingAdded = new Map<string, number>();
    for (const pq of this.partitions.values()) {
      this.expire(pq, now);
      if (this.fatal) return;
      let lastRequestIndex = -1;
      while (pq.queue.length > 0) {
        const head = pq.queue[0]!;
        if (head.retryAtMs > now) {
          nextWakeMs = Math.min(nextWakeMs, head.retryAtMs);
          break;
        }
        const ready = head.closed || urgent || head.attempts > 0 || now >= head.createdMs + this.cfg.lingerMs;
        if (!ready) {
          nextWakeMs = Math.min(nextWakeMs, head.createdMs + this.cfg.lingerMs);
          break;
        }
        if (this.cfg.acks !== 0 && pq.inFlight.size >= this.cfg.maxInFlightRequests) break;
        if (this.cfg.idempotent && pq.recovering && pq.inFlight.size > 0) break;
        const leader = this.deps.metadata.leaderFor(pq.topic, pq.partition);
        if (!leader) {
          this.deps.metadata.requestUpdate();
          this.refreshMetadata();
          break;
        }
        const added = pendingAdded.get(leader.address) ?? 0;
        if (this.deps.connections.pendingOn(leader.address) + added >= STREAM_PENDING_MAX) break;
        pq.queue.shift();
        this.closeBatch(head);
        if (this.cfg.idempotent && head.baseSequence < 0) {
          head.baseSequence = pq.nextSequence;
          pq.nextSequence += head.records.length;
        }
        head.encoded ??= encodeRecordBatch({
          records: head.records,
          ...(this.cfg.idempotent ? { producerId: this.producerId, producerEpoch: this.producerEpoch, baseSequence: head.baseSequence } : {}),
        });
        head.attempts++;
        if (this.cfg.acks !== 0) pq.inFlight.add(head);
        // One batch per partition per request, and a partition's batches in increasing
        // request order (the stream keeps request order, so the broker sees them in order).
        let list = requests.get(leader.address);
        if (!list) requests.set(leader.address, (list = []));
        let idx = lastRequestIndex + 1;
        while (idx < list.length && (list[idx]!.partitions.has(pq) || list[idx]!.bytes + head.encoded.length > this.cfg.maxRequestBytes)) idx++;
        if (idx === list.length) {
          list.push({ batches: [], bytes: 0, partitions: new Set() });
          pendingAdded.set(leader.address, added + 1);
        }
        const req = list[idx]!;
        req.batches.push(head);
        req.bytes += head.encoded.length;
        req.partitions.add(pq);
        lastRequestIndex = idx;
      }
    }
    for (const [address, list] of requests) for (const r of list) this.sendRequest(address, r.batches);
    if (nextWakeMs < Infinity) this.wake(nextWakeMs);
  }

  /** Fails queued batches older than deliveryTimeoutMs. */
  private expire(pq: PartitionQueue, now: number): void {
    for (let i = 0; i < pq.queue.length; ) {
      const b = pq.queue[i]!;
      if (now < b.createdMs + this.cfg.deliveryTimeoutMs) {
        i++;
        continue;
      }
      pq.queue.splice(i, 1);
      if (pq.open === b) pq.open = undefined;
      const why = b.lastError ? ` after ${b.attempts} attempt(s); last error ${b.lastError.name}: ${b.lastError.message}` : ' before it could be sent';
      const err = new FlotillaError('REQUEST_TIMED_OUT', `batch for ${pq.topic}-${pq.partition} expired: not acknowledged within deliveryTimeoutMs ${this.cfg.deliveryTimeoutMs}${why}`, {
        topic: pq.topic,
        partition: pq.partition,
      });
      if (this.cfg.idempotent && b.baseSequence >= 0) return this.failFatal(err, b);
      this.failBatch(b, err);
    }
  }

  private sendRequest(address: string, batches: ProducerBatch[]): void {
    const req: ProduceRequestWire = {
      correlationId: this.nextCorrelationId++,
      acks: this.cfg.acks,
      timeoutMs: this.cfg.timeoutMs,
      partitions: batches.map((b) => ({ topic: b.pq.topic, partition: b.pq.partition, records: b.encoded! })),
      transactionalId: '',
    };
    let sent: Promise<ProduceResponseWire | undefined>;
    try {
      sent = this.deps.connections.produceStream(address).send(req, this.cfg.acks !== 0, this.cfg.requestTimeoutMs);
    } catch (e) {
      sent = Promise.reject(e);
    }
    sent.then(
      (res) => {
        if (res === undefined) for (const b of batches) this.completeBatch(b, -1);
        else this.onAnswer(batches, res);
        this.wake(0);
      },
      (e: unknown) => {
        const err = e instanceof FlotillaError ? e : new FlotillaError('UNKNOWN', String((e as Error)?.message ?? e));
        for (const b of batches) this.onBatchError(b, err);
        this.wake(0);
      },
    );
  }

  private onAnswer(batches: ProducerBatch[], res: ProduceResponseWire): void {
    const refusal = res.error && res.error.code !== 0 ? errorFromWire(res.error) : undefined;
    for (const b of batches) {
      const r = (res.results ?? []).find((x) => x.topic === b.pq.topic && x.partition === b.pq.partition);
      let err = refusal;
      if (!err && r?.error && r.error.code !== 0) err = errorFromWire(r.error, { topic: b.pq.topic, partition: b.pq.partition });
      if (!err && !r) err = new FlotillaError('UNKNOWN', `produce answer ${res.correlationId} lacks ${b.pq.topic}-${b.pq.partition}`);
      if (err) this.onBatchError(b, err);
      else this.onBatchAcked(b, r!.baseOffset, Number(r!.logAppendTimeMs ?? -1));
    }
  }

  private onBatchAcked(b: ProducerBatch, baseOffset: number, logAppendTimeMs: number): void {
    const pq = b.pq;
    pq.inFlight.delete(b);
    if (b.done) return;
    if (this.cfg.idempotent) {
      pq.lastAckedSequence = Math.max(pq.lastAckedSequence, b.baseSequence + b.records.length - 1);
      if (pq.recovering && !pq.queue.some((q) => q.baseSequence >= 0) && pq.inFlight.size === 0) pq.recovering = false;
    }
    this.completeBatch(b, baseOffset, logAppendTimeMs);
  }

  private completeBatch(b: ProducerBatch, baseOffset: number, logAppendTimeMs = -1): void {
    if (b.done) return;
    b.done = true;
    for (let i = 0; i < b.owners.length; i++) {
      const o = b.owners[i]!;
      o.tracker.ok(o.index, { topic: b.pq.topic, partition: b.pq.partition, offset: baseOffset >= 0 ? baseOffset + i : -1, timestamp: logAppendTimeMs >= 0 ? logAppendTimeMs : b.records[i]!.timestampMs });
    }
    this.release(b.sizeBytes - BATCH_HEADER_BYTES);
  }

  private onBatchError(b: ProducerBatch, err: FlotillaError): void {
    const pq = b.pq;
    pq.inFlight.delete(b);
    if (b.done) return;
    if (err.name === 'NOT_LEADER_FOR_PARTITION') this.deps.metadata.noteLeaderMoved(pq.topic, pq.partition, err.details);
    else if (REFRESH_ON.has(err.name)) this.deps.metadata.requestUpdate();
    if (this.deps.metadata.needsUpdate) this.refreshMetadata();
    let retriable = err.retriable;
    if (this.cfg.idempotent) {
      // An earlier batch of this partition is unacknowledged (being retried): the gap is its
      // (Kafka's TransactionManager.canRetry does the same for both errors).
      const gapError = err.name === 'OUT_OF_ORDER_SEQUENCE' || err.name === 'UNKNOWN_PRODUCER_ID';
      const behindARetry = gapError && b.baseSequence !== pq.lastAckedSequence + 1;
      if (behindARetry) retriable = true;
      else if (FATAL_WHEN_IDEMPOTENT.has(err.name)) return this.failFatal(err, b);
    }
    const now = Date.now();
    const waitMs = backoffMs(b.attempts - 1, this.cfg, this.deps.random);
    const canRetry = retriable && this.cfg.acks !== 0 && b.attempts <= this.cfg.retries && now + waitMs < b.createdMs + this.cfg.deliveryTimeoutMs;
    this.deps.logger?.debug({ topic: pq.topic, partition: pq.partition, error: err.name, message: err.message, attempts: b.attempts, retry: canRetry }, 'produce failed');
    if (canRetry) {
      b.retryAtMs = now + waitMs;
      b.lastError = err;
      let i = 0;
      while (i < pq.queue.length && pq.queue[i]!.order < b.order) i++;
      pq.queue.splice(i, 0, b);
      if (this.cfg.idempotent) pq.recovering = true;
      this.wake(b.retryAtMs);
      return;
    }
    if (this.cfg.idempotent && b.baseSequence >= 0) {
      return this.failFatal(
        new FlotillaError(err.name, `${err.message} (batch ${pq.topic}-${pq.partition} with sequence ${b.baseSequence} failed after ${b.attempts} attempt(s))`, err.details, { cause: err }),
        b,
      );
    }
    this.failBatch(b, err);
  }

  private failBatch(b: ProducerBatch, err: FlotillaError): void {
    if (b.done) return;
    b.done = true;
    b.pq.inFlight.delete(b);
    for (const o of b.owners) o.tracker.fail(err);
    this.release(b.sizeBytes - BATCH_HEADER_BYTES);
  }

  /** The idempotent producer cannot go on: fail everything pending and every later send. */
  private failFatal(cause: FlotillaError, trigger: ProducerBatch): void {
    if (!this.fatal) this.fatal = new FlotillaError(cause.name, `idempotent producer stopped: ${cause.message}; create a new producer`, { ...cause.details, fatal: 1 }, { cause });
    this.failBatch(trigger, this.fatal);
    for (const pq of this.partitions.values()) {
      for (const b of [...pq.inFlight, ...pq.queue]) this.failBatch(b, this.fatal);
      pq.queue.length = 0;
      pq.inFlight.clear();
      pq.open = undefined;
    }
    for (const w of this.bufferWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(this.fatal);
    }
  }

  // ---------------------------------------------------------------- producer id

  private async initProducerId(deadline: number): Promise<void> {
    let attempt = 0;
    let last: FlotillaError | undefined;
    for (;;) {
      const addresses = [...new Set([...this.deps.metadata.brokerList().filter((b) => !b.fenced).map((b) => b.address), ...this.deps.bootstrap])];
      for (const address of addresses) {
        if (Date.now() >= deadline) break;
        try {
          const res = await this.deps.connections.unary<InitProducerIdResponseWire>(address, 'InitProducerId', { transactionalId: '', transactionTimeoutMs: 0 }, Math.min(deadline, Date.now() + this.cfg.requestTimeoutMs));
          this.producerId = res.producerId;
          this.producerEpoch = res.producerEpoch;
          return;
        } catch (e) {
          last = e as FlotillaError;
          if (!last.retriable && !last.details?.notABroker) throw last;
        }
      }
      const waitMs = backoffMs(attempt++, this.cfg, this.deps.random);
      if (Date.now() + waitMs >= deadline) throw last ?? new FlotillaError('PRODUCER_ID_UNAVAILABLE', 'no broker gave a producer id in time');
      await sleep(waitMs);
    }
  }
}

// ---------------------------------------------------------------- input

function validateRecord(r: ProducerRecord): { topic: string; messages: readonly Message[] } {
  if (!r || typeof r !== 'object') throw new FlotillaError('INVALID_REQUEST', 'send() takes { topic, messages }');
  if (typeof r.topic !== 'string' || r.topic.length === 0) throw new FlotillaError('INVALID_REQUEST', 'send(): topic must be a non-empty string');
  if (!Array.isArray(r.messages) || r.messages.length === 0) throw new FlotillaError('INVALID_REQUEST', 'send(): messages must be a non-empty array');
  return { topic: r.topic, messages: r.messages };
}

function bytesOf(v: Buffer | string | null | undefined, what: string): Buffer | null {
  if (v === null || v === undefined) return null;
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  throw new FlotillaError('INVALID_REQUEST', `${what} must be a Buffer, a string or null`);
}

function toRecordInput(m: Message, i: number, nowMs: number): { record: RecordInput; sizeBytes: number } {
  if (!m || typeof m !== 'object') throw new FlotillaError('INVALID_REQUEST', `messages[${i}] must be an object`);
  const key = bytesOf(m.key, `messages[${i}].key`);
  const value = bytesOf(m.value, `messages[${i}].value`);
  const headers: RecordHeader[] = [];
  let size = RECORD_OVERHEAD_BYTES + (key?.length ?? 0) + (value?.length ?? 0);
  for (const [k, v] of Object.entries(m.headers ?? {})) {
    for (const one of Array.isArray(v) ? v : [v as Buffer | string | null]) {
      const hv = bytesOf(one, `messages[${i}].headers.${k}`);
      headers.push({ key: k, value: hv });
      size += Buffer.byteLength(k) + (hv?.length ?? 0) + 10;
    }
  }
  let timestampMs = nowMs;
  if (m.timestamp !== undefined) {
    timestampMs = typeof m.timestamp === 'string' && /^\d+$/.test(m.timestamp) ? Number(m.timestamp) : (m.timestamp as number);
    if (!Number.isSafeInteger(timestampMs) || timestampMs < 0 || timestampMs > MAX_TIMESTAMP_MS) {
      throw new FlotillaError('INVALID_REQUEST', `messages[${i}].timestamp must be ms since the epoch in [0, 2^51), got ${String(m.timestamp)}`);
    }
  }
  return { record: { key, value, headers, timestampMs }, sizeBytes: size };
}
