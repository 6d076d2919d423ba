import * as grpc from '@grpc/grpc-js';
import { GrpcClientPool } from '../../shared/rpc/client-pool';

// A follower that receives a request needing the active controller passes it on, unchanged,
// to the leader (KIP-590 forwarding) instead of making every client find the leader itself.
// The hop count travels in request metadata so that two nodes with stale, crossing views of
// who leads cannot bounce a request between them forever.

/** Request metadata key carrying how many controllers already forwarded this request. */
export const FORWARD_HOPS_KEY = 'flotilla-forward-hops';

/** A request is forwarded at most this many times; then the receiver answers NOT_CONTROLLER. */
export const FORWARD_HOPS_MAX = 2;

/** Peer clients kept open; more than the quorum size only after membership changes. */
const PEER_CLIENTS_MAX = 16;

export function forwardHopsOf(metadata: grpc.Metadata): number {
  const raw = metadata.get(FORWARD_HOPS_KEY)[0];
  const hops = Number(raw ?? 0);
  return Number.isSafeInteger(hops) && hops >= 0 ? hops : FORWARD_HOPS_MAX;
}

export class LeaderForwarder {
  private readonly clients: GrpcClientPool;

  constructor(serviceClient: grpc.ServiceClientConstructor) {
    this.clients = new GrpcClientPool(serviceClient, { clientsMax: PEER_CLIENTS_MAX });
  }

  /** Calls `method` on the controller at `address`; rejects with the raw grpc.ServiceError. */
  call(address: string, method: string, request: object, hops: number, deadlineMs: number): Promise<unknown> {
    const md = new grpc.Metadata();
    md.set(FORWARD_HOPS_KEY, String(hops));
    return this.clients.unary(address, method, request, deadlineMs, md);
  }

  close(): void {
    this.clients.close();
  }
}
