import { FlotillaError } from '../../shared/errors/error-codes';
import { DEFAULT_TOPIC_CONFIG } from '../../shared/metadata';
import type { TimestampType, TopicConfig } from '../../shared/metadata';
import { MAX_RELATIVE_OFFSET } from './log-segment';

// The settings of one partition log, named after the Kafka topic configs they mirror.
// Defaults come from the topic config table (shared/metadata TOPIC_CONFIGS), so a topic
// created without overrides and a log opened without a config behave the same; the settings
// a topic cannot set (segment.ms, index.interval.bytes) take Kafka's defaults.
//
// Flush policy (flush.messages / flush.ms). DEFAULT: neither triggers — both are
// Number.MAX_SAFE_INTEGER, Kafka's defaults. The log still fsyncs when a segment rolls, on
// truncation, on close, and the leader-epoch checkpoint on every change; between those, data
// sits in the OS page cache.
//   - What the default risks: a power loss or kernel crash loses what the page cache held of
//     the active segment (a process crash, kill -9 included, loses nothing that was written).
//     The replica then recovers to its last whole batch and refetches the rest from the
//     leader; an acknowledged record is lost only if every in-sync replica loses it at once
//     (a whole-cluster power loss, or all replicas on one machine as in `flotilla cluster up`).
//     Durability comes from replication (acks=all, min.insync.replicas), as in Kafka.
//   - flush.messages=N: fsync after every N records appended. N=1 makes every acknowledged
//     record durable on this replica even across power loss, at the price of one fsync per
//     append (throughput bounded by the disk's fsync latency; reads queue behind it).
//   - flush.ms=T: fsync when T ms have passed since the last flush, checked on append and by
//     maybeFlush() (the caller ticks it): bounds the loss window to about T ms of appends.

export interface LogConfig {
  /** segment.bytes: roll to a new segment before one would exceed this size. <= 2^31 - 1. */
  readonly segmentBytes: number;
  /** segment.ms: roll when the active segment's first append is this old (wall clock). */
  readonly segmentMs: number;
  /** index.interval.bytes: bytes of log between two index entries (the walk after a lookup). */
  readonly indexIntervalBytes: number;
  /** max.message.bytes: the largest record batch accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** retention.ms: delete a closed segment whose newest record is older; Infinity = forever. */
  readonly retentionMs: number;
  /** retention.bytes: delete oldest closed segments while the log exceeds it; Infinity = no limit. */
  readonly retentionBytes: number;
  /** flush.messages: fsync after this many records; MAX_SAFE_INTEGER or Infinity = never by count. */
  readonly flushMessages: number;
  /** flush.ms: fsync when the last flush is this old; MAX_SAFE_INTEGER or Infinity = never by time. */
  readonly flushMs: number;
  /**
   * Flotilla's own (no Kafka analogue): bytes of the newest batches the log keeps in memory to
   * serve reads at the tail (follower fetches, caught-up consumers) without reading the file.
   * 0 = none. Memory per partition replica: this much, a ring allocated at its first append.
   */
  readonly tailCacheBytes: number;
  /**
   * message.timestamp.type: with LogAppendTime a leader writes its append time into every
   * batch it appends (the timestamp-type bit, maxTimestamp, a new CRC), and that is each
   * record's timestamp; with CreateTime the producer's timestamps stand.
   */
  readonly messageTimestampType: TimestampType;
}

/** Default tail.cache.bytes: 2 MiB per partition replica, ~32 batches of 64 KiB. */
export const DEFAULT_TAIL_CACHE_BYTES = 2 * 1024 * 1024;
/** Upper bound for tailCacheBytes (memory is spent per partition replica). */
export const MAX_TAIL_CACHE_BYTES = 256 * 1024 * 1024;

const SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000;

/** The log settings of a topic config (-1 for retention means no limit). */
export function logConfigFromTopicConfig(t: TopicConfig, extra: Partial<LogConfig> = {}): LogConfig {
  return checkLogConfig({
    // A topic may set segment.bytes up to 2^53; index positions are int32, so cap it.
    segmentBytes: Math.min(t.segmentBytes, MAX_RELATIVE_OFFSET),
    segmentMs: SEVEN_DAYS_MS,
    indexIntervalBytes: 4096,
    maxMessageBytes: t.maxMessageBytes,
    retentionMs: t.retentionMs < 0 ? Infinity : t.retentionMs,
    retentionBytes: t.retentionBytes < 0 ? Infinity : t.retentionBytes,
    flushMessages: t.flushMessages,
    flushMs: t.flushMs,
    tailCacheBytes: DEFAULT_TAIL_CACHE_BYTES,
    messageTimestampType: t.messageTimestampType,
    ...extra,
  });
}

export const DEFAULT_LOG_CONFIG: LogConfig = logConfigFromTopicConfig(DEFAULT_TOPIC_CONFIG);

/** Checks every field (INVALID_CONFIG naming the field) and returns the config. */
export function checkLogConfig(c: LogConfig): LogConfig {
  type NumericKey = { [K in keyof LogConfig]: LogConfig[K] extends number ? K : never }[keyof LogConfig];
  const positive = (name: NumericKey, max = Infinity, min = 1): void => {
    const v = c[name];
    const ok = v === Infinity ? max === Infinity : Number.isSafeInteger(v) && v >= min && v <= max;
    if (!ok) throw new FlotillaError('INVALID_CONFIG', `log config ${name}=${v}: must be an integer from ${min} to ${max}`, { key: name });
  };
  positive('segmentBytes', MAX_RELATIVE_OFFSET);
  positive('segmentMs');
  positive('indexIntervalBytes', MAX_RELATIVE_OFFSET);
  positive('maxMessageBytes', MAX_RELATIVE_OFFSET);
  positive('retentionMs', Infinity, 0);
  positive('retentionBytes', Infinity, 0);
  positive('flushMessages');
  positive('flushMs');
  positive('tailCacheBytes', MAX_TAIL_CACHE_BYTES, 0);
  if (c.messageTimestampType !== 'CreateTime' && c.messageTimestampType !== 'LogAppendTime') {
    throw new FlotillaError('INVALID_CONFIG', `log config messageTimestampType=${String(c.messageTimestampType)}: must be CreateTime or LogAppendTime`, { key: 'messageTimestampType' });
  }
  return Object.freeze({ ...c });
}
