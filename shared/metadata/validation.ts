import { FlotillaError } from '../errors/error-codes';

// The rules a topic must satisfy, as Kafka states them (clients/.../internals/Topic.java,
// LogConfig.java). Each violation is a FlotillaError whose message names the value and the
// rule, so an operator can fix the request without reading code.

export const MAX_TOPIC_NAME_LENGTH = 249;
export const MAX_PARTITIONS_PER_TOPIC = 10_000;
export const MAX_REPLICATION_FACTOR = 16;
/** Cluster-wide bound on partitions: keeps every image and snapshot a bounded size. */
export const MAX_CLUSTER_PARTITIONS = 200_000;
/** Bound on one config value's length. */
export const MAX_CONFIG_VALUE_LENGTH = 1024;

const MIB = 1024 * 1024;
const TOPIC_NAME = /^[a-zA-Z0-9._-]+$/;

export function validateTopicName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new FlotillaError('INVALID_TOPIC_NAME', 'topic name is empty; it must be 1-249 characters of [a-zA-Z0-9._-]');
  }
  if (name.length > MAX_TOPIC_NAME_LENGTH) {
    throw new FlotillaError(
      'INVALID_TOPIC_NAME',
      `topic name "${name.slice(0, 40)}..." is ${name.length} characters long; the limit is ${MAX_TOPIC_NAME_LENGTH}`,
    );
  }
  if (name === '.' || name === '..') {
    throw new FlotillaError('INVALID_TOPIC_NAME', `topic name "${name}" is not allowed ("." and ".." are reserved)`);
  }
  if (!TOPIC_NAME.test(name)) {
    const bad = [...name].find((c) => !TOPIC_NAME.test(c));
    throw new FlotillaError(
      'INVALID_TOPIC_NAME',
      `topic name "${name}" contains ${JSON.stringify(bad)}; only [a-zA-Z0-9._-] are allowed`,
    );
  }
}

/**
 * '.' and '_' become the same character in metric names, so Kafka refuses a topic whose name
 * differs from an existing one only by them (Topic.hasCollision). Equal keys collide.
 */
export function topicCollisionKey(name: string): string {
  return name.replace(/\./g, '_');
}

export function validatePartitionCount(partitions: unknown): asserts partitions is number {
  if (typeof partitions !== 'number' || !Number.isInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS_PER_TOPIC) {
    throw new FlotillaError(
      'INVALID_PARTITIONS',
      `partition count ${String(partitions)} is invalid: it must be an integer from 1 to ${MAX_PARTITIONS_PER_TOPIC}`,
    );
  }
}

export function validateReplicationFactor(replicationFactor: unknown, unfencedBrokers: number): asserts replicationFactor is number {
  if (
    typeof replicationFactor !== 'number' ||
    !Number.isInteger(replicationFactor) ||
    replicationFactor < 1 ||
    replicationFactor > MAX_REPLICATION_FACTOR
  ) {
    throw new FlotillaError(
      'INVALID_REPLICATION_FACTOR',
      `replication factor ${String(replicationFactor)} is invalid: it must be an integer from 1 to ${MAX_REPLICATION_FACTOR}`,
    );
  }
  if (replicationFactor > unfencedBrokers) {
    throw new FlotillaError(
      'INVALID_REPLICATION_FACTOR',
      `replication factor ${replicationFactor} is larger than the number of live (unfenced) brokers, ${unfencedBrokers}`,
      { replicationFactor, unfencedBrokers },
    );
  }
}

// ---- topic configs ----

export type CleanupPolicy = 'delete' | 'compact';
/** message.timestamp.type: the producer's record timestamps, or the leader's append time. */
export type TimestampType = 'CreateTime' | 'LogAppendTime';

/** A topic's effective configuration: the defaults overlaid with its overrides. */
export interface TopicConfig {
  readonly minInsyncReplicas: number;
  readonly retentionMs: number;
  readonly retentionBytes: number;
  readonly cleanupPolicy: CleanupPolicy;
  readonly maxMessageBytes: number;
  readonly segmentBytes: number;
  readonly uncleanLeaderElectionEnable: boolean;
  readonly flushMessages: number;
  readonly flushMs: number;
  readonly messageTimestampType: TimestampType;
}

interface ConfigSpec {
  readonly field: keyof TopicConfig;
  /** The default, as the string a user would write. */
  readonly defaultValue: string;
  readonly rule: string;
  parse(value: string): number | boolean | string | undefined;
}

function intIn(min: number, max: number): (v: string) => number | undefined {
  return (v) => {
    if (!/^-?\d+$/.test(v)) return undefined;
    const n = Number(v);
    return Number.isSafeInteger(n) && n >= min && n <= max ? n : undefined;
  };
}

const MAX_INT = Number.MAX_SAFE_INTEGER;

/** Every topic config key we know, with its default and rule (Kafka's defaults). */
export const TOPIC_CONFIGS: Readonly<Record<string, ConfigSpec>> = {
  'min.insync.replicas': {
    field: 'minInsyncReplicas',
    defaultValue: '1',
    rule: 'an integer >= 1 and <= the replication factor',
    parse: intIn(1, MAX_REPLICATION_FACTOR),
  },
  'retention.ms': { field: 'retentionMs', defaultValue: '604800000', rule: 'an integer >= -1 (-1 = forever)', parse: intIn(-1, MAX_INT) },
  'retention.bytes': { field: 'retentionBytes', defaultValue: '-1', rule: 'an integer >= -1 (-1 = unlimited)', parse: intIn(-1, MAX_INT) },
  'cleanup.policy': {
    field: 'cleanupPolicy',
    defaultValue: 'delete',
    rule: 'one of delete, compact',
    parse: (v) => (v === 'delete' || v === 'compact' ? v : undefined),
  },
  'max.message.bytes': {
    field: 'maxMessageBytes',
    defaultValue: '1048588',
    rule: `an integer from 1 to ${100 * MIB} (100 MiB)`,
    parse: intIn(1, 100 * MIB),
  },
  'segment.bytes': {
    field: 'segmentBytes',
    defaultValue: '1073741824',
    rule: `an integer >= ${MIB} (1 MiB)`,
    parse: intIn(MIB, MAX_INT),
  },
  'unclean.leader.election.enable': {
    field: 'uncleanLeaderElectionEnable',
    defaultValue: 'false',
    rule: 'true or false',
    parse: (v) => (v === 'true' ? true : v === 'false' ? false : undefined),
  },
  'flush.messages': { field: 'flushMessages', defaultValue: String(MAX_INT), rule: 'an integer >= 1', parse: intIn(1, MAX_INT) },
  'flush.ms': { field: 'flushMs', defaultValue: String(MAX_INT), rule: 'an integer >= 1', parse: intIn(1, MAX_INT) },
  'message.timestamp.type': {
    field: 'messageTimestampType',
    defaultValue: 'CreateTime',
    rule: 'one of CreateTime, LogAppendTime',
    parse: (v) => (v === 'CreateTime' || v === 'LogAppendTime' ? v : undefined),
  },
};

/** parseTopicConfig of no overrides, once computed (it is frozen, so it can be shared). */
let defaultsParsed: TopicConfig | null = null;

export const DEFAULT_TOPIC_CONFIG: TopicConfig = parseTopicConfig(new Map());

/**
 * Check a CreateTopic's config overrides; returns the effective config. Each violation is
 * INVALID_CONFIG naming the key, the value and the rule.
 */
export function validateTopicConfigs(configs: Readonly<Record<string, string>> | undefined, replicationFactor: number): TopicConfig {
  const overrides = new Map<string, string>();
  for (const [key, value] of Object.entries(configs ?? {})) {
    const spec = Object.prototype.hasOwnProperty.call(TOPIC_CONFIGS, key) ? TOPIC_CONFIGS[key] : undefined;
    if (spec === undefined) {
      throw new FlotillaError(
        'INVALID_CONFIG',
        `unknown topic config "${key}"; known keys: ${Object.keys(TOPIC_CONFIGS).join(', ')}`,
        { key },
      );
    }
    if (typeof value !== 'string' || value.length > MAX_CONFIG_VALUE_LENGTH || spec.parse(value) === undefined) {
      const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 64)) : String(value);
      throw new FlotillaError('INVALID_CONFIG', `config ${key}=${shown} is invalid: it must be ${spec.rule}`, { key });
    }
    overrides.set(key, value);
  }
  const config = parseTopicConfig(overrides);
  if (config.minInsyncReplicas > replicationFactor) {
    throw new FlotillaError(
      'INVALID_CONFIG',
      `config min.insync.replicas=${config.minInsyncReplicas} is invalid: it must be <= the replication factor ${replicationFactor}`,
      { key: 'min.insync.replicas' },
    );
  }
  return config;
}

/** The effective config of a topic from its (already validated) overrides. */
export function parseTopicConfig(overrides: ReadonlyMap<string, string>): TopicConfig {
  // Most topics have no overrides, and every CreateTopic and DescribeTopic parses one config:
  // ~1 % of a busy leader's CPU went to re-parsing the same defaults.
  if (overrides.size === 0 && defaultsParsed !== null) return defaultsParsed;
  const out: Record<string, unknown> = {};
  for (const [key, spec] of Object.entries(TOPIC_CONFIGS)) {
    const raw = overrides.get(key);
    let value = raw === undefined ? undefined : spec.parse(raw);
    // An override that does not parse was never validated (it cannot come from the
    // controller): fall back to the default rather than let one bad value poison reads.
    if (value === undefined) value = spec.parse(spec.defaultValue);
    out[spec.field] = value;
  }
  const config = Object.freeze(out) as unknown as TopicConfig;
  if (overrides.size === 0) defaultsParsed = config;
  return config;
}
