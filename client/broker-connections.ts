import * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../shared/errors/error-codes';
import { fromGrpcError } from '../shared/rpc/grpc-errors';
import { withProduceCodecs } from '../shared/rpc/produce-codec';
import { loadProto } from '../shared/rpc/proto';
import { GrpcClientPool } from '../shared/rpc/client-pool';
import type { ProduceRequestWire, ProduceResponseWire } from './wire';

// The data-plane sockets: one gRPC channel per broker address (flotilla.broker.Broker,
// proto/broker.proto), unary calls with deadlines, and one long-lived ProduceStream per
// broker on which produce requests are pipelined and answered by correlation_id (Kafka's
// one connection per broker with max.in.flight requests on it). This file and
// controller-connections.ts are the only ones in client/ that touch sockets.
//
// Errors come out as FlotillaErrors: a server's typed refusal as sent (trailers), and a
// transport failure as
// - LEADER_NOT_AVAILABLE (retriable) when the broker cannot be reached or the stream broke:
//   the client refreshes metadata and retries, as Kafka does on a disconnect;
// - REQUEST_TIMED_OUT (retriable) when no answer came within the request timeout;
// - INVALID_REQUEST with details.notABroker = 1 when the address answers but does not serve
//   flotilla.broker.Broker (a controller address in the bootstrap list): skipped for data.

/** Broker addresses a client keeps channels to; the least recently opened is closed beyond. */
const CHANNELS_MAX = 256;
/** Produce requests awaiting an answer on one stream; the sender holds back beyond this. */
export const STREAM_PENDING_MAX = 1_024;

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => grpc.ClientUnaryCall;

let brokerCtor: grpc.ServiceClientConstructor | undefined;
function brokerClientConstructor(): grpc.ServiceClientConstructor {
  if (!brokerCtor) {
    const pkg = loadProto('broker.proto') as unknown as { flotilla: { broker: { Broker: grpc.ServiceClientConstructor } } };
    // Produce and ProduceStream with the hand-written codecs (record batches copied once).
    brokerCtor = grpc.makeGenericClientConstructor(withProduceCodecs(pkg.flotilla.broker.Broker.service), 'Broker');
  }
  return brokerCtor;
}

/** A unary call that can be abandoned (a consumer's long-poll when it stops). */
export interface CancellableCall<Res> {
  readonly promise: Promise<Res>;
  cancel(): void;
}

export class BrokerConnections {
  private readonly streams = new Map<string, ProduceStream>();
  private readonly clients = new GrpcClientPool(brokerClientConstructor(), {
    clientsMax: CHANNELS_MAX,
    // The oldest channel goes; its produce stream fails first, so its senders retry elsewhere.
    onEvict: (address) => {
      this.streams.get(address)?.close(new FlotillaError('LEADER_NOT_AVAILABLE', `connection to ${address} closed: too many brokers`, { address }));
      this.streams.delete(address);
    },
  });
  private closed = false;

  /** One RPC to `address`; rejects with a FlotillaError (see the header). */
  unary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<Res> {
    return this.cancellable<Res>(address, method, request, deadlineMs).promise;
  }

  cancellable<Res>(address: string, method: string, request: object, deadlineMs: number): CancellableCall<Res> {
    if (this.closed) return { promise: Promise.reject(closedError()), cancel: () => undefined };
    const client = this.clients.get(address);
    const fn = (client as unknown as Record<string, UnaryMethod | undefined>)[method];
    if (typeof fn !== 'function') throw new Error(`no unary method ${method} in broker.proto`);
    let call: grpc.ClientUnaryCall | undefined;
    const promise = new Promise<Res>((resolve, reject) => {
      call = fn.call(client, request, new grpc.Metadata(), { deadline: deadlineMs }, (err, res) =>
        err ? reject(brokerCallError(err, address)) : resolve(res as Res),
      );
    });
    return { promise, cancel: () => call?.cancel() };
  }

  /** The produce stream to `address`, opened on first use and reopened after it broke. */
  produceStream(address: string): ProduceStream {
    if (this.closed) throw closedError();
    let s = this.streams.get(address);
    if (!s || s.broken) {
      s = new ProduceStream(this.clients.get(address), address);
      this.streams.set(address, s);
    }
    return s;
  }

  /** Requests awaiting an answer on the stream to `address` (0 when none is open). */
  pendingOn(address: string): number {
    const s = this.streams.get(address);
    return s && !s.broken ? s.pendingCount : 0;
  }

  /**
   * Half-closes every produce stream and waits (up to `timeoutMs`) for each broker to end it —
   * a broker ends its side once it has handled every request it received — then closes.
   * Without this, acks=0 requests handed to the socket just before could be cut off by the
   * stream's cancellation and never appended.
   */
  async closeGracefully(timeoutMs: number): Promise<void> {
    if (this.closed) return;
    await Promise.all([...this.streams.values()].map((s) => s.finish(timeoutMs)));
    this.close();
  }

  close(): void {
    this.closed = true;
    for (const s of this.streams.values()) s.close(closedError());
    this.streams.clear();
    this.clients.close();
  }
}

interface PendingAnswer {
  readonly resolve: (res: ProduceResponseWire) => void;
  readonly reject: (err: FlotillaError) => void;
  readonly timer: NodeJS.Timeout;
}

/**
 * One ProduceStream call. Requests are written in order; answers are matched by
 * correlation_id. A request that is not answered within its timeout is rejected
 * REQUEST_TIMED_OUT (a late answer is then ignored); when the stream breaks, every pending
 * request is rejected LEADER_NOT_AVAILABLE and the next use opens a new stream.
 */
export class ProduceStream {
  broken = false;
  private readonly pending = new Map<number, PendingAnswer>();
  private readonly call: grpc.ClientDuplexStream<ProduceRequestWire, ProduceResponseWire>;

  constructor(
    client: grpc.Client,
    readonly address: string,
  ) {
    const fn = (client as unknown as { ProduceStream: (md: grpc.Metadata) => grpc.ClientDuplexStream<ProduceRequestWire, ProduceResponseWire> }).ProduceStream;
    this.call = fn.call(client, new grpc.Metadata());
    this.call.on('data', (res: ProduceResponseWire) => this.onAnswer(res));
    this.call.on('error', (err: grpc.ServiceError) => this.close(brokerCallError(err, address)));
    this.call.on('end', () => this.close(new FlotillaError('LEADER_NOT_AVAILABLE', `broker ${address} ended the produce stream`, { address })));
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /**
   * Writes one request. With `expectAnswer` (acks != 0) the promise settles with the answer
   * or an error; without, it resolves (undefined) once the request is handed to the socket.
   */
  send(req: ProduceRequestWire, expectAnswer: boolean, timeoutMs: number): Promise<ProduceResponseWire | undefined> {
    if (this.broken) return Promise.reject(new FlotillaError('LEADER_NOT_AVAILABLE', `produce stream to ${this.address} is closed`, { address: this.address }));
    if (!expectAnswer) {
      return new Promise((resolve, reject) => {
        try {
          this.call.write(req, () => resolve(undefined));
        } catch (e) {
          reject(new FlotillaError('LEADER_NOT_AVAILABLE', `write to ${this.address} failed: ${(e as Error).message}`, { address: this.address }));
        }
      });
    }
    return new Promise((resolve, reject) => {
      const id = req.correlationId;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) {
          reject(new FlotillaError('REQUEST_TIMED_OUT', `no answer from ${this.address} to produce request ${id} within ${timeoutMs} ms`, { address: this.address }));
        }
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.call.write(req);
      } catch (e) {
        this.close(new FlotillaError('LEADER_NOT_AVAILABLE', `write to ${this.address} failed: ${(e as Error).message}`, { address: this.address }));
      }
    });
  }

  /** Half-closes the stream and resolves when the broker ended it, or after `timeoutMs`. */
  finish(timeoutMs: number): Promise<void> {
    if (this.broken) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.call.once('status', done);
      this.call.once('error', done);
      this.call.end();
    });
  }

  close(err: FlotillaError): void {
    if (!this.broken) {
      this.broken = true;
      try {
        this.call.cancel();
      } catch {
        // already finished
      }
    }
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      this.pending.delete(id);
      p.reject(err);
    }
  }

  private onAnswer(res: ProduceResponseWire): void {
    const p = this.pending.get(res.correlationId);
    if (!p) return; // timed out already, or an acks=0 request that was refused
    this.pending.delete(res.correlationId);
    clearTimeout(p.timer);
    p.resolve(res);
  }
}

function closedError(): FlotillaError {
  return new FlotillaError('INVALID_REQUEST', 'the client was disconnected');
}

/** A gRPC failure talking to a broker, as a FlotillaError (see the header). */
export function brokerCallError(e: unknown, address: string): FlotillaError {
  if (e instanceof FlotillaError) return e;
  const se = e as grpc.ServiceError;
  if (typeof se?.code !== 'number') return new FlotillaError('UNKNOWN', `${address}: ${(e as Error)?.message ?? String(e)}`, { address }, { cause: e });
  if (se.metadata?.get('flotilla-error-code').length) return fromGrpcError(se);
  switch (se.code) {
    case grpc.status.UNIMPLEMENTED:
      return new FlotillaError('INVALID_REQUEST', `${address} does not serve flotilla.broker.Broker (a controller address?)`, { address, notABroker: 1 }, { cause: se });
    case grpc.status.DEADLINE_EXCEEDED:
      return new FlotillaError('REQUEST_TIMED_OUT', `${address}: ${se.details || 'deadline exceeded'}`, { address }, { cause: se });
    case grpc.status.UNAVAILABLE:
    case grpc.status.CANCELLED:
      return new FlotillaError('LEADER_NOT_AVAILABLE', `broker ${address} unreachable: ${se.details}`, { address, unreachable: 1 }, { cause: se });
    default: {
      const fe = fromGrpcError(se);
      return new FlotillaError(fe.name, `${address}: ${fe.message}`, { ...fe.details, address }, { cause: se });
    }
  }
}
