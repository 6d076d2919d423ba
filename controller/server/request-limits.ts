import { FlotillaError } from '../../shared/errors/error-codes';

// Bounds on what one request may carry (STYLE.md "Put a limit on everything"). These are
// request-shape limits checked before any work; semantic validation (topic name syntax,
// partition bounds, live brokers) belongs to the QuorumController.

export const LIMITS = {
  /** Topic names in one DescribeTopics request. */
  topicsPerRequestMax: 1_000,
  /** Kafka's bound on a topic name; longer names cannot be valid. */
  topicNameLengthMax: 249,
  /** Config overrides in one CreateTopic. */
  configsPerTopicMax: 100,
  configKeyLengthMax: 256,
  configValueLengthMax: 4_096,
  /** Events returned by one ListEvents. */
  eventsPerRequestMax: 10_000,
  eventsPerRequestDefault: 1_000,
  /** Replicas in one AlterPartition ISR. */
  isrLengthMax: 1_000,
  /** Free-text fields (reason, incarnation id, host, rack, address, client id). */
  textLengthMax: 1_024,
  /** Entries in one FetchMetadata stream message. */
  fetchEntriesPerMessageMax: 1_000,
  fetchEntriesPerMessageDefault: 256,
  /** Encoded bytes in one FetchMetadata stream message (at least one entry is always sent). */
  fetchBytesPerMessageMax: 4 * 1024 * 1024,
  /** Concurrent FetchMetadata streams on one controller. */
  metadataStreamsMax: 1_024,
  /** Unary requests being served or forwarded at once on one controller. */
  inflightRequestsMax: 1_024,
  /** Open BrokerSession streams (one per live broker; the image caps brokers lower). */
  brokerSessionsMax: 4_096,
} as const;

function invalid(message: string): FlotillaError {
  return new FlotillaError('INVALID_REQUEST', message);
}

export function checkText(field: string, value: string, max: number = LIMITS.textLengthMax): void {
  if (value.length > max) throw invalid(`${field} is ${value.length} characters; at most ${max} are allowed`);
}

export function checkTopicName(field: string, name: string): void {
  if (name.length === 0) throw invalid(`${field} is empty`);
  checkText(field, name, LIMITS.topicNameLengthMax);
}

export function checkTopicNames(names: readonly string[]): void {
  if (names.length > LIMITS.topicsPerRequestMax) {
    throw invalid(`${names.length} topic names in one request; at most ${LIMITS.topicsPerRequestMax} are allowed`);
  }
  names.forEach((n, i) => checkTopicName(`names[${i}]`, n));
}

export function checkConfigs(configs: Readonly<Record<string, string>>): void {
  const keys = Object.keys(configs);
  if (keys.length > LIMITS.configsPerTopicMax) {
    throw invalid(`${keys.length} configs; at most ${LIMITS.configsPerTopicMax} are allowed`);
  }
  for (const key of keys) {
    if (key.length === 0) throw invalid('a config key is empty');
    checkText(`config key "${key.slice(0, 40)}"`, key, LIMITS.configKeyLengthMax);
    checkText(`config "${key}" value`, configs[key] ?? '', LIMITS.configValueLengthMax);
  }
}

/** A non-negative safe integer (ids, epochs, offsets, counts arrive as numbers from proto-loader). */
export function checkNonNegative(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw invalid(`${field} must be a non-negative integer, got ${value}`);
}

export function checkPositiveId(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value <= 0) throw invalid(`${field} must be a positive integer, got ${value}`);
}

/** host:port with a port in 1..65535. */
export function checkAddress(field: string, address: string): void {
  checkText(field, address);
  const m = /^(.+):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[2]) : 0;
  if (!m || port < 1 || port > 65_535) throw invalid(`${field} must be host:port, got "${address}"`);
}

/** A requested count clamped into [1, max]; 0 or absent means the default. */
export function boundedCount(requested: number | undefined, dflt: number, max: number): number {
  if (requested === undefined || requested === 0) return dflt;
  if (!Number.isSafeInteger(requested) || requested < 0) throw invalid(`a count must be a non-negative integer, got ${requested}`);
  return Math.min(requested, max);
}
