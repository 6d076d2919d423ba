import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../shared/log';
import type { MetadataImage } from '../shared/metadata';
import { SERVER_OPTIONS } from '../shared/rpc/proto';
import { bindServer, shutdownServer, splitHostPort } from '../shared/rpc/server-lifecycle';
import { runUntilStopped } from '../shared/process/run-until-stopped';
import { AdminProxy } from './admin-proxy';
import { BrokerLifecycleManager, BrokerStatus } from './broker-lifecycle';
import { ControllerChannel } from './controller-channel';
import { MetadataFollower } from './metadata-follower';
import { HostedReplica, ReplicaManager } from './replica-manager';

// One broker process (Kafka's BrokerServer), wired from its parts:
//
//   grpc.Server (--listen) ── AdminProxy ──┐
//                                          ├── ControllerChannel ──► controller quorum
//   BrokerLifecycleManager (register, heartbeat) ┘        ▲
//   MetadataFollower (FetchMetadata stream) ──────────────┘
//        │ publishes each new MetadataImage + localChanges(brokerId)
//        ├──► ReplicaManager (placeholder until partition logs exist)
//        └──► BrokerLifecycleManager.onMetadataApplied (unfence as soon as caught up)
//
// Start order: the data dir is claimed, the server binds (so the advertised port is known,
// --listen may say port 0), the metadata follower starts, then registration. Stop order is
// the reverse, with a controlled shutdown first so leaderships move away at once.

export interface BrokerOptions {
  readonly nodeId: number;
  /** host:port to bind; port 0 picks a free port (see the returned address). */
  readonly listen: string;
  /** Controller addresses (host:port), any subset of the quorum's voters. */
  readonly controllers: readonly string[];
  readonly dataDir: string;
  readonly rack?: string;
  readonly logger: Logger;
  /** Default 1000: a fraction of the controller's broker session timeout (9 s). */
  readonly heartbeatIntervalMs?: number;
  /** Bound on the controlled-shutdown heartbeat at stop. Default 2000; 0 skips it. */
  readonly controlledShutdownTimeoutMs?: number;
  /** How long stop() lets in-flight admin calls finish. Default 1000. */
  readonly shutdownGraceMs?: number;
  /** Bound on one forwarded admin call. Default 10000. */
  readonly forwardTimeoutMs?: number;
  /** The metadata follower cannot go on; default: log (the process runner exits). */
  readonly onFatal?: (err: unknown) => void;
}

export interface RunningBroker {
  /** host:port actually bound (and registered with the controller). */
  readonly address: string;
  /** This process start's incarnation id. */
  readonly incarnationId: string;
  /** The broker's own metadata image (debug accessor). */
  image(): MetadataImage;
  /** Registration and fencing state as this broker knows it. */
  status(): BrokerStatus & { readonly metadataOffset: number; readonly controller?: string };
  /** The partitions this broker hosts, per the metadata applied (placeholder data). */
  replicas(): HostedReplica[];
  /** Resolves once the controller has unfenced this broker (or it stopped). */
  whenUnfenced(): Promise<void>;
  /** Idempotent; resolves when everything is closed. */
  stop(): Promise<void>;
}

const SHUTDOWN_GRACE_MS_DEFAULT = 1_000;
const CONTROLLED_SHUTDOWN_TIMEOUT_MS_DEFAULT = 2_000;
/** Written into the data dir on first start (Kafka's meta.properties). */
const META_FILE = 'broker-meta.json';
const META_VERSION = 1;

export async function startBroker(o: BrokerOptions): Promise<RunningBroker> {
  const { nodeId, logger } = o;
  if (!Number.isSafeInteger(nodeId) || nodeId < 0) throw new Error(`broker id ${nodeId} must be an integer >= 0`);
  const [host, portText] = splitHostPort(o.listen);
  claimDataDir(o.dataDir, nodeId);
  const incarnationId = randomUUID();

  const channel = new ControllerChannel({ controllers: o.controllers, logger });
  const replicaManager = new ReplicaManager({ brokerId: nodeId, logger });
  const admin = new AdminProxy({ brokerId: nodeId, channel, logger, ...(o.forwardTimeoutMs !== undefined ? { forwardTimeoutMs: o.forwardTimeoutMs } : {}) });

  const server = new grpc.Server(SERVER_OPTIONS);
  admin.register(server);
  let port: number;
  try {
    port = await bindServer(server, host, portText);
  } catch (e) {
    channel.close();
    throw new Error(`broker ${nodeId} cannot listen on ${o.listen}: ${(e as Error).message}`, { cause: e });
  }
  const address = `${host}:${port}`;

  let stop: () => Promise<void> = async () => undefined;
  // Late-bound: the follower publishes to the lifecycle manager, which needs the follower's offset.
  let lifecycle: BrokerLifecycleManager | undefined;
  const follower = new MetadataFollower({
    brokerId: nodeId,
    channel,
    logger,
    publishers: [replicaManager.onMetadataUpdate, (u) => lifecycle?.onMetadataApplied(u.image.offset)],
    onFatal: (err) => {
      void stop();
      (o.onFatal ?? ((e: unknown) => logger.fatal({ err: e }, 'broker cannot go on')))(err);
    },
  });
  lifecycle = new BrokerLifecycleManager({
    brokerId: nodeId,
    incarnationId,
    host,
    port,
    ...(o.rack ? { rack: o.rack } : {}),
    channel,
    logger,
    appliedOffset: () => follower.appliedOffset(),
    onRegistered: (epoch) => follower.noteCommitted(epoch),
    ...(o.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: o.heartbeatIntervalMs } : {}),
  });
  const lc = lifecycle;

  follower.start();
  lc.start();
  logger.info(
    { address, controllers: o.controllers, dataDir: o.dataDir, rack: o.rack ?? null, incarnationId },
    `broker ${nodeId} listening on ${address}`,
  );

  let stopping: Promise<void> | undefined;
  stop = (): Promise<void> => {
    stopping ??= (async () => {
      logger.info(`broker ${nodeId} stopping`);
      admin.close();
      // Controlled shutdown needs the channel: before closing it.
      await lc.stop(o.controlledShutdownTimeoutMs ?? CONTROLLED_SHUTDOWN_TIMEOUT_MS_DEFAULT);
      follower.stop();
      await shutdownServer(server, o.shutdownGraceMs ?? SHUTDOWN_GRACE_MS_DEFAULT);
      channel.close();
      logger.info(`broker ${nodeId} stopped`);
    })();
    return stopping;
  };

  return {
    address,
    incarnationId,
    image: () => follower.currentImage(),
    status: () => {
      const controller = follower.currentController();
      return { ...lc.status(), metadataOffset: follower.appliedOffset(), ...(controller ? { controller } : {}) };
    },
    replicas: () => replicaManager.replicas(),
    whenUnfenced: () => lc.whenUnfenced(),
    stop: () => stop(),
  };
}

/**
 * startBroker, then stop cleanly on SIGTERM/SIGINT (and, with stopOnStdinClose, when the
 * parent that spawned us goes away). Resolves once stopped; a fatal metadata error stops the
 * broker with exit code 1.
 */
export async function runBroker(o: BrokerOptions, opts: { stopOnStdinClose?: boolean } = {}): Promise<void> {
  let onStop: (why: string) => void = () => undefined;
  const running = await startBroker({
    ...o,
    onFatal: (err) => {
      o.logger.fatal({ err }, 'broker cannot go on; exiting');
      process.exitCode = 1;
      onStop('fatal error');
    },
  });
  await runUntilStopped(running, { logger: o.logger, stopOnStdinClose: opts.stopOnStdinClose }, (stop) => {
    onStop = stop;
  });
}

/**
 * Creates the data dir, or checks that it belongs to this broker id: two brokers sharing a
 * dir (or a dir moved to another id) would later mix up partition logs.
 */
function claimDataDir(dataDir: string, nodeId: number): void {
  fs.mkdirSync(dataDir, { recursive: true });
  const file = path.join(dataDir, META_FILE);
  let existing: { version?: number; nodeId?: number } | undefined;
  try {
    existing = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (existing !== undefined) {
    if (existing.nodeId !== nodeId) throw new Error(`data dir ${dataDir} belongs to broker ${existing.nodeId}, not ${nodeId} (see ${file})`);
    return;
  }
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeSync(fd, `${JSON.stringify({ version: META_VERSION, nodeId })}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
