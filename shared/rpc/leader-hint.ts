import type * as grpc from '@grpc/grpc-js';

// Where the active controller is, told to a caller that reached a follower.
//
// Any controller accepts a controller call: a follower forwards it to the leader. Callers
// (the admin client, a broker's controller channel) keep using the address that last
// answered, so a caller whose first answer came through a follower would go on paying the
// extra hop for every call — and that follower the CPU of forwarding them all. (The metadata
// throughput benchmark showed it: one follower used two to four times the CPU of the other,
// and each write took a hop more.) So a follower that forwarded a call successfully names
// the leader in a trailer, and the caller sends its next call there.

export const LEADER_ADDRESS_TRAILER = 'flotilla-leader-address';

/** The answer of one controller call, and the leader's address when a follower forwarded it. */
export interface ControllerAnswer<Res> {
  readonly res: Res;
  readonly leaderAddress: string | undefined;
}

/** The leader address a forwarding follower put in the trailers, if any. */
export function leaderAddressIn(trailers: grpc.Metadata): string | undefined {
  const v = trailers.get(LEADER_ADDRESS_TRAILER)[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}
