import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from '../shared/log';
import type { MetadataImage } from '../shared/metadata';
import { bindServer, shutdownServer, splitHostPort } from '../shared/rpc/server-lifecycle';
import { runUntilStopped } from '../shared/process/run-until-stopped';
import { FlotillaError } from '../shared/errors/error-codes';
import { AdminProxy } from './admin-proxy';
import { ProducerIdManager, ProducerStateManager } from './producer';
import { BrokerLifecycleManager, BrokerStatus } from './broker-lifecycle';
import { ControllerChannel } from './controller-channel';
import { MetadataFollower } from './metadata-follower';
import { BROKER_MAX_MESSAGE_BYTES } from './replica/limits';
import { HostedReplica, ReplicaManager } from './replica/replica-manager';
import type { ProducerGuardFactory } from './replica/producer-guard';
import { BrokerService } from './server/broker-service';
import type { PartitionState } from '../shared/metadata';

// One broker process (Kafka's BrokerServer), wired from its parts:
//
//   grpc.Server (--listen) ── AdminProxy ──┐
//        │                                 ├── ControllerChannel ──► controller quorum
//   BrokerLifecycleManager (register, heartbeat) ┘        ▲    ▲ AlterPartition
//   MetadataFollower (FetchMetadata stream) ──────────────┘    │
//        │ publishes each new MetadataImage + localChanges(brokerId)
//        ├──► ReplicaManager (partition logs, leader/follower, fetchers, ISR) ──┘
//        └──► BrokerLifecycleManager.onMetadataApplied (unfence as soon as caught up)
//   grpc.Server ── BrokerService (Metadata, Produce, Fetch, ListOffsets) ──► ReplicaManager
//
// Start order: the data dir is claimed, the server binds (so the advertised port is known,
// --listen may say port 0), the metadata follower starts, then registration. Stop order:
// controlled shutdown first (leaderships move away at once), the metadata stream, the server
// (in-flight calls get a grace period), then the replicas (fetchers, HW checkpoint, logs).

export interface BrokerOptions {
  readonly nodeId: number;
  /** host:port to bind; port 0 picks a free port (see the returned address). */
  readonly listen: string;
  /**
   * host:port registered with the controllers instead of the bound one (Kafka's
   * advertised.listeners): what Metadata tells clients, and what the other brokers fetch
   * from — so it must be reachable from both. Default: the bound listen address.
   */
  readonly advertisedAddress?: string;
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
  /** replica.lag.time.max.ms (see broker/replica/replica-manager.ts for the default). */
  readonly replicaLagTimeMaxMs?: number;
  /** The idempotent-producer seam; default: the no-op guard. */
  readonly producerGuardFactory?: ProducerGuardFactory;
  /** Log retention check interval (Kafka's log.retention.check.interval.ms). */
  readonly retentionCheckIntervalMs?: number;
  /** Memory for all replicas' in-memory log tails together (replica-manager.ts TAIL_CACHE_TOTAL_BYTES_DEFAULT). */
  readonly tailCacheTotalBytes?: number;
}

export interface RunningBroker {
  /** host:port actually bound. */
  readonly address: string;
  /** host:port registered with the controller (the advertised address, else the bound one). */
  readonly advertisedAddress: string;
  /** This process start's incarnation id. */
  readonly incarnationId: string;
  /** The broker's own metadata image (debug accessor). */
  image(): MetadataImage;
  /** Registration and fencing state as this broker knows it. */
  status(): BrokerStatus & { readonly metadataOffset: number; readonly controller?: string };
  /** The partitions this broker hosts, with role and offsets. */
  replicas(): HostedReplica[];
  /** The replica manager (tests and debugging). */
  readonly replicaManager: ReplicaManager;
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
  const advertised = o.advertisedAddress === undefined ? undefined : parseAdvertised(o.advertisedAddress);
  claimDataDir(o.dataDir, nodeId);
  const incarnationId = randomUUID();

  const channel = new ControllerChannel({ controllers: o.controllers, logger });
  // Late-bound: the replica manager needs the lifecycle manager's epoch and fencing.
  let lifecycle: BrokerLifecycleManager | undefined;
  const replicaManager = new ReplicaManager({
    brokerId: nodeId,
    dataDir: o.dataDir,
    logger,
    brokerEpoch: () => lifecycle?.status().brokerEpoch ?? -1,
    isFenced: () => lifecycle?.status().isFenced ?? true,
    alterPartition: async (req) => {
      const res = await channel.call<{ leader: number; leaderEpoch: number; partitionEpoch: number; replicas: number[]; isr: number[] }>(
        'AlterPartition',
        {
          brokerId: req.brokerId,
          brokerEpoch: req.brokerEpoch,
          topic: req.topicName,
          partition: req.partition,
          leaderEpoch: req.leaderEpoch,
          partitionEpoch: req.partitionEpoch,
          newIsr: req.newIsr,
          reason: req.reason,
        },
        // Repeating it is harmless: a second one fails the partition-epoch check.
        { deadlineMs: Date.now() + 5_000, idempotent: true, attemptTimeoutMs: 2_000 },
      );
      const state: PartitionState = { partition: req.partition, leader: res.leader, leaderEpoch: res.leaderEpoch, partitionEpoch: res.partitionEpoch, replicas: res.replicas, isr: res.isr };
      return state;
    },
    ...(o.replicaLagTimeMaxMs !== undefined ? { replicaLagTimeMaxMs: o.replicaLagTimeMaxMs } : {}),
    // Idempotent producers (issue 3 §5): per-partition producer state, snapshotted next to the
    // log and rebuilt from it; tests may plug in another guard.
    producerGuardFactory:
      o.producerGuardFactory ??
      ((ctx) => ProducerStateManager.open({ dir: ctx.dir, log: ctx.log, logger: logger.child({ partition: `${ctx.topicName}-${ctx.partition}` }) })),
    ...(o.retentionCheckIntervalMs !== undefined ? { retentionCheckIntervalMs: o.retentionCheckIntervalMs } : {}),
    ...(o.tailCacheTotalBytes !== undefined ? { tailCacheTotalBytes: o.tailCacheTotalBytes } : {}),
  });
  const admin = new AdminProxy({ brokerId: nodeId, channel, logger, ...(o.forwardTimeoutMs !== undefined ? { forwardTimeoutMs: o.forwardTimeoutMs } : {}) });
  // Producer ids come in blocks from the controller (AllocateProducerIds), KIP-730.
  const producerIds = new ProducerIdManager({
    logger,
    allocate: async () => {
      const brokerEpoch = lifecycle?.status().brokerEpoch ?? -1;
      if (brokerEpoch < 0) throw new FlotillaError('BROKER_FENCED', `broker ${nodeId} is not registered yet`);
      return channel.call<{ firstProducerId: number; count: number }>(
        'AllocateProducerIds',
        { brokerId: nodeId, brokerEpoch },
        // Not repeated blindly: a lost answer wastes one block, a repeat would waste another.
        { deadlineMs: Date.now() + 5_000, idempotent: false },
      );
    },
  });
  // Ready once unfenced: the controller unfences a broker only when its metadata has reached
  // its own registration. Stays ready when fenced later (its image is complete, only stale).
  let caughtUpOnce = false;
  const metadataReady = (): boolean => (caughtUpOnce ||= lifecycle !== undefined && !lifecycle.status().isFenced);
  const service = new BrokerService({ brokerId: nodeId, replicaManager, logger, producerIds: { next: () => producerIds.generateProducerId() }, metadataReady });

  // Deliberate sizes (broker/replica/limits.ts): a produce request or fetch response may carry
  // a batch as large as the largest max.message.bytes a topic may set.
  const server = new grpc.Server({ 'grpc.max_receive_message_length': BROKER_MAX_MESSAGE_BYTES, 'grpc.max_send_message_length': BROKER_MAX_MESSAGE_BYTES });
  admin.register(server);
  service.register(server);
  let port: number;
  try {
    port = await bindServer(server, host, portText);
  } catch (e) {
    channel.close();
    throw new Error(`broker ${nodeId} cannot listen on ${o.listen}: ${(e as Error).message}`, { cause: e });
  }
  const address = `${host}:${port}`;
  const registeredHost = advertised?.host ?? host;
  const registeredPort = advertised?.port ?? port;

  let stop: () => Promise<void> = async () => undefined;
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
    host: registeredHost,
    port: registeredPort,
    ...(o.rack ? { rack: o.rack } : {}),
    channel,
    logger,
    appliedOffset: () => follower.appliedOffset(),
    onRegistered: (epoch) => follower.noteCommitted(epoch),
    ...(o.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: o.heartbeatIntervalMs } : {}),
  });
  const lc = lifecycle;

  replicaManager.start();
  follower.start();
  lc.start();
  // Once unfenced, the image covers this broker's registration: logs of partitions deleted
  // while it was down can be told from live ones.
  void lc.whenUnfenced().then(() => (stopping === undefined ? replicaManager.deleteStrayLogs() : undefined)).catch((err: unknown) => logger.warn({ err }, 'deleting stray logs failed'));
  // The first producer id block, before any producer asks (it takes a Raft write on the controller).
  void lc.whenUnfenced().then(() => (stopping === undefined ? producerIds.prefetch() : undefined));
  logger.info(
    { address, advertised: `${registeredHost}:${registeredPort}`, controllers: o.controllers, dataDir: o.dataDir, rack: o.rack ?? null, incarnationId },
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
      service.close();
      await shutdownServer(server, o.shutdownGraceMs ?? SHUTDOWN_GRACE_MS_DEFAULT);
      await replicaManager.stop();
      channel.close();
      logger.info(`broker ${nodeId} stopped`);
    })();
    return stopping;
  };

  return {
    address,
    advertisedAddress: `${registeredHost}:${registeredPort}`,
    incarnationId,
    image: () => follower.currentImage(),
    status: () => {
      const controller = follower.currentController();
      return { ...lc.status(), metadataOffset: follower.appliedOffset(), ...(controller ? { controller } : {}) };
    },
    replicas: () => replicaManager.replicas(),
    replicaManager,
    whenUnfenced: () => lc.whenUnfenced(),
    stop: () => stop(),
  };
}

/** "host:port" with a concrete host and a port in 1..65535 (0 cannot be reached). */
function parseAdvertised(value: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : -1;
  if (!m || port < 1 || port > 65_535) throw new FlotillaError('INVALID_CONFIG', `advertised address "${value}" is not host:port with a port in 1..65535`);
  const host = m[1]!;
  // A wildcard tells a client nothing: it would connect to itself.
  if (host === '0.0.0.0' || host === '::' || host === '[::]') throw new FlotillaError('INVALID_CONFIG', `advertised address "${value}" is a wildcard; advertise a host clients and brokers can reach`);
  return { host, port };
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
