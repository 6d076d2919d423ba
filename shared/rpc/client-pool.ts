import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS } from './proto';
import { withAbsoluteDeadline } from './deadline';

// One gRPC client (one HTTP/2 channel) per peer address, opened on first use and kept until
// close(). The client library, the broker's controller channel and the controllers' leader
// forwarder all hold one: a bounded map, so a peer list that keeps changing (leaders moving,
// membership changes) cannot grow connections without end.

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => grpc.ClientUnaryCall;
type ServerStreamMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

export interface ClientPoolOptions {
  /** Clients kept open at most; opening one more closes a victim first. */
  readonly clientsMax: number;
  /** Which address to close when full (default: the one opened first). */
  readonly pickVictim?: (addresses: readonly string[]) => string;
  /** Called just before a victim's client is closed (e.g. to fail its streams first). */
  readonly onEvict?: (address: string) => void;
}

/** A unary call's answer with the trailers the server sent (e.g. shared/rpc/leader-hint.ts). */
export interface UnaryAnswer<Res> {
  readonly res: Res;
  readonly trailers: grpc.Metadata;
}

export class GrpcClientPool {
  private readonly clients = new Map<string, grpc.Client>();

  constructor(
    private readonly ctor: grpc.ServiceClientConstructor,
    private readonly options: ClientPoolOptions,
  ) {
    if (!Number.isSafeInteger(options.clientsMax) || options.clientsMax < 1) throw new RangeError(`clientsMax must be a positive integer, got ${options.clientsMax}`);
  }

  get size(): number {
    return this.clients.size;
  }

  /** The client for `address`, opening it (and closing a victim when full) if needed. */
  get(address: string): grpc.Client {
    let client = this.clients.get(address);
    if (!client) {
      if (this.clients.size >= this.options.clientsMax) {
        const addresses = [...this.clients.keys()];
        const victim = this.options.pickVictim?.(addresses) ?? addresses[0]!;
        this.options.onEvict?.(victim);
        this.clients.get(victim)?.close();
        this.clients.delete(victim);
      }
      client = new this.ctor(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
      this.clients.set(address, client);
    }
    return client;
  }

  /**
   * One unary call of `method` on `address`, with the absolute deadline both as the gRPC
   * deadline and in the request metadata (shared/rpc/deadline.ts). Rejects with the
   * grpc.ServiceError as received.
   */
  unary<Res>(address: string, method: string, request: object, deadlineMs: number, metadata: grpc.Metadata = new grpc.Metadata()): Promise<Res> {
    return this.unaryWithTrailers<Res>(address, method, request, deadlineMs, metadata).then((a) => a.res);
  }

  /**
   * unary() that also gives the trailers. grpc-js reports them ('status') right after the
   * answer's callback, in the same turn, so the answer waits for them.
   */
  unaryWithTrailers<Res>(address: string, method: string, request: object, deadlineMs: number, metadata: grpc.Metadata = new grpc.Metadata()): Promise<UnaryAnswer<Res>> {
    const client = this.get(address);
    const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (typeof fn !== 'function') return Promise.reject(new Error(`no unary method ${method} on this service`));
    const md = withAbsoluteDeadline(deadlineMs, metadata);
    return new Promise<UnaryAnswer<Res>>((resolve, reject) => {
      let res: Res | undefined;
      let ok = false;
      const call = fn.call(client, request, md, { deadline: deadlineMs }, (err, value) => {
        if (err) reject(err);
        else {
          ok = true;
          res = value as Res;
        }
      });
      call.on('status', (st: grpc.StatusObject) => {
        if (ok) resolve({ res: res as Res, trailers: st.metadata });
      });
    });
  }

  /** Opens a server stream of `method` on `address`; the caller reads it and cancels it when done. */
  serverStream(address: string, method: string, request: object): grpc.ClientReadableStream<unknown> {
    const client = this.get(address);
    const fn = (client as unknown as Record<string, ServerStreamMethod | undefined>)[method];
    if (typeof fn !== 'function') throw new Error(`no server-streaming method ${method} on this service`);
    return fn.call(client, request, new grpc.Metadata(), {});
  }

  /** Closes every client: calls in flight fail. The pool can be used again afterwards. */
  close(): void {
    for (const c of this.clients.values()) c.close();
    this.clients.clear();
  }
}
