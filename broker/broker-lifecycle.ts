import type * as grpc from '@grpc/grpc-js';
import { isFlotillaError } from '../shared/errors/error-codes';
import { fromGrpcError } from '../shared/rpc/grpc-errors';
import type { Logger } from '../shared/log';
import type { ControllerChannel } from './controller-channel';

// The broker's session with the controller quorum (Kafka's BrokerLifecycleManager, KIP-631):
//
//   starting --RegisterBroker--> recovery (registered, fenced: catching up on metadata)
//            --BrokerHeartbeat answers unfenced--> running
//   any      --STALE_BROKER_EPOCH / UNKNOWN_BROKER--> starting (register again)
//   running  --stop()--> pending-controlled-shutdown --heartbeat(wantShutdown)--> shut-down
//
// One loop, one request in flight: register until it succeeds, then heartbeat every
// heartbeatIntervalMs with the offset of the metadata applied so far. The controller unfences
// the broker once that offset reaches the broker's own RegisterBroker record (its epoch), so
// the loop heartbeats at once when the metadata follower crosses that offset instead of
// waiting out the interval. The controller fences a broker whose heartbeats stop for its
// session timeout (9 s by default); the interval must stay well below it.
//
// Beside the heartbeats, a registered broker holds a BrokerSession stream open on the active
// controller (proto/controller.proto). If this process dies, its kernel closes that socket and
// the controller fences the broker about a second later instead of after the session timeout.
// When the stream breaks while this process lives, the loop heartbeats at once (proving it is
// alive within the controller's grace) and reopens it; it also moves with the active
// controller.

/** NOT_CONTROLLER hops a session open follows at once (more waits for the next heartbeat). */
const SESSION_REDIRECTS_MAX = 2;

export type BrokerState = 'starting' | 'recovery' | 'running' | 'pending-controlled-shutdown' | 'shut-down';

export interface BrokerLifecycleOptions {
  readonly brokerId: number;
  /** Random per process start: tells the controller a restart from a duplicate. */
  readonly incarnationId: string;
  /** Where clients reach this broker. */
  readonly host: string;
  readonly port: number;
  readonly rack?: string;
  readonly channel: ControllerChannel;
  readonly logger: Logger;
  /** The offset of the metadata this broker has applied (sent with each heartbeat). */
  readonly appliedOffset: () => number;
  /** Called with the new broker epoch after each successful registration. */
  readonly onRegistered?: (brokerEpoch: number) => void;
  /** Default 1000; keep it a fraction of the controller's session timeout. */
  readonly heartbeatIntervalMs?: number;
  /** Bound on one heartbeat, retries across controllers included. Default 3000. */
  readonly heartbeatTimeoutMs?: number;
  /** Bound on one registration attempt. Default 5000. */
  readonly registrationTimeoutMs?: number;
}

export interface BrokerStatus {
  readonly state: BrokerState;
  /** Epoch from the last registration; -1 before the first. */
  readonly brokerEpoch: number;
  readonly isFenced: boolean;
  /** The metadata offset sent with the last successful heartbeat. */
  readonly lastHeartbeatOffset: number;
  /** Registrations so far in this process (re-registrations after STALE_BROKER_EPOCH count). */
  readonly registrations: number;
}

export class BrokerLifecycleManager {
  private state: BrokerState = 'starting';
  private brokerEpoch = -1;
  private isFenced = true;
  private lastHeartbeatOffset = -1;
  private registrations = 0;
  private failuresInARow = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** A wake-up asked for while no sleep was in progress: the next sleep is skipped. */
  private wakeRequested = false;
  private readonly heartbeatIntervalMs: number;
  private readonly heartbeatTimeoutMs: number;
  private readonly registrationTimeoutMs: number;
  private readonly unfencedWaiters: (() => void)[] = [];
  /** Where the session goes when a controller named the active one (NOT_CONTROLLER details). */
  private sessionAddress: string | undefined;
  /** The BrokerSession stream, when open: where, for which epoch, and whether it was accepted. */
  private session: { readonly call: grpc.ClientReadableStream<unknown>; readonly address: string; readonly epoch: number; accepted: boolean } | undefined;

  constructor(private readonly o: BrokerLifecycleOptions) {
    this.heartbeatIntervalMs = o.heartbeatIntervalMs ?? 1_000;
    this.heartbeatTimeoutMs = o.heartbeatTimeoutMs ?? 3_000;
    this.registrationTimeoutMs = o.registrationTimeoutMs ?? 5_000;
  }

  status(): BrokerStatus {
    return {
      state: this.state,
      brokerEpoch: this.brokerEpoch,
      isFenced: this.isFenced,
      lastHeartbeatOffset: this.lastHeartbeatOffset,
      registrations: this.registrations,
    };
  }

  start(): void {
    if (this.loop) return;
    this.loop = this.run().catch((err: unknown) => {
      // The loop catches every operating condition; reaching here is a bug.
      this.o.logger.fatal({ err }, 'broker lifecycle loop failed');
      throw err;
    });
  }

  /**
   * The metadata follower applied up to `offset`. A fenced broker that just reached its own
   * registration heartbeats at once: that heartbeat is what unfences it.
   */
  onMetadataApplied(offset: number): void {
    if (this.state === 'recovery' && this.brokerEpoch >= 0 && offset >= this.brokerEpoch && this.lastHeartbeatOffset < this.brokerEpoch) {
      this.wakeUp();
    }
  }

  /** Resolves when the controller has answered "unfenced" (or the manager stopped). */
  whenUnfenced(): Promise<void> {
    if (!this.isFenced || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.unfencedWaiters.push(resolve));
  }

  /**
   * Stops the loop. When registered and `controlledShutdownTimeoutMs` > 0, first asks the
   * controller to fence this broker now (heartbeat with wantShutdown), so its leaderships
   * move away at once rather than after the session timeout. Best effort, bounded.
   */
  async stop(controlledShutdownTimeoutMs = 0): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.wakeUp();
    // Not waiting for the loop: a registration or heartbeat in flight may take its whole
    // timeout against an unreachable quorum, and its answer is ignored once stopped.
    if (controlledShutdownTimeoutMs > 0 && this.brokerEpoch >= 0) {
      this.state = 'pending-controlled-shutdown';
      try {
        const res = await this.o.channel.call<{ isFenced: boolean }>(
          'BrokerHeartbeat',
          { brokerId: this.o.brokerId, brokerEpoch: this.brokerEpoch, currentMetadataOffset: this.o.appliedOffset(), wantShutdown: true },
          { deadlineMs: Date.now() + controlledShutdownTimeoutMs, idempotent: true },
        );
        this.isFenced = res.isFenced;
        this.o.logger.info({ brokerEpoch: this.brokerEpoch, isFenced: res.isFenced }, 'controlled shutdown: the controller fenced this broker');
      } catch (err) {
        this.o.logger.warn({ err: (err as Error).message }, 'controlled shutdown: no answer; the controller will fence this broker when its session expires');
      }
    }
    // After the controlled shutdown (or its failure): closing the session lets the controller
    // fence this broker within its grace rather than after the session timeout.
    this.closeSession();
    this.state = 'shut-down';
    for (const w of this.unfencedWaiters.splice(0)) w();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      if (this.brokerEpoch < 0) {
        if (!(await this.register())) await this.sleep(this.o.channel.backoff(this.failuresInARow));
        continue;
      }
      await this.heartbeat();
      await this.sleep(this.heartbeatIntervalMs);
    }
  }

  /** One registration attempt (retried inside the channel across controllers). */
  private async register(): Promise<boolean> {
    const { brokerId, incarnationId, host, port } = this.o;
    try {
      const res = await this.o.channel.call<{ brokerEpoch: number }>(
        'RegisterBroker',
        { brokerId, incarnationId, host, port, rack: this.o.rack ?? '' },
        // Registering twice is harmless: the second epoch replaces the first.
        { deadlineMs: Date.now() + this.registrationTimeoutMs, idempotent: true, attemptTimeoutMs: this.registrationTimeoutMs / 2 },
      );
      if (this.stopped) return true;
      this.brokerEpoch = Number(res.brokerEpoch);
      this.registrations++;
      this.failuresInARow = 0;
      this.setFenced(true);
      this.state = 'recovery';
      this.lastHeartbeatOffset = -1;
      this.o.logger.info(
        { brokerEpoch: this.brokerEpoch, incarnationId, appliedOffset: this.o.appliedOffset() },
        `broker ${brokerId} registered with epoch ${this.brokerEpoch}; fenced until its metadata reaches offset ${this.brokerEpoch}`,
      );
      this.o.onRegistered?.(this.brokerEpoch);
      return true;
    } catch (err) {
      this.failuresInARow++;
      this.logFailure('registration failed; retrying', err);
      return false;
    }
  }

  private async heartbeat(): Promise<void> {
    const offset = this.o.appliedOffset();
    const epoch = this.brokerEpoch;
    try {
      const res = await this.o.channel.call<{ isFenced: boolean; controllerEpoch: number }>(
        'BrokerHeartbeat',
        { brokerId: this.o.brokerId, brokerEpoch: epoch, currentMetadataOffset: offset, wantShutdown: false },
        { deadlineMs: Date.now() + this.heartbeatTimeoutMs, idempotent: true, attemptTimeoutMs: this.heartbeatTimeoutMs / 2 },
      );
      if (this.stopped || epoch !== this.brokerEpoch) return;
      if (this.failuresInARow > 0) this.o.logger.info({ failures: this.failuresInARow }, 'heartbeats reach the controller again');
      this.failuresInARow = 0;
      this.lastHeartbeatOffset = offset;
      this.setFenced(res.isFenced);
      this.ensureSession();
    } catch (err) {
      if (this.stopped) return;
      if (isFlotillaError(err, 'STALE_BROKER_EPOCH') || isFlotillaError(err, 'UNKNOWN_BROKER')) {
        // The controller no longer knows this epoch (a newer registration, or a wiped
        // quorum): register again, at once. The incarnation id stays: same process.
        this.o.logger.warn({ brokerEpoch: epoch, error: err.name, message: err.message }, 'heartbeat refused: registering again');
        this.brokerEpoch = -1;
        this.state = 'starting';
        this.setFenced(true);
        return;
      }
      this.failuresInARow++;
      this.logFailure('heartbeat failed', err);
    }
  }

  /** Opens the BrokerSession stream on the active controller, unless open there for this epoch. */
  private ensureSession(redirects = 0): void {
    // Heartbeats may be answered by a follower controller (it forwards them): the session
    // follows NOT_CONTROLLER to the active one.
    const address = this.sessionAddress ?? this.o.channel.activeController();
    if (address === undefined || this.stopped || this.brokerEpoch < 0) return;
    const old = this.session;
    if (old && old.address === address && old.epoch === this.brokerEpoch) return;
    this.session = undefined;
    old?.call.cancel();
    let call: grpc.ClientReadableStream<unknown>;
    try {
      call = this.o.channel.openStream(address, 'BrokerSession', { brokerId: this.o.brokerId, brokerEpoch: this.brokerEpoch });
    } catch {
      return; // shutting down
    }
    const session = { call, address, epoch: this.brokerEpoch, accepted: false };
    this.session = session;
    call.on('data', () => {
      session.accepted = true;
    });
    const ended = (err?: Error): void => {
      if (this.session !== session) return;
      this.session = undefined;
      if (this.stopped) return;
      const fe = err && (err as grpc.ServiceError).metadata ? fromGrpcError(err as grpc.ServiceError) : undefined;
      if (fe?.name === 'NOT_CONTROLLER' && typeof fe.details.leaderAddress === 'string' && fe.details.leaderAddress !== '') {
        this.sessionAddress = fe.details.leaderAddress;
        if (redirects < SESSION_REDIRECTS_MAX) this.ensureSession(redirects + 1);
        return;
      }
      this.sessionAddress = undefined; // ask the channel again next time
      this.o.logger.debug({ address, accepted: session.accepted, err: err?.message }, 'broker session stream ended');
      // A session that had been accepted broke: heartbeat now, inside the controller's grace.
      // One refused at once (NOT_CONTROLLER during an election) waits for the next heartbeat.
      if (session.accepted) this.wakeUp();
    };
    call.on('error', ended);
    call.on('end', () => ended());
  }

  private closeSession(): void {
    const s = this.session;
    this.session = undefined;
    s?.call.cancel();
  }

  private setFenced(isFenced: boolean): void {
    const was = this.isFenced;
    this.isFenced = isFenced;
    if (this.brokerEpoch >= 0 && this.state !== 'pending-controlled-shutdown') this.state = isFenced ? 'recovery' : 'running';
    if (was && !isFenced) {
      this.o.logger.info({ brokerEpoch: this.brokerEpoch, metadataOffset: this.lastHeartbeatOffset }, `broker ${this.o.brokerId} is unfenced`);
      for (const w of this.unfencedWaiters.splice(0)) w();
    } else if (!was && isFenced) {
      this.o.logger.warn({ brokerEpoch: this.brokerEpoch }, `broker ${this.o.brokerId} is fenced by the controller`);
    }
  }

  /** The first failure in a row at warn, then one in ten: a controller outage is one story. */
  private logFailure(what: string, err: unknown): void {
    const fields = { failures: this.failuresInARow, error: (err as { name?: string }).name, message: (err as Error).message };
    if (this.failuresInARow === 1 || this.failuresInARow % 10 === 0) this.o.logger.warn(fields, what);
    else this.o.logger.debug(fields, what);
  }

  private wakeUp(): void {
    if (this.wake) this.wake();
    else this.wakeRequested = true;
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped || this.wakeRequested) {
      this.wakeRequested = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
