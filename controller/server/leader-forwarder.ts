import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from '../../shared/rpc/proto';
import { withAbsoluteDeadline } from '../../shared/rpc/deadline';

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

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => grpc.ClientUnaryCall;

export function forwardHopsOf(metadata: grpc.Metadata): number {
  const raw = metadata.get(FORWARD_HOPS_KEY)[0];
  const hops = Number(raw ?? 0);
  return Number.isSafeInteger(hops) && hops >= 0 ? hops : FORWARD_HOPS_MAX;
}

export class LeaderForwarder {
  private readonly clients = new Map<string, grpc.Client>();

  constructor(private readonly serviceClient: grpc.ServiceClientConstructor) {}

  /** Calls `method` on the controller at `address`; rejects with the raw grpc.ServiceError. */
  call(address: string, method: string, request: unknown, hops: number, deadlineMs: number): Promise<unknown> {
    const client = this.clientFor(address);
    const md = withAbsoluteDeadline(deadlineMs);
    md.set(FORWARD_HOPS_KEY, String(hops));
    const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (typeof fn !== 'function') throw new Error(`no unary method ${method} on the Controller client`);
    return new Promise((resolve, reject) => {
      fn.call(client, request, md, { deadline: deadlineMs }, (err, res) => (err ? reject(err) : resolve(res)));
    });
  }

  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private clientFor(address: string): grpc.Client {
    let client = this.clients.get(address);
    if (!client) {
      if (this.clients.size >= PEER_CLIENTS_MAX) {
        const [oldest, c] = this.clients.entries().next().value as [string, grpc.Client];
        c.close();
        this.clients.delete(oldest);
      }
      client = new this.serviceClient(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.clients.set(address, client);
    }
    return client;
  }
}
