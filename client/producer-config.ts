import { FlotillaError } from '../shared/errors/error-codes';

// Producer options, their defaults and the QoS presets (issue 3 §5). Pure.
//
//   preset       acks  retries                 idempotent  what it promises
//   atMostOnce   0     none                    no          a record may be lost, never duplicated
//   atLeastOnce  all   until deliveryTimeoutMs no          nothing acknowledged is lost; a retry
//                                                           may duplicate (and, with more than one
//                                                           request in flight, reorder)
//   exactlyOnce  all   until deliveryTimeoutMs yes         no duplicates and per-partition order
//                                                           under retries (idempotence; transactions
//                                                           come later)
//
// Without a preset the defaults are atLeastOnce's (KafkaJS's defaults: acks all, retries,
// not idempotent). An explicit option that contradicts the preset (qos atMostOnce with
// idempotent: true, say) is refused INVALID_REQUEST rather than silently overridden.

export type Qos = 'atMostOnce' | 'atLeastOnce' | 'exactlyOnce';
export type Acks = -1 | 0 | 1 | 'all';

export interface ProducerRetryOptions {
  /** Retries of one batch after its first attempt; 0 = never retry. Default: unbounded (deliveryTimeoutMs bounds them). */
  readonly retries?: number;
  /** Backoff before the first retry; doubles per retry, with jitter. Default 100. */
  readonly backoffInitialMs?: number;
  /** Cap on one backoff. Default 1000. */
  readonly backoffMaxMs?: number;
}

export interface ProducerConfig {
  /** A delivery-guarantee preset (table above). */
  readonly qos?: Qos;
  /** Idempotent producer: producer id, per-partition sequence numbers, dedup on retry. */
  readonly idempotent?: boolean;
  /** -1/'all' (every ISR member), 1 (the leader), 0 (no answer). */
  readonly acks?: Acks;
  /** How long a batch waits for more records before it is sent (linger.ms). Default 5. */
  readonly lingerMs?: number;
  /** A batch is sent once it holds this many bytes (batch.size). Default 65536. */
  readonly batchSizeBytes?: number;
  /** Batches in flight per partition (max.in.flight.requests.per.connection, per partition here). Default 5; at most 5 when idempotent. */
  readonly maxInFlightRequests?: number;
  readonly retry?: ProducerRetryOptions;
  /** How long the broker may wait for acks=all (ProduceRequest.timeout_ms). Default 30000. */
  readonly timeoutMs?: number;
  /** How long the client waits for a produce answer before retrying (request.timeout.ms). Default timeoutMs + 5000. */
  readonly requestTimeoutMs?: number;
  /** Bound on a record's whole delivery, retries included (delivery.timeout.ms). Default 120000. */
  readonly deliveryTimeoutMs?: number;
  /** Bytes of records buffered, not yet acknowledged (buffer.memory). Default 32 MiB. */
  readonly bufferMemoryBytes?: number;
  /** How long send() may wait for buffer space, metadata or a producer id (max.block.ms). Default 60000. */
  readonly maxBlockMs?: number;
  /** Bound on one produce request (max.request.size). Default 4 MiB (the gRPC limit is 16 MiB). */
  readonly maxRequestBytes?: number;
}

export interface ResolvedProducerConfig {
  readonly idempotent: boolean;
  readonly acks: -1 | 0 | 1;
  readonly lingerMs: number;
  readonly batchSizeBytes: number;
  readonly maxInFlightRequests: number;
  readonly retries: number;
  readonly backoffInitialMs: number;
  readonly backoffMaxMs: number;
  readonly timeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly deliveryTimeoutMs: number;
  readonly bufferMemoryBytes: number;
  readonly maxBlockMs: number;
  readonly maxRequestBytes: number;
}

/** Kafka's limit (ProducerConfig): a broker keeps the last 5 batches per producer for dedup. */
export const IDEMPOTENT_IN_FLIGHT_MAX = 5;

const PRESETS: Record<Qos, { acks: -1 | 0 | 1; idempotent: boolean; retries: number }> = {
  atMostOnce: { acks: 0, idempotent: false, retries: 0 },
  atLeastOnce: { acks: -1, idempotent: false, retries: Number.MAX_SAFE_INTEGER },
  exactlyOnce: { acks: -1, idempotent: true, retries: Number.MAX_SAFE_INTEGER },
};

function bad(why: string): never {
  throw new FlotillaError('INVALID_REQUEST', `producer config: ${why}`);
}

function acksNumber(a: Acks | undefined): -1 | 0 | 1 | undefined {
  if (a === undefined) return undefined;
  if (a === 'all' || a === -1) return -1;
  if (a === 0 || a === 1) return a;
  return bad(`acks must be -1, 'all', 0 or 1, got ${String(a)}`);
}

function num(name: string, v: number | undefined, dflt: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad(`${name} must be an integer in [${min}, ${max}], got ${String(v)}`);
  return v;
}

export function resolveProducerConfig(c: ProducerConfig = {}): ResolvedProducerConfig {
  if (c.qos !== undefined && !(c.qos in PRESETS)) bad(`qos must be atMostOnce, atLeastOnce or exactlyOnce, got ${String(c.qos)}`);
  const preset = c.qos ? PRESETS[c.qos] : undefined;
  const acksGiven = acksNumber(c.acks);
  if (preset && acksGiven !== undefined && acksGiven !== preset.acks) bad(`qos ${c.qos} means acks ${preset.acks}, not ${acksGiven}`);
  if (preset && c.idempotent !== undefined && c.idempotent !== preset.idempotent) bad(`qos ${c.qos} means idempotent ${preset.idempotent}`);
  if (c.qos === 'atMostOnce' && c.retry?.retries !== undefined && c.retry.retries !== 0) bad('qos atMostOnce means no retries');
  const idempotent = c.idempotent ?? preset?.idempotent ?? false;
  const acks = acksGiven ?? preset?.acks ?? -1;
  const retries = num('retry.retries', c.retry?.retries, preset?.retries ?? Number.MAX_SAFE_INTEGER, 0);
  const maxInFlightRequests = num('maxInFlightRequests', c.maxInFlightRequests, 5, 1, 1_000);
  if (idempotent) {
    // Kafka's rules for enable.idempotence (ProducerConfig.postProcessAndValidateIdempotenceConfigs).
    if (acks !== -1) bad(`an idempotent producer needs acks all (-1), not ${acks}`);
    if (retries === 0) bad('an idempotent producer needs retries');
    if (maxInFlightRequests > IDEMPOTENT_IN_FLIGHT_MAX) bad(`an idempotent producer allows at most ${IDEMPOTENT_IN_FLIGHT_MAX} requests in flight per partition, not ${maxInFlightRequests}`);
  }
  const timeoutMs = num('timeoutMs', c.timeoutMs, 30_000, 1, 2 ** 31 - 1);
  return {
    idempotent,
    acks,
    lingerMs: num('lingerMs', c.lingerMs, 5, 0, 60_000),
    batchSizeBytes: num('batchSizeBytes', c.batchSizeBytes, 65_536, 1, 16 * 1024 * 1024),
    maxInFlightRequests,
    retries,
    backoffInitialMs: num('retry.backoffInitialMs', c.retry?.backoffInitialMs, 100, 0),
    backoffMaxMs: num('retry.backoffMaxMs', c.retry?.backoffMaxMs, 1_000, 0),
    timeoutMs,
    requestTimeoutMs: num('requestTimeoutMs', c.requestTimeoutMs, timeoutMs + 5_000, 1),
    deliveryTimeoutMs: num('deliveryTimeoutMs', c.deliveryTimeoutMs, 120_000, 1),
    bufferMemoryBytes: num('bufferMemoryBytes', c.bufferMemoryBytes, 32 * 1024 * 1024, 1_024),
    maxBlockMs: num('maxBlockMs', c.maxBlockMs, 60_000, 0),
    maxRequestBytes: num('maxRequestBytes', c.maxRequestBytes, 4 * 1024 * 1024, 1_024, 15 * 1024 * 1024),
  };
}
