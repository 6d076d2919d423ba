import * as grpc from '@grpc/grpc-js';
import { FlotillaError, isFlotillaError } from '../shared/errors/error-codes';
import type { Logger } from '../shared/log';
import { toGrpcError } from '../shared/rpc/grpc-errors';
import { absoluteDeadlineOf, refuseIfExpired } from '../shared/rpc/deadline';
import { ControllerChannel, controllerClientConstructor } from './controller-channel';

// The admin API on a broker. Clients need only broker addresses, as with Kafka (KIP-590:
// brokers forward admin writes to the active controller), so a broker serves the admin
// methods of flotilla.controller.Controller by passing each request, unchanged, to the
// active controller through the ControllerChannel, and the answer back unchanged: a typed
// error (TOPIC_ALREADY_EXISTS, INVALID_TOPIC_NAME, ...) reaches the client exactly as a
// controller would have sent it. NOT_CONTROLLER never leaves the broker: the broker follows
// it itself, and when no controller can be reached it answers CONTROLLER_UNAVAILABLE, which
// is retriable, so the client retries through a broker rather than being sent to a
// controller address it may not be able to reach.
//
// Reads (DescribeTopics, ListTopics, ...) are forwarded too: the active controller answers
// linearizably. A later step may serve some of them from the broker's own image.
//
// The broker-facing methods (RegisterBroker, BrokerHeartbeat, AlterPartition,
// AllocateProducerIds, FetchMetadata) are for controllers only: a broker answers
// INVALID_REQUEST, so a misconfigured broker pointed at another broker fails loudly.

/** Admin methods forwarded to the active controller, and whether repeating one is harmless. */
const FORWARDED: Readonly<Record<string, { readonly idempotent: boolean }>> = {
  CreateTopic: { idempotent: false },
  DeleteTopic: { idempotent: false },
  ListTopics: { idempotent: true },
  DescribeTopics: { idempotent: true },
  DescribeCluster: { idempotent: true },
  DescribeQuorum: { idempotent: true },
  ListEvents: { idempotent: true },
  AddController: { idempotent: false },
  RemoveController: { idempotent: false },
  TransferLeadership: { idempotent: false },
};

export interface AdminProxyOptions {
  readonly brokerId: number;
  readonly channel: ControllerChannel;
  readonly logger: Logger;
  /** Bound on one forwarded call when the client set a longer deadline, or none. Default 10 s. */
  readonly forwardTimeoutMs?: number;
  /** Forwarded calls in flight at once; more are refused (retriable). Default 1024. */
  readonly inflightMax?: number;
}

/** Answer a little before the client's own deadline, so it gets our error, not its timeout. */
const DEADLINE_MARGIN_MS = 100;

type Wire = Record<string, unknown>;

export class AdminProxy {
  private readonly forwardTimeoutMs: number;
  private readonly inflightMax: number;
  private inflight = 0;
  private closed = false;

  constructor(private readonly o: AdminProxyOptions) {
    this.forwardTimeoutMs = o.forwardTimeoutMs ?? 10_000;
    this.inflightMax = o.inflightMax ?? 1_024;
  }

  /** Adds flotilla.controller.Controller, as served by a broker, to `server`. */
  register(server: grpc.Server): void {
    const service = controllerClientConstructor().service;
    const impl: grpc.UntypedServiceImplementation = {};
    for (const name of Object.keys(FORWARDED)) {
      if (!(name in service)) throw new Error(`admin method ${name} is not in proto/controller.proto`);
    }
    for (const [name, def] of Object.entries(service)) {
      if (name in FORWARDED) impl[name] = this.forwarding(name, FORWARDED[name]!.idempotent);
      else if (def.responseStream) impl[name] = (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', toGrpcError(this.controllerOnly(name)));
      else impl[name] = (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(toGrpcError(this.controllerOnly(name)));
    }
    server.addService(service, impl);
  }

  /** Later calls fail fast (retriable); calls in flight finish or fail with the channel. */
  close(): void {
    this.closed = true;
  }

  private forwarding(method: string, idempotent: boolean): grpc.handleUnaryCall<Wire, Wire> {
    return (call, callback) => {
      if (this.closed) {
        callback(toGrpcError(new FlotillaError('CONTROLLER_UNAVAILABLE', `broker ${this.o.brokerId} is shutting down`)));
        return;
      }
      if (this.inflight >= this.inflightMax) {
        callback(toGrpcError(new FlotillaError('PROPOSAL_DROPPED', `broker ${this.o.brokerId} has ${this.inflight} admin requests in flight; retry later`)));
        return;
      }
      try {
        // Held up on the way here (this broker was frozen or cut off): its client gave up.
        refuseIfExpired(call.metadata, method);
      } catch (err) {
        callback(this.toStatus(method, err));
        return;
      }
      this.inflight++;
      const deadlineMs = Math.min(Date.now() + this.forwardTimeoutMs, deadlineToMs(call.getDeadline()) - DEADLINE_MARGIN_MS, absoluteDeadlineOf(call.metadata));
      this.o.logger.debug({ method }, 'forwarding an admin request to the active controller');
      this.o.channel
        .call<Wire>(method, call.request, { deadlineMs, idempotent })
        .then(
          (res) => callback(null, res),
          (err: unknown) => callback(this.toStatus(method, err)),
        )
        .finally(() => this.inflight--);
    };
  }

  private controllerOnly(method: string): FlotillaError {
    return new FlotillaError(
      'INVALID_REQUEST',
      `broker ${this.o.brokerId} does not serve ${method}: it is a broker-facing controller call; send it to a controller`,
      { method },
    );
  }

  private toStatus(method: string, err: unknown): grpc.ServerErrorResponse {
    if (isFlotillaError(err)) return toGrpcError(err) as grpc.ServerErrorResponse;
    this.o.logger.error({ err, method }, 'unexpected error forwarding an admin request');
    return toGrpcError(new FlotillaError('UNKNOWN', `${method}: ${(err as Error)?.message ?? String(err)}`, {}, { cause: err })) as grpc.ServerErrorResponse;
  }
}

function deadlineToMs(deadline: grpc.Deadline): number {
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : Number.POSITIVE_INFINITY;
}
