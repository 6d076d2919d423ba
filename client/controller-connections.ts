import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, loadProto } from '../shared/rpc/proto';
import { withAbsoluteDeadline } from '../shared/rpc/deadline';
import { UnaryAnswer, unaryWithLeaderHint } from '../shared/rpc/leader-hint';

// One gRPC client per controller address, opened on first use and kept until close().
// This is the only file of client/ that touches sockets.

/** Addresses a client keeps connections to: the bootstrap list plus leaders it was sent to. */
const CONNECTIONS_MAX = 32;

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => grpc.ClientUnaryCall;

function controllerClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadProto('controller.proto') as unknown as { flotilla: { controller: { Controller: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.controller.Controller;
}

export class ControllerConnections {
  private readonly clients = new Map<string, grpc.Client>();
  private readonly ctor = controllerClientConstructor();
  private closed = false;

  /** One RPC; rejects with the grpc.ServiceError as received. */
  unary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<Res> {
    if (this.closed) return Promise.reject(new Error('the client was closed'));
    const client = this.clientFor(address);
    const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`no unary method ${method} in controller.proto`));
    return new Promise<Res>((resolve, reject) => {
      fn.call(client, request, withAbsoluteDeadline(deadlineMs), { deadline: deadlineMs }, (err, res) => (err ? reject(err) : resolve(res as Res)));
    });
  }

  /** One controller call; the answer also names the leader when a follower forwarded it (shared/rpc/leader-hint.ts). */
  controllerUnary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<UnaryAnswer<Res>> {
    if (this.closed) return Promise.reject(new Error('the client was closed'));
    const client = this.clientFor(address);
    const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`no unary method ${method} in controller.proto`));
    return unaryWithLeaderHint<Res>(client, fn, request, withAbsoluteDeadline(deadlineMs), { deadline: deadlineMs });
  }

  close(): void {
    this.closed = true;
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }

  private clientFor(address: string): grpc.Client {
    let client = this.clients.get(address);
    if (!client) {
      if (this.clients.size >= CONNECTIONS_MAX) {
        const [oldest, c] = this.clients.entries().next().value as [string, grpc.Client];
        c.close();
        this.clients.delete(oldest);
      }
      client = new this.ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.clients.set(address, client);
    }
    return client;
  }
}
