import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../shared/rpc/proto';
import { GrpcClientPool } from '../shared/rpc/client-pool';
import { ControllerAnswer, leaderAddressIn } from '../shared/rpc/leader-hint';

// One gRPC client per controller address, opened on first use and kept until close().
// This is the only file of client/ that talks to controllers.

/** Addresses a client keeps connections to: the bootstrap list plus leaders it was sent to. */
const CONNECTIONS_MAX = 32;

function controllerClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadProto('controller.proto') as unknown as { flotilla: { controller: { Controller: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.controller.Controller;
}

export class ControllerConnections {
  private readonly clients = new GrpcClientPool(controllerClientConstructor(), { clientsMax: CONNECTIONS_MAX });
  private closed = false;

  /** One RPC; rejects with the grpc.ServiceError as received. */
  unary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<Res> {
    if (this.closed) return Promise.reject(new Error('the client was closed'));
    return this.clients.unary<Res>(address, method, request, deadlineMs);
  }

  /** One controller call; the answer also names the leader when a follower forwarded it (shared/rpc/leader-hint.ts). */
  async controllerUnary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<ControllerAnswer<Res>> {
    if (this.closed) throw new Error('the client was closed');
    const a = await this.clients.unaryWithTrailers<Res>(address, method, request, deadlineMs);
    return { res: a.res, leaderAddress: leaderAddressIn(a.trailers) };
  }

  close(): void {
    this.closed = true;
    this.clients.close();
  }
}
