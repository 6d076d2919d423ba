/**
 * A broken Raft invariant is a bug, not an operating condition: crash loudly
 * (STYLE.md "Errors"). A crash is recoverable from the durable log; silent
 * divergence is not.
 */
export class RaftInvariantError extends Error {}

export function raftAssert(cond: unknown, message: string): asserts cond {
  if (!cond) throw new RaftInvariantError(`raft invariant violated: ${message}`);
}
