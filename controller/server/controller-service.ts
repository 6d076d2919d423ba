import * as grpc from '@grpc/grpc-js';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import { fromGrpcError, toGrpcError } from '../../shared/rpc/grpc-errors';
import { loadProto } from '../../shared/rpc/proto';
import { absoluteDeadlineOf, refuseIfExpired } from '../../shared/rpc/deadline';
import { LEADER_ADDRESS_TRAILER } from '../../shared/rpc/leader-hint';
import type { Logger } from '../../shared/log';
import { FORWARD_HOPS_MAX, LeaderForwarder, forwardHopsOf } from './leader-forwarder';
import { FetchMetadataRequestWire, MetadataStream } from './metadata-stream';
import {
  DriverPort,
  ImageSnapshot,
  PartitionStatusView,
  PartitionView,
  QuorumControllerPort,
  QuorumMemberView,
  TopicView,
  knownLeader,
} from './ports';
import {
  LIMITS,
  boundedCount,
  checkAddress,
  checkConfigs,
  checkNonNegative,
  checkPositiveId,
  checkText,
  checkTopicName,
  checkTopicNames,
} from './request-limits';

// The gRPC handlers of flotilla.controller.Controller (proto/controller.proto).
//
// Routing: a request that needs the active controller (every write, and every read of the
// metadata image, which must be linearizable) is served locally on the leader and forwarded
// to it from a follower (see leader-forwarder.ts). DescribeQuorum answers with the receiving
// node's own Raft state plus the leader's view of member progress, so "is there a leader
// yet?" and "how far did you get?" can be asked of any node. FetchMetadata is served locally. Every error leaves through toGrpcError.

export interface ControllerServiceOptions {
  readonly nodeId: number;
  readonly driver: DriverPort;
  readonly controller: QuorumControllerPort;
  readonly logger: Logger;
  /** The current image as encoded batches; used when a FetchMetadata starts below the snapshot. */
  readonly imageSnapshot: () => ImageSnapshot;
  /** Bound on one forwarded call (also bounded by the caller's own deadline). Default 10 s. */
  readonly forwardTimeoutMs?: number;
  /** How often a caught-up FetchMetadata stream looks for new commits. Default 50 ms. */
  readonly metadataPollMs?: number;
}

const FORWARD_TIMEOUT_MS_DEFAULT = 10_000;
const METADATA_POLL_MS_DEFAULT = 50;

/** The Controller service's constructor from proto/controller.proto (a grpc client class). */
export function controllerServiceClient(): grpc.ServiceClientConstructor {
  const pkg = loadProto('controller.proto') as unknown as { flotilla: { controller: { Controller: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.controller.Controller;
}

type Wire = Record<string, unknown>;

/** How a unary method is routed and served. */
interface UnaryRoute<Req> {
  /** Cheap shape checks, done before forwarding so a bad request fails where it arrived. */
  readonly check?: (req: Req) => void;
  /** Serves the request on the active controller. */
  readonly serve: (req: Req) => Promise<Wire>;
}

const STATUS_WIRE: Record<PartitionStatusView, string> = {
  online: 'PARTITION_STATUS_ONLINE',
  offline: 'PARTITION_STATUS_OFFLINE',
  'under-replicated': 'PARTITION_STATUS_UNDER_REPLICATED',
};

/** How often a controller holding broker sessions checks it is still the active one. */
const SESSION_LEADERSHIP_CHECK_MS = 500;

export class ControllerService {
  private readonly nodeId: number;
  private readonly driver: DriverPort;
  private readonly qc: QuorumControllerPort;
  private sessionWatch: NodeJS.Timeout | undefined;
  /** Open BrokerSession calls (bounded by LIMITS.brokerSessionsMax). */
  private readonly sessionCalls = new Set<grpc.ServerWritableStream<{ brokerId: number; brokerEpoch: number }, unknown>>();
  private readonly logger: Logger;
  private readonly forwarder: LeaderForwarder;
  private readonly serviceClient: grpc.ServiceClientConstructor;
  private readonly forwardTimeoutMs: number;
  private readonly streams = new Set<MetadataStream>();
  private inflight = 0;
  private closed = false;

  constructor(private readonly opts: ControllerServiceOptions) {
    this.nodeId = opts.nodeId;
    this.driver = opts.driver;
    this.qc = opts.controller;
    this.logger = opts.logger;
    this.forwardTimeoutMs = opts.forwardTimeoutMs ?? FORWARD_TIMEOUT_MS_DEFAULT;
    this.serviceClient = controllerServiceClient();
    this.forwarder = new LeaderForwarder(this.serviceClient);
  }

  /** Adds the Controller service to `server` (which may also carry the Raft service). */
  register(server: grpc.Server): void {
    server.addService(this.serviceClient.service, this.handlers());
  }

  /** Ends every FetchMetadata stream and closes peer connections; later calls fail fast. */
  close(): void {
    this.closed = true;
    for (const s of this.streams) s.stop();
    this.streams.clear();
    for (const c of this.sessionCalls) if (!c.cancelled) c.end();
    this.sessionCalls.clear();
    if (this.sessionWatch) clearInterval(this.sessionWatch);
    this.forwarder.close();
  }

  private handlers(): grpc.UntypedServiceImplementation {
    const qc = this.qc;
    return {
      CreateTopic: this.unary<{ name: string; partitions: number; replicationFactor: number; configs: Record<string, string> }>('CreateTopic', {
        check: (r) => {
          checkTopicName('name', r.name);
          checkConfigs(r.configs ?? {});
        },
        serve: async (r) => ({
          topic: topicWire(await qc.createTopic({ name: r.name, partitions: r.partitions, replicationFactor: r.replicationFactor, configs: r.configs ?? {} })),
        }),
      }),
      DeleteTopic: this.unary<{ name: string }>('DeleteTopic', {
        check: (r) => checkTopicName('name', r.name),
        serve: async (r) => {
          await qc.deleteTopic(r.name);
          return {};
        },
      }),
      ListTopics: this.unary<Wire>('ListTopics', {
        serve: async () => ({ names: [...(await qc.listTopics())] }),
      }),
      DescribeTopics: this.unary<{ names: string[] }>('DescribeTopics', {
        check: (r) => checkTopicNames(r.names ?? []),
        serve: async (r) => {
          const topics = await qc.describeTopics(r.names && r.names.length > 0 ? r.names : undefined);
          return { topics: topics.map(topicWire) };
        },
      }),
      DescribeCluster: this.unary<Wire>('DescribeCluster', {
        serve: async () => {
          const { brokers } = await qc.describeCluster();
          return {
            brokers: [...brokers]
              .sort((a, b) => a.id - b.id)
              .map((b) => ({ id: b.id, host: b.host, port: b.port, rack: b.rack ?? '', fenced: b.fenced, epoch: b.epoch })),
            controllerId: this.nodeId,
          };
        },
      }),
      DescribeQuorum: (call: grpc.ServerUnaryCall<Wire, Wire>, callback: grpc.sendUnaryData<Wire>) => {
        this.onDescribeQuorum(call).then(
          (res) => callback(null, res),
          (err) => callback(this.toStatus('DescribeQuorum', err)),
        );
      },
      AddController: this.unary<{ id: number; address: string }>('AddController', {
        check: (r) => {
          checkPositiveId('id', r.id);
          checkAddress('address', r.address);
        },
        serve: async (r) => {
          await this.driver.addController(r.id, r.address);
          return {};
        },
      }),
      RemoveController: this.unary<{ id: number }>('RemoveController', {
        check: (r) => checkPositiveId('id', r.id),
        serve: async (r) => {
          await this.driver.removeController(r.id);
          return {};
        },
      }),
      TransferLeadership: this.unary<{ to: number }>('TransferLeadership', {
        check: (r) => checkPositiveId('to', r.to),
        serve: async (r) => {
          await this.driver.transferLeadership(r.to);
          return {};
        },
      }),
      ListEvents: this.unary<{ fromOffset: number; max: number }>('ListEvents', {
        check: (r) => {
          checkNonNegative('fromOffset', r.fromOffset);
          boundedCount(r.max, LIMITS.eventsPerRequestDefault, LIMITS.eventsPerRequestMax);
        },
        serve: async (r) => {
          const max = boundedCount(r.max, LIMITS.eventsPerRequestDefault, LIMITS.eventsPerRequestMax);
          const events = await qc.listEvents({ fromOffset: r.fromOffset, max });
          return { events: events.slice(0, max).map((e) => ({ offset: e.offset, timestampMs: e.timestampMs, kind: e.kind, text: e.text })) };
        },
      }),
      RegisterBroker: this.unary<{ brokerId: number; incarnationId: string; host: string; port: number; rack: string }>('RegisterBroker', {
        check: (r) => {
          checkNonNegative('brokerId', r.brokerId);
          if (r.incarnationId.length === 0) throw new FlotillaError('INVALID_REQUEST', 'incarnationId is empty');
          checkText('incarnationId', r.incarnationId);
          checkAddress('host:port', `${r.host}:${r.port}`);
          checkText('rack', r.rack);
        },
        serve: async (r) => {
          const res = await qc.registerBroker({
            brokerId: r.brokerId,
            incarnationId: r.incarnationId,
            host: r.host,
            port: r.port,
            ...(r.rack ? { rack: r.rack } : {}),
          });
          return { brokerEpoch: res.brokerEpoch };
        },
      }),
      BrokerHeartbeat: this.unary<{ brokerId: number; brokerEpoch: number; currentMetadataOffset: number; wantShutdown: boolean }>('BrokerHeartbeat', {
        check: (r) => {
          checkNonNegative('brokerId', r.brokerId);
          checkNonNegative('currentMetadataOffset', r.currentMetadataOffset);
        },
        serve: async (r) => {
          const res = await qc.brokerHeartbeat(r);
          return { isFenced: res.isFenced, controllerEpoch: res.leaderEpoch ?? 0 };
        },
      }),
      AlterPartition: this.unary<{
        brokerId: number;
        brokerEpoch: number;
        topic: string;
        partition: number;
        leaderEpoch: number;
        partitionEpoch: number;
        newIsr: number[];
        reason: string;
      }>('AlterPartition', {
        check: (r) => {
          checkNonNegative('brokerId', r.brokerId);
          checkTopicName('topic', r.topic);
          checkNonNegative('partition', r.partition);
          if (r.newIsr.length > LIMITS.isrLengthMax) throw new FlotillaError('INVALID_REQUEST', `newIsr has ${r.newIsr.length} ids; at most ${LIMITS.isrLengthMax}`);
          checkText('reason', r.reason);
        },
        serve: async (r) => {
          const p = await qc.alterPartition({ ...r, reason: r.reason || undefined });
          return { leader: p.leader, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, replicas: [...p.replicas], isr: [...p.isr] };
        },
      }),
      AllocateProducerIds: this.unary<{ brokerId: number; brokerEpoch: number }>('AllocateProducerIds', {
        check: (r) => checkNonNegative('brokerId', r.brokerId),
        serve: async (r) => {
          const res = await qc.allocateProducerIds({ brokerId: r.brokerId, brokerEpoch: r.brokerEpoch });
          return { firstProducerId: res.firstProducerId, count: res.count };
        },
      }),
      FetchMetadata: (call: grpc.ServerWritableStream<FetchMetadataRequestWire, unknown>) => this.onFetchMetadata(call),
      BrokerSession: (call: grpc.ServerWritableStream<{ brokerId: number; brokerEpoch: number }, unknown>) => this.onBrokerSession(call),
    };
  }

  /** A unary handler: limits, then local service on the leader or forwarding from a follower. */
  private unary<Req>(method: string, route: UnaryRoute<Req>): grpc.handleUnaryCall<Req, Wire> {
    return (call, callback) => {
      if (this.closed) {
        callback(toGrpcError(new FlotillaError('CONTROLLER_UNAVAILABLE', `controller ${this.nodeId} is shutting down`)));
        return;
      }
      if (this.inflight >= LIMITS.inflightRequestsMax) {
        callback(toGrpcError(new FlotillaError('PROPOSAL_DROPPED', `controller ${this.nodeId} has ${this.inflight} requests in flight; retry later`)));
        return;
      }
      this.inflight++;
      const trailer = new grpc.Metadata();
      this.route(method, route, call, trailer)
        .then(
          (res) => callback(null, res, trailer),
          (err) => callback(this.toStatus(method, err)),
        )
        .finally(() => this.inflight--);
    };
  }

  /** `trailer` goes back with a successful answer: a forwarded one names the leader (shared/rpc/leader-hint.ts). */
  private async route<Req>(method: string, route: UnaryRoute<Req>, call: grpc.ServerUnaryCall<Req, Wire>, trailer: grpc.Metadata): Promise<Wire> {
    // A request that arrives after its absolute deadline (held up in a frozen broker or a
    // partitioned network) is refused before anything is proposed: its client has given up
    // and may have retried elsewhere (shared/rpc/deadline.ts).
    refuseIfExpired(call.metadata, method);
    route.check?.(call.request);
    if (!this.driver.isLeader()) return this.forward(method, call, trailer);
    return route.serve(call.request);
  }

  /**
   * `trailer`: where to name the leader for the caller (shared/rpc/leader-hint.ts);
   * `deadlineCapMs`: an earlier bound than the caller's (a forward whose answer is optional).
   */
  private async forward(method: string, call: grpc.ServerUnaryCall<unknown, unknown>, trailer?: grpc.Metadata, deadlineCapMs = Number.POSITIVE_INFINITY): Promise<Wire> {
    const leaderId = knownLeader(this.driver.leaderId());
    if (leaderId === undefined || leaderId === this.nodeId) {
      throw new FlotillaError('CONTROLLER_UNAVAILABLE', `no active controller is known to controller ${this.nodeId} (election in progress)`, { nodeId: this.nodeId });
    }
    const leaderAddress = this.driver.peerAddress(leaderId) ?? '';
    const hops = forwardHopsOf(call.metadata);
    if (hops >= FORWARD_HOPS_MAX) throw this.notController(leaderId, `the request was already forwarded ${hops} times`);
    if (!leaderAddress) throw this.notController(leaderId, 'its address is unknown here');
    const deadlineMs = Math.min(Date.now() + this.forwardTimeoutMs, deadlineToMs(call.getDeadline()), absoluteDeadlineOf(call.metadata), deadlineCapMs);
    this.logger.debug({ method, leaderId, leaderAddress, hops }, 'forwarding to the active controller');
    try {
      const res = (await this.forwarder.call(leaderAddress, method, call.request as object, hops + 1, deadlineMs)) as Wire;
      trailer?.set(LEADER_ADDRESS_TRAILER, leaderAddress);
      return res;
    } catch (e) {
      const err = e as grpc.ServiceError;
      // The leader's own answer (e.g. TOPIC_ALREADY_EXISTS) passes through unchanged.
      if (err.metadata?.get('flotilla-error-code').length) throw fromGrpcError(err);
      if (err.code === grpc.status.DEADLINE_EXCEEDED) {
        // Not NOT_CONTROLLER: the leader may have received and applied the request.
        throw new FlotillaError(
          'REQUEST_TIMED_OUT',
          `${method} forwarded to controller ${leaderId} at ${leaderAddress} did not complete in time; it may or may not have been applied`,
          { leaderId, leaderAddress },
          { cause: err },
        );
      }
      this.logger.warn({ method, leaderId, leaderAddress, code: err.code, details: err.details }, 'forwarding to the active controller failed');
      throw this.notController(leaderId, `forwarding to it failed: ${err.details || grpc.status[err.code]}`, err);
    }
  }

  /**
   * BrokerSession (proto/controller.proto): held only by the active controller, never
   * forwarded — its point is this controller seeing the broker's own connection close.
   */
  private onBrokerSession(call: grpc.ServerWritableStream<{ brokerId: number; brokerEpoch: number }, unknown>): void {
    const { brokerId, brokerEpoch } = call.request;
    try {
      if (this.closed) throw new FlotillaError('CONTROLLER_UNAVAILABLE', `controller ${this.nodeId} is shutting down`);
      if (this.sessionCalls.size >= LIMITS.brokerSessionsMax) throw new FlotillaError('LIMIT_EXCEEDED', `controller ${this.nodeId} holds ${this.sessionCalls.size} broker sessions`);
      if (!this.driver.isLeader()) {
        const leaderId = knownLeader(this.driver.leaderId());
        if (leaderId === undefined || leaderId === this.nodeId) throw new FlotillaError('CONTROLLER_UNAVAILABLE', `no active controller is known to controller ${this.nodeId}`);
        throw this.notController(leaderId, 'broker sessions are held by the active controller');
      }
      const res = this.qc.brokerSessionOpened(brokerId, brokerEpoch);
      call.write({ controllerEpoch: res.leaderEpoch });
    } catch (e) {
      call.emit('error', this.toStatus('BrokerSession', e));
      return;
    }
    this.sessionCalls.add(call);
    this.sessionWatch ??= setInterval(() => this.endSessionsIfFollower(), SESSION_LEADERSHIP_CHECK_MS).unref();
    call.on('cancelled', () => {
      // The broker's connection is gone (or it closed the call): the quorum controller fences
      // it after a grace unless a heartbeat proves it alive.
      if (!this.sessionCalls.delete(call)) return;
      this.logger.info({ brokerId, brokerEpoch }, 'broker session connection closed');
      this.qc.brokerSessionClosed(brokerId, brokerEpoch, Date.now());
    });
  }

  /** A controller that is no longer active ends its sessions: brokers reopen them on the new one. */
  private endSessionsIfFollower(): void {
    if (this.sessionCalls.size === 0 || this.driver.isLeader()) return;
    const calls = [...this.sessionCalls];
    this.sessionCalls.clear(); // ended by us: not a lost connection
    for (const c of calls) if (!c.cancelled) c.end();
  }

  private notController(leaderId: number, why: string, cause?: unknown): FlotillaError {
    const leaderAddress = this.driver.peerAddress(leaderId) ?? '';
    return new FlotillaError(
      'NOT_CONTROLLER',
      `controller ${this.nodeId} is not the active controller; the leader is ${leaderId}${leaderAddress ? ` at ${leaderAddress}` : ''} and ${why}`,
      { leaderId, leaderAddress },
      { cause },
    );
  }

  /**
   * This controller's own Raft state (so any one can be asked how far it got), with the
   * members' replication progress from the leader, the only node that knows it.
   */
  private async onDescribeQuorum(call: grpc.ServerUnaryCall<Wire, Wire>): Promise<Wire> {
    if (this.closed) throw new FlotillaError('CONTROLLER_UNAVAILABLE', `controller ${this.nodeId} is shutting down`);
    const s = await this.driver.quorumStatus();
    const member = (m: QuorumMemberView): Wire => ({ id: m.id, address: m.address, matchIndex: m.matchIndex, lag: m.lag });
    let members: { voters: Wire[]; learners: Wire[]; fromLeader: boolean } = {
      voters: s.voters.map(member),
      learners: s.learners.map(member),
      fromLeader: this.driver.isLeader(),
    };
    const leaderId = knownLeader(s.leaderId);
    if (!members.fromLeader && leaderId !== undefined && leaderId !== this.nodeId && forwardHopsOf(call.metadata) < FORWARD_HOPS_MAX) {
      try {
        // The leader's view is optional: it may use half of the caller's time, so that a slow
        // or unreachable leader still leaves time to answer this node's own view (chaos seed
        // 324362151: a follower that knew its leader looked dead for 90 s, every DescribeQuorum
        // spent its whole 2 s deadline on a forward to a leader stalled in fsync).
        const callerDeadlineMs = Math.min(deadlineToMs(call.getDeadline()), absoluteDeadlineOf(call.metadata));
        const capMs = Number.isFinite(callerDeadlineMs) ? Date.now() + Math.max(0, callerDeadlineMs - Date.now()) / 2 : Number.POSITIVE_INFINITY;
        const leader = (await this.forward('DescribeQuorum', call, undefined, capMs)) as { voters: Wire[]; learners: Wire[]; fromLeader: boolean };
        members = { voters: leader.voters, learners: leader.learners, fromLeader: leader.fromLeader };
      } catch (e) {
        this.logger.debug({ err: e }, 'DescribeQuorum: the leader did not answer; member progress unknown');
      }
    }
    return {
      leaderId: leaderId ?? 0,
      term: s.term,
      commitIndex: s.commitIndex,
      appliedIndex: s.appliedIndex,
      snapshotIndex: s.snapshotIndex,
      ...members,
      servedBy: this.nodeId,
    };
  }

  private onFetchMetadata(call: grpc.ServerWritableStream<FetchMetadataRequestWire, unknown>): void {
    const req = call.request;
    try {
      if (this.closed) throw new FlotillaError('CONTROLLER_UNAVAILABLE', `controller ${this.nodeId} is shutting down`);
      checkNonNegative('fromOffset', req.fromOffset);
      checkText('clientId', req.clientId);
      if (this.streams.size >= LIMITS.metadataStreamsMax) {
        throw new FlotillaError('LIMIT_EXCEEDED', `controller ${this.nodeId} already serves ${this.streams.size} metadata streams`);
      }
    } catch (e) {
      call.emit('error', this.toStatus('FetchMetadata', e));
      return;
    }
    const maxEntries = boundedCount(req.maxEntries, LIMITS.fetchEntriesPerMessageDefault, LIMITS.fetchEntriesPerMessageMax);
    const stream = new MetadataStream(call, {
      driver: this.driver,
      imageSnapshot: this.opts.imageSnapshot,
      logger: this.logger,
      pollMs: this.opts.metadataPollMs ?? METADATA_POLL_MS_DEFAULT,
    });
    this.streams.add(stream);
    this.logger.debug({ clientId: req.clientId, fromOffset: req.fromOffset }, 'metadata stream opened');
    stream
      .run(req.fromOffset, maxEntries)
      .then(
        () => {
          if (!call.cancelled && call.writable) call.end();
        },
        (err) => {
          if (!call.cancelled && call.writable) call.emit('error', this.toStatus('FetchMetadata', err));
        },
      )
      .finally(() => {
        this.streams.delete(stream);
        this.logger.debug({ clientId: req.clientId }, 'metadata stream closed');
      });
  }

  /** Maps any failure to a gRPC status; unexpected errors are logged, typed ones are not. */
  private toStatus(method: string, err: unknown): grpc.ServerErrorResponse {
    let fe: FlotillaError;
    if (isFlotillaError(err)) {
      fe = err.name === 'NOT_CONTROLLER' && !err.details.leaderAddress ? this.withLeaderHint(err) : err;
    } else {
      this.logger.error({ err, method }, 'unexpected error serving a request');
      fe = new FlotillaError('UNKNOWN', `${method}: ${(err as Error)?.message ?? String(err)}`, {}, { cause: err });
    }
    return toGrpcError(fe) as grpc.ServerErrorResponse;
  }

  /** A NOT_CONTROLLER raised below us (leadership lost mid-request) gains the leader's address. */
  private withLeaderHint(err: FlotillaError): FlotillaError {
    const leaderId = knownLeader(this.driver.leaderId());
    if (leaderId === undefined || leaderId === this.nodeId) {
      return new FlotillaError('CONTROLLER_UNAVAILABLE', `${err.message} (no new leader known yet)`, { ...err.details }, { cause: err });
    }
    return new FlotillaError('NOT_CONTROLLER', err.message, { ...err.details, leaderId, leaderAddress: this.driver.peerAddress(leaderId) ?? '' }, { cause: err });
  }
}

function deadlineToMs(deadline: grpc.Deadline): number {
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

function partitionWire(p: PartitionView): Wire {
  return {
    partition: p.partition,
    leader: p.leader,
    leaderEpoch: p.leaderEpoch,
    partitionEpoch: p.partitionEpoch,
    replicas: [...p.replicas],
    isr: [...p.isr],
    status: STATUS_WIRE[p.status] ?? 'PARTITION_STATUS_UNSPECIFIED',
    why: p.why ?? '',
  };
}

function topicWire(t: TopicView): Wire {
  return {
    name: t.name,
    topicId: t.topicId,
    configs: { ...t.configs },
    partitions: [...t.partitions].sort((a, b) => a.partition - b.partition).map(partitionWire),
  };
}
