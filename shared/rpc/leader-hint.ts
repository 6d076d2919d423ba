import * as grpc from '@grpc/grpc-js';

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

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => grpc.ClientUnaryCall;

/** The answer of one unary call, and the leader's address when a follower forwarded it. */
export interface UnaryAnswer<Res> {
  readonly res: Res;
  readonly leaderAddress: string | undefined;
}

/**
 * One unary call through `fn` (a method of a grpc-js service client). Rejects with the
 * grpc.ServiceError as received. grpc-js reports the trailers ('status') right after the
 * callback, in the same turn, so the answer waits for them.
 */
export function unaryWithLeaderHint<Res>(client: grpc.Client, fn: UnaryMethod, request: object, md: grpc.Metadata, opts: grpc.CallOptions): Promise<UnaryAnswer<Res>> {
  return new Promise((resolve, reject) => {
    let res: Res | undefined;
    let ok = false;
    const call = fn.call(client, request, md, opts, (err, value) => {
      if (err) reject(err);
      else {
        ok = true;
        res = value as Res;
      }
    });
    call.on('status', (s: grpc.StatusObject) => {
      if (!ok) return;
      const v = s.metadata.get(LEADER_ADDRESS_TRAILER)[0];
      resolve({ res: res as Res, leaderAddress: typeof v === 'string' && v !== '' ? v : undefined });
    });
  });
}
