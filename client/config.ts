import { FlotillaError } from '../shared/errors/error-codes';
import { RetryOptions, resolveRetryOptions } from './retry-policy';

// The client's top-level configuration: where the cluster is, and how admin calls retry.

export interface FlotillaConfig extends RetryOptions {
  /** host:port of one or more brokers (KafkaJS's name); tried in turn. */
  readonly brokers?: readonly string[];
  /**
   * Alias of `brokers`, kept from the controller-only client: controller addresses work for
   * admin calls, broker addresses for everything. Both lists are used when both are given.
   */
  readonly bootstrap?: readonly string[];
  /** Where retries are reported (e.g. a pino logger); silent by default. */
  readonly logger?: { debug(obj: object, msg: string): void };
  /** Injected randomness for backoff jitter and the sticky partitioner (tests); Math.random by default. */
  readonly random?: () => number;
}

/** The config with one checked address list. */
export interface ResolvedFlotillaConfig extends FlotillaConfig {
  readonly addresses: readonly string[];
}

const ADDRESS = /^[^\s]+:\d{1,5}$/;

export function resolveFlotillaConfig(config: FlotillaConfig): ResolvedFlotillaConfig {
  if (!config || typeof config !== 'object') throw new FlotillaError('INVALID_REQUEST', 'new Flotilla({ brokers: ["host:port", ...] })');
  for (const field of ['brokers', 'bootstrap'] as const) {
    const v = config[field];
    if (v !== undefined && !Array.isArray(v)) throw new FlotillaError('INVALID_REQUEST', `${field} must be an array of host:port`);
  }
  const addresses = [...new Set([...(config.brokers ?? []), ...(config.bootstrap ?? [])])];
  if (addresses.length === 0) throw new FlotillaError('INVALID_REQUEST', 'brokers (or bootstrap) needs at least one address (host:port)');
  for (const a of addresses) {
    if (typeof a !== 'string' || !ADDRESS.test(a)) throw new FlotillaError('INVALID_REQUEST', `broker address "${String(a)}" is not host:port`);
  }
  resolveRetryOptions(config);
  return { ...config, addresses };
}
