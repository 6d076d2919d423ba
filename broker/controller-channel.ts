import * as grpc from '@grpc/grpc-js';
import { FlotillaError } from '../shared/errors/error-codes';
import type { Logger } from '../shared/log';
import { fromGrpcError } from '../shared/rpc/grpc-errors';
import { loadProto } from '../shared/rpc/proto';
import { GrpcClientPool } from '../shared/rpc/client-pool';
import { ControllerAnswer, leaderAddressIn } from '../shared/rpc/leader-hint';

// The broker's one way to the controller quorum (Kafka's NodeToControllerChannelManager):
// unary calls routed to the active controller, and FetchMetadata streams from any
// controller. Every other broker file reaches the controllers through this class, so the
// routing rules live in one place:
//
// - Try the controller we believe is active first (the last one that answered — or the
//   leader it named, when it forwarded the call — or the one a NOT_CONTROLLER named);
//   otherwise walk the configured list. A follower forwards broker-facing and admin calls
//   already, so any controller is a valid first try.
// - NOT_CONTROLLER with a leader address: follow it at once (bounded).
// - CONTROLLER_UNAVAILABLE, NOT_CONTROLLER without an address, an unreachable address: back
//   off (exponential, jittered) and try the next address, within the caller's deadline.
// - Any other typed answer is the controller's verdict and is returned unchanged.
// - A deadline that expires is retried elsewhere only for idempotent calls: a write whose
//   answer was lost may have been applied (REQUEST_TIMED_OUT says so).

/** Clients kept open: the configured controllers plus addresses learned from NOT_CONTROLLER. */
const CLIENTS_MAX = 16;
/** NOT_CONTROLLER redirects followed without backoff within one call. */
const REDIRECTS_WITHOUT_BACKOFF_MAX = 3;

export interface ControllerChannelOptions {
  /** host:port of the controllers (the quorum's voters); at least one. */
  readonly controllers: readonly string[];
  readonly logger: Logger;
  /** Bound on attempts of one call, whatever the time left. Default 10. */
  readonly attemptsMax?: number;
  /** First backoff between attempts; doubles per attempt up to backoffMaxMs. Default 50. */
  readonly backoffInitialMs?: number;
  /** Default 1000. */
  readonly backoffMaxMs?: number;
  /** Injected randomness (jitter, first address); Math.random by default. */
  readonly random?: () => number;
}

export interface CallOptions {
  /** Absolute deadline (ms since the epoch) for the whole call, retries included. */
  readonly deadlineMs: number;
  /**
   * True when repeating the call is harmless (heartbeats, reads): an attempt that timed out
   * is then retried on another controller. Writes (CreateTopic, ...) must say false.
   */
  readonly idempotent: boolean;
  /** Bound on one attempt; default: the whole deadline. Only meaningful when idempotent. */
  readonly attemptTimeoutMs?: number;
}


/** The Controller service's client class from proto/controller.proto. */
export function controllerClientConstructor(): grpc.ServiceClientConstructor {
  const pkg = loadProto('controller.proto') as unknown as { flotilla: { controller: { Controller: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.controller.Controller;
}

export class ControllerChannel {
  private readonly controllers: readonly string[];
  private readonly logger: Logger;
  // Evict a learned address (a leader met through a redirect) before a configured one.
  private readonly clients = new GrpcClientPool(controllerClientConstructor(), {
    clientsMax: CLIENTS_MAX,
    pickVictim: (open) => open.find((a) => !this.controllers.includes(a)) ?? open[0]!,
  });
  private readonly attemptsMax: number;
  private readonly backoffInitialMs: number;
  private readonly backoffMaxMs: number;
  private readonly random: () => number;
  /** The controller believed active: tried first. */
  private preferred: string | undefined;
  /** Next index into `controllers` when the preferred one fails. */
  private cursor: number;
  private closed = false;

  constructor(o: ControllerChannelOptions) {
    if (o.controllers.length === 0) throw new Error('a broker needs at least one controller address');
    this.controllers = [...o.controllers];
    this.logger = o.logger;
    this.attemptsMax = o.attemptsMax ?? 10;
    this.backoffInitialMs = o.backoffInitialMs ?? 50;
    this.backoffMaxMs = o.backoffMaxMs ?? 1_000;
    this.random = o.random ?? Math.random;
    // Brokers started together should not all pick the same first controller.
    this.cursor = Math.floor(this.random() * this.controllers.length);
  }

  /** The configured controller addresses. */
  get addresses(): readonly string[] {
    return this.controllers;
  }

  /**
   * One unary call to the active controller, with the routing rules in the header of this
   * file. Rejects with a FlotillaError: the controller's own answer unchanged, or
   * CONTROLLER_UNAVAILABLE / REQUEST_TIMED_OUT when no controller could be reached in time.
   */
  async call<Res>(method: string, request: object, o: CallOptions): Promise<Res> {
    const startMs = Date.now();
    let address = this.preferred ?? this.nextAddress();
    let redirects = 0;
    let retries = 0;
    let last: FlotillaError | undefined;
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'the broker is shutting down');
      const now = Date.now();
      if (now >= o.deadlineMs) throw this.gaveUp(method, last, attempt - 1, startMs);
      const attemptDeadlineMs = o.idempotent && o.attemptTimeoutMs !== undefined ? Math.min(o.deadlineMs, now + o.attemptTimeoutMs) : o.deadlineMs;
      let err: grpc.ServiceError;
      try {
        const { res, leaderAddress } = await this.unary<Res>(address, method, request, attemptDeadlineMs);
        // A follower that forwarded names the leader: go there directly next time.
        this.preferred = leaderAddress ?? address;
        return res;
      } catch (e) {
        err = e as grpc.ServiceError;
      }
      const typed = err.metadata?.get('flotilla-error-code').length > 0;
      let fe: FlotillaError;
      if (typed) {
        fe = fromGrpcError(err);
        if (fe.name !== 'NOT_CONTROLLER' && fe.name !== 'CONTROLLER_UNAVAILABLE') throw fe;
      } else if (err.code === grpc.status.DEADLINE_EXCEEDED) {
        if (!o.idempotent) {
          throw new FlotillaError(
            'REQUEST_TIMED_OUT',
            `${method} sent to the controller at ${address} did not complete in time; it may or may not have been applied`,
            { address },
            { cause: err },
          );
        }
        fe = new FlotillaError('REQUEST_TIMED_OUT', `controller at ${address} did not answer ${method} in time`, { address }, { cause: err });
      } else if (err.code === grpc.status.UNAVAILABLE) {
        fe = new FlotillaError('CONTROLLER_UNAVAILABLE', `controller at ${address} is unreachable: ${err.details}`, { address }, { cause: err });
      } else if (typeof err.code === 'number') {
        // CANCELLED (we are closing), RESOURCE_EXHAUSTED, INTERNAL...: not a routing problem.
        throw fromGrpcError(err);
      } else {
        throw err;
      }
      last = fe;
      if (attempt >= this.attemptsMax) throw this.gaveUp(method, last, attempt, startMs);
      const leaderAddress = fe.name === 'NOT_CONTROLLER' ? String(fe.details.leaderAddress ?? '') : '';
      if (leaderAddress !== '' && leaderAddress !== address) {
        this.logger.debug({ method, from: address, to: leaderAddress }, 'following NOT_CONTROLLER to the active controller');
        address = leaderAddress;
        this.preferred = leaderAddress;
        if (redirects++ < REDIRECTS_WITHOUT_BACKOFF_MAX) continue;
      } else {
        this.logger.debug({ method, address, error: fe.name, message: fe.message }, 'controller call failed; trying the next controller');
        if (this.preferred === address) this.preferred = undefined;
        address = this.nextAddress();
      }
      await sleep(Math.min(this.backoff(retries++), Math.max(0, o.deadlineMs - Date.now())));
    }
  }

  /** The controller that last answered as the active one (undefined until one has). */
  activeController(): string | undefined {
    return this.preferred;
  }

  /**
   * Opens a server stream (FetchMetadata) on the controller at `address`. The caller owns the
   * stream: it reads, and cancels it when done.
   */
  openStream(address: string, method: string, request: object): grpc.ClientReadableStream<unknown> {
    if (this.closed) throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'the broker is shutting down');
    return this.clients.serverStream(address, method, request);
  }

  /** The next configured controller, round robin. */
  nextAddress(): string {
    const a = this.controllers[this.cursor % this.controllers.length]!;
    this.cursor = (this.cursor + 1) % this.controllers.length;
    return a;
  }

  /** Backoff before retry number `retry` (0 = first): equal jitter, as the admin client. */
  backoff(retry: number): number {
    const cap = Math.min(this.backoffMaxMs, this.backoffInitialMs * 2 ** Math.min(retry, 20));
    return cap / 2 + this.random() * (cap / 2);
  }

  /** Closes every connection; calls in flight fail, later calls fail fast. */
  close(): void {
    this.closed = true;
    this.clients.close();
  }

  private async unary<Res>(address: string, method: string, request: object, deadlineMs: number): Promise<ControllerAnswer<Res>> {
    const a = await this.clients.unaryWithTrailers<Res>(address, method, request, deadlineMs);
    return { res: a.res, leaderAddress: leaderAddressIn(a.trailers) };
  }

  /** No controller could take the call: retriable, so a client retries through this broker. */
  private gaveUp(method: string, last: FlotillaError | undefined, attempts: number, startMs: number): FlotillaError {
    const why = last ? `${last.name}: ${last.message}` : 'no attempt fitted in the deadline';
    const name = last?.name === 'REQUEST_TIMED_OUT' ? 'REQUEST_TIMED_OUT' : 'CONTROLLER_UNAVAILABLE';
    return new FlotillaError(name, `${method}: no active controller answered after ${attempts} attempt(s) in ${Date.now() - startMs} ms (last: ${why})`, {}, { cause: last });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
