import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../shared/log';
import { imageToBatches } from '../shared/metadata';
import { SERVER_OPTIONS } from '../shared/rpc/proto';
import { bindServer, shutdownServer, splitHostPort } from '../shared/rpc/server-lifecycle';
import { runUntilStopped } from '../shared/process/run-until-stopped';
import { QuorumController } from './quorum';
import { RaftDriver } from './raft-driver';
import { ControllerService } from './server';

// One controller process: the QuorumController (metadata state machine) replicated by the
// RaftDriver, and one gRPC server carrying both the Raft service (peer traffic) and the
// Controller service (admin and broker traffic). The quorum's voter addresses are therefore
// also the addresses clients use, and a follower can forward to driver.peerAddress(leader).

export interface ControllerOptions {
  readonly nodeId: number;
  /** host:port to bind; port 0 picks a free port (see the returned address). */
  readonly listen: string;
  /** Initial voters, id -> host:port, this controller included unless `join`. */
  readonly voters: Map<number, string>;
  readonly dataDir: string;
  readonly logger: Logger;
  /** Start with no configuration and wait to be added (flotilla quorum add-controller). */
  readonly join?: boolean;
  readonly tickMs?: number;
  readonly electionTimeoutTicks?: number;
  readonly heartbeatTimeoutTicks?: number;
  readonly snapshotEveryEntries?: number;
  readonly brokerSessionTimeoutMs?: number;
  /** How often the leader runs time-based duties (broker fencing). Default 250. */
  readonly controllerTickMs?: number;
  /** How long stop() lets in-flight calls finish before cutting them (peers' Raft streams never finish by themselves). Default 1000. */
  readonly shutdownGraceMs?: number;
}

export interface RunningController {
  /** host:port actually bound. */
  readonly address: string;
  /** Idempotent; resolves when the server and the driver are closed. */
  stop(): Promise<void>;
}

const CONTROLLER_TICK_MS_DEFAULT = 250;
const SHUTDOWN_GRACE_MS_DEFAULT = 1_000;

export async function startController(o: ControllerOptions): Promise<RunningController> {
  const { nodeId, logger } = o;
  if (!o.join && !o.voters.has(nodeId)) throw new Error(`controller ${nodeId} is not among the voters ${[...o.voters.keys()].join(',')} (use join to add it)`);
  const [host, portText] = splitHostPort(o.listen);

  // The QuorumController proposes through the driver, and the driver applies into the
  // QuorumController: construct the controller against a late-bound view of the driver.
  let driver: RaftDriver | undefined;
  const raft = (): RaftDriver => {
    if (!driver) throw new Error('the raft driver is not open yet');
    return driver;
  };
  const qc = new QuorumController({
    log: {
      propose: (data: Uint8Array) => raft().propose(data),
      readIndex: () => raft().readIndex(),
      isLeader: () => driver?.isLeader() ?? false,
    },
    nowMs: () => Date.now(),
    logger,
    ...(o.brokerSessionTimeoutMs !== undefined ? { brokerSessionTimeoutMs: o.brokerSessionTimeoutMs } : {}),
  });
  driver = await RaftDriver.open(
    {
      nodeId,
      voters: o.voters,
      dataDir: o.dataDir,
      logger,
      ...(o.join ? { join: true } : {}),
      ...(o.tickMs !== undefined ? { tickMs: o.tickMs } : {}),
      ...(o.electionTimeoutTicks !== undefined ? { electionTimeoutTicks: o.electionTimeoutTicks } : {}),
      ...(o.heartbeatTimeoutTicks !== undefined ? { heartbeatTimeoutTicks: o.heartbeatTimeoutTicks } : {}),
      ...(o.snapshotEveryEntries !== undefined ? { snapshotEveryEntries: o.snapshotEveryEntries } : {}),
    },
    qc,
  );
  const d = driver;

  const server = new grpc.Server(SERVER_OPTIONS);
  d.registerService(server);
  const service = new ControllerService({
    nodeId,
    driver: d,
    controller: qc,
    logger,
    imageSnapshot: () => {
      const image = qc.image();
      return { offset: image.offset, batches: imageToBatches(image) };
    },
  });
  service.register(server);

  let port: number;
  try {
    port = await bindServer(server, host, portText);
  } catch (e) {
    service.close();
    await d.stop();
    throw new Error(`controller ${nodeId} cannot listen on ${o.listen}: ${(e as Error).message}`, { cause: e });
  }
  const address = `${host}:${port}`;

  d.onRoleChange((isLeader, leaderId, term) => {
    logger.info({ isLeader, leaderId, term }, isLeader ? `controller ${nodeId} is the active controller (term ${term})` : `controller ${nodeId} follows ${leaderId || 'nobody'} (term ${term})`);
    qc.onLeadershipChange(isLeader, Date.now());
  });
  d.start();

  // Time-based duties (fencing brokers whose sessions expired) are the leader's alone.
  let ticking = false;
  const ticker = setInterval(() => {
    if (ticking || !d.isLeader()) return;
    ticking = true;
    Promise.resolve()
      .then(() => qc.tick(Date.now()))
      .catch((err: unknown) => logger.warn({ err }, 'controller tick failed'))
      .finally(() => (ticking = false));
  }, o.controllerTickMs ?? CONTROLLER_TICK_MS_DEFAULT);

  logger.info({ address, voters: Object.fromEntries(o.voters), dataDir: o.dataDir, join: o.join === true }, `controller ${nodeId} listening on ${address}`);

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      logger.info(`controller ${nodeId} stopping`);
      clearInterval(ticker);
      service.close();
      // The driver first: stopping it fails the proposals that in-flight calls wait on, so
      // those calls answer (CONTROLLER_UNAVAILABLE) during the grace period below.
      await d.stop();
      await shutdownServer(server, o.shutdownGraceMs ?? SHUTDOWN_GRACE_MS_DEFAULT);
      logger.info(`controller ${nodeId} stopped`);
    })();
    return stopping;
  };
  return { address, stop };
}

/**
 * startController, then stop cleanly on SIGTERM/SIGINT (and, with stopOnStdinClose, when the
 * parent that spawned us goes away). Resolves once stopped.
 */
export async function runController(o: ControllerOptions, opts: { stopOnStdinClose?: boolean } = {}): Promise<void> {
  const running = await startController(o);
  await runUntilStopped(running, { logger: o.logger, stopOnStdinClose: opts.stopOnStdinClose });
}
