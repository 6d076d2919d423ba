import * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../../shared/errors/error-codes';
import { toGrpcError } from '../../shared/rpc/grpc-errors';
import { SERVER_OPTIONS } from '../../shared/rpc/proto';
import { controllerServiceClient } from '../../controller/server';

// A tiny Controller gRPC server on 127.0.0.1 for client and CLI tests: every method answers
// through a scriptable handler and every call is counted.

export type FakeHandler = (request: Record<string, unknown>, callIndex: number, metadata: grpc.Metadata) => Promise<object> | object;

export class FakeController {
  readonly calls: { method: string; request: Record<string, unknown> }[] = [];
  private readonly handlers = new Map<string, FakeHandler>();

  private constructor(
    private readonly server: grpc.Server,
    readonly address: string,
  ) {}

  static async start(): Promise<FakeController> {
    const server = new grpc.Server(SERVER_OPTIONS);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const fake = new FakeController(server, `127.0.0.1:${port}`);
    server.addService(controllerService(), fake.implementation());
    return fake;
  }

  /** Scripts `method` (PascalCase, as in the proto). Unscripted methods answer UNKNOWN. */
  on(method: string, handler: FakeHandler): this {
    this.handlers.set(method, handler);
    return this;
  }

  count(method: string): number {
    return this.calls.filter((c) => c.method === method).length;
  }

  stop(): void {
    this.server.forceShutdown();
  }

  private implementation(): grpc.UntypedServiceImplementation {
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [method, def] of Object.entries(controllerService())) {
      if (def.responseStream) continue;
      impl[method] = (call: grpc.ServerUnaryCall<Record<string, unknown>, object>, callback: grpc.sendUnaryData<object>) => {
        const index = this.count(method);
        this.calls.push({ method, request: call.request });
        const handler = this.handlers.get(method);
        Promise.resolve()
          .then(() => {
            if (!handler) throw new FlotillaError('UNKNOWN', `fake: ${method} not scripted`);
            return handler(call.request, index, call.metadata);
          })
          .then(
            (res) => callback(null, res),
            (err) => callback(toGrpcError(err)),
          );
      };
    }
    return impl;
  }
}

function controllerService(): grpc.ServiceDefinition {
  return controllerServiceClient().service;
}

/** An address nothing listens on (a port just released). */
export async function deadAddress(): Promise<string> {
  const server = new grpc.Server();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  server.forceShutdown();
  return `127.0.0.1:${port}`;
}

export const QUORUM_REPLY = {
  leaderId: 2,
  term: 3,
  commitIndex: 10,
  appliedIndex: 10,
  snapshotIndex: 0,
  voters: [
    { id: 1, address: '127.0.0.1:1', matchIndex: 10, lag: 0 },
    { id: 2, address: '127.0.0.1:2', matchIndex: 10, lag: 0 },
  ],
  learners: [],
  servedBy: 2,
  fromLeader: true,
};
