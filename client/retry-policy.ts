// When and how long to wait between attempts. Pure: no clock, no timers, randomness
// injected, so the schedule is testable without sockets.

export interface RetryOptions {
  /** Backoff before the second attempt; doubles per attempt up to backoffMaxMs. Default 100. */
  readonly backoffInitialMs?: number;
  /** Cap on one backoff. Default 2000. */
  readonly backoffMaxMs?: number;
  /** Bound on the whole operation, all attempts and backoffs included. Default 15000. */
  readonly totalTimeoutMs?: number;
  /** Bound on one attempt (one RPC). Default 5000, never past the total deadline. */
  readonly requestTimeoutMs?: number;
  /** Bound on attempts, whatever the time left. Default 100. */
  readonly attemptsMax?: number;
  /** NOT_CONTROLLER redirects followed at once, before backoff applies to them too. Default 3. */
  readonly redirectsWithoutBackoffMax?: number;
}

export type ResolvedRetryOptions = Required<RetryOptions>;

export function resolveRetryOptions(o: RetryOptions = {}): ResolvedRetryOptions {
  const r: ResolvedRetryOptions = {
    backoffInitialMs: o.backoffInitialMs ?? 100,
    backoffMaxMs: o.backoffMaxMs ?? 2_000,
    totalTimeoutMs: o.totalTimeoutMs ?? 15_000,
    requestTimeoutMs: o.requestTimeoutMs ?? 5_000,
    attemptsMax: o.attemptsMax ?? 100,
    redirectsWithoutBackoffMax: o.redirectsWithoutBackoffMax ?? 3,
  };
  for (const [k, v] of Object.entries(r)) {
    if (!Number.isFinite(v) || v < 0) throw new RangeError(`retry option ${k} must be a non-negative number, got ${v}`);
  }
  if (r.attemptsMax < 1) throw new RangeError('retry option attemptsMax must be at least 1');
  return r;
}

/**
 * Backoff before retry number `retry` (0 = first retry): exponential with "equal jitter",
 * uniformly in [cap/2, cap) where cap = min(max, initial * 2^retry). Half of it is random so
 * that clients failing together do not retry together; half is fixed so a retry never comes
 * at once after a failure.
 */
export function backoffMs(retry: number, o: Pick<ResolvedRetryOptions, 'backoffInitialMs' | 'backoffMaxMs'>, random: () => number): number {
  const cap = Math.min(o.backoffMaxMs, o.backoffInitialMs * 2 ** Math.min(retry, 30));
  return cap / 2 + random() * (cap / 2);
}
