import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { Flotilla, FlotillaError } from '../../client';
import { ControllerService, controllerServiceClient } from '../../controller/server/controller-service';
import type { CommittedRead, DriverPort, QuorumControllerPort, TopicView } from '../../controller/server/ports';
import { silentLogger } from '../../shared/log';
import { fromGrpcError } from '../../shared/rpc/grpc-errors';
import { CHANNEL_OPTIONS, SERVER_OPTIONS } from '../../shared/rpc/proto';
import { withAbsoluteDeadline } from '../../shared/rpc/deadline';
import { deadAddress } from './fake-controller';

// The client against the real Controller gRPC handlers (controller/server), with a fake
// driver and quorum controller behind them: a follower forwards to the leader, passes the
// leader's typed errors through, bounds forwarding hops, and answers NOT_CONTROLLER /
// CONTROLLER_UNAVAILABLE when it cannot forward. Also the FetchMetadata stream.

class FakeDriver implements DriverPort {
  leader = 0;
  self: number;
  addresses = new Map<number, string>();
  log: { index: number; term: number; data: Uint8Array }[] = [];
  snapshotIndex = 0;
  constructor(self: number) {
    this.self = self;
  }
  isLeader(): boolean {
    return this.leader === this.self;
  }
  leaderId(): number {
    return this.leader;
  }
  peerAddress(id: number): string | undefined {
    return this.addresses.get(id);
  }
  quorumStatus() {
    const member = (id: number) => ({ id, address: this.addresses.get(id) ?? '', matchIndex: 0, lag: 0 });
    return { leaderId: this.leader, term: 1, commitIndex: 0, appliedIndex: 0, snapshotIndex: this.snapshotIndex, voters: [1, 2].map(member), learners: [] };
  }
  async addController(): Promise<void> {}
  async removeController(): Promise<void> {}
  async transferLeadership(): Promise<void> {}
  readCommitted(fromIndex: number, maxEntries: number): CommittedRead {
    if (fromIndex <= this.snapshotIndex) return { compacted: true, snapshotIndex: this.snapshotIndex };
    const entries = this.log.filter((e) => e.index >= fromIndex).slice(0, maxEntries);
    return { entries, nextIndex: entries.length > 0 ? entries[entries.length - 1]!.index + 1 : fromIndex };
  }
}

class FakeQuorumController implements QuorumControllerPort {
  readonly topics = new Map<string, TopicView>();
  calls = 0;
  async createTopic(req: { name: string; partitions: number; replicationFactor: number; configs?: Record<string, string> }): Promise<TopicView> {
    this.calls++;
    if (this.topics.has(req.name)) throw new FlotillaError('TOPIC_ALREADY_EXISTS', `topic ${req.name} exists`);
    const t: TopicView = {
      name: req.name,
      topicId: `id-${req.name}`,
      configs: req.configs ?? {},
      partitions: Array.from({ length: req.partitions }, (_, partition) => ({
        partition,
        leader: 1,
        leaderEpoch: 0,
        partitionEpoch: 0,
        replicas: [1],
        isr: [1],
        status: 'online' as const,
      })),
    };
    this.topics.set(req.name, t);
    return t;
  }
  async deleteTopic(name: string): Promise<void> {
    this.calls++;
    this.topics.delete(name);
  }
  async listTopics(): Promise<string[]> {
    this.calls++;
    return [...this.topics.keys()].sort();
  }
  async describeTopics(names?: string[]): Promise<TopicView[]> {
    this.calls++;
    return (names ?? [...this.topics.keys()]).map((n) => this.topics.get(n)!).filter(Boolean);
  }
  async describeCluster() {
    return { brokers: [] };
  }
  async listEvents() {
    return [{ offset: 1, timestampMs: 0, kind: 'topic-created', text: 'topic created' }];
  }
  async registerBroker() {
    return { brokerEpoch: 1 };
  }
  async brokerHeartbeat() {
    return { isFenced: false };
  }
  brokerSessionOpened() {
    return { leaderEpoch: 1 };
  }
  brokerSessionClosed() {}
  async alterPartition(req: { newIsr: number[] }) {
    return { leader: 1, leaderEpoch: 0, partitionEpoch: 1, replicas: [1, 2], isr: req.newIsr };
  }
  async allocateProducerIds() {
    return { firstProducerId: 0, count: 1000 };
  }
}

interface Node {
  id: number;
  address: string;
  driver: FakeDriver;
  qc: FakeQuorumController;
  service: ControllerService;
  server: grpc.Server;
}

async function startNode(id: number, imageBatches: Uint8Array[] = []): Promise<Node> {
  const driver = new FakeDriver(id);
  const qc = new FakeQuorumController();
  const service = new ControllerService({
    nodeId: id,
    driver,
    controller: qc,
    logger: silentLogger(),
    imageSnapshot: () => ({ offset: driver.snapshotIndex, batches: imageBatches }),
    forwardTimeoutMs: 2_000,
    metadataPollMs: 10,
  });
  const server = new grpc.Server(SERVER_OPTIONS);
  service.register(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { id, address: `127.0.0.1:${port}`, driver, qc, service, server };
}

/** One raw call, no client retries: what exactly does this node answer? */
function rawCall(address: string, method: string, request: object, md: grpc.Metadata = new grpc.Metadata(), timeoutMs = 3_000): Promise<unknown> {
  const Client = controllerServiceClient();
  const client = new Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, (r: object, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<unknown>) => void>)[method]!.call(
      client,
      request,
      md,
      { deadline: Date.now() + timeoutMs },
      (err, res) => {
        client.close();
        if (err) reject(fromGrpcError(err));
        else resolve(res);
      },
    );
  });
}

async function rawError(address: string, method: string, request: object, md?: grpc.Metadata): Promise<FlotillaError> {
  try {
    await rawCall(address, method, request, md);
  } catch (e) {
    return e as FlotillaError;
  }
  throw new Error('expected an error');
}

describe('controller service: forwarding to the active controller', function () {
  this.timeout(20_000);
  let nodes: Node[] = [];

  async function pair(): Promise<[Node, Node]> {
    const a = await startNode(1);
    const b = await startNode(2);
    nodes = [a, b];
    for (const n of nodes) {
      n.driver.addresses.set(1, a.address);
      n.driver.addresses.set(2, b.address);
      n.driver.leader = 2;
    }
    return [a, b];
  }

  afterEach(() => {
    for (const n of nodes) {
      n.service.close();
      n.server.forceShutdown();
    }
    nodes = [];
  });

  it('a follower forwards a write to the leader and relays its answer', async () => {
    const [follower, leader] = await pair();
    const admin = new Flotilla({ bootstrap: [follower.address], totalTimeoutMs: 5_000 }).admin();
    try {
      const t = await admin.createTopic({ name: 'orders', partitions: 2, replicationFactor: 1, configs: { 'retention.ms': '60000' } });
      expect(t.name).to.equal('orders');
      expect(t.partitions.map((p) => p.status)).to.deep.equal(['online', 'online']);
      expect(t.configs).to.deep.equal({ 'retention.ms': '60000' });
      expect(leader.qc.topics.has('orders')).to.equal(true);
      expect(follower.qc.calls, 'the follower never serves from its own state').to.equal(0);
      expect(await admin.listTopics()).to.deep.equal(['orders']);
    } finally {
      await admin.close();
    }
  });

  it('after an answer a follower forwarded, the client sends its next call to the leader directly', async () => {
    const [follower, leader] = await pair();
    // Only the follower is configured: the leader is known only from the forwarded answer.
    const admin = new Flotilla({ bootstrap: [follower.address], totalTimeoutMs: 3_000, backoffInitialMs: 20, backoffMaxMs: 50 }).admin();
    try {
      await admin.createTopic({ name: 'first', partitions: 1, replicationFactor: 1 });
      // The follower goes away; a client still sending through it could not succeed.
      follower.service.close();
      follower.server.forceShutdown();
      await admin.createTopic({ name: 'second', partitions: 1, replicationFactor: 1 });
      expect([...leader.qc.topics.keys()].sort()).to.deep.equal(['first', 'second']);
    } finally {
      await admin.close();
    }
  });

  it('refuses, without applying it, a write that arrives after its absolute deadline (held up on the way), on the leader and through a follower', async () => {
    const [follower, leader] = await pair();
    const late = () => withAbsoluteDeadline(Date.now() - 5_000);
    for (const via of [leader, follower]) {
      const err = await rawError(via.address, 'CreateTopic', { name: `late-${via.id}`, partitions: 1, replicationFactor: 1 }, late());
      expect(err.name).to.equal('REQUEST_TIMED_OUT');
      expect(err.message).to.match(/after its deadline .*not applied/);
    }
    expect([...leader.qc.topics.keys()], 'nothing created').to.deep.equal([]);
    // In time, the same request is served.
    await rawCall(follower.address, 'CreateTopic', { name: 'in-time', partitions: 1, replicationFactor: 1 }, withAbsoluteDeadline(Date.now() + 5_000));
    expect(leader.qc.topics.has('in-time')).to.equal(true);
  });

  it("relays the leader's typed error unchanged", async () => {
    const [follower] = await pair();
    await rawCall(follower.address, 'CreateTopic', { name: 'dup', partitions: 1, replicationFactor: 1 });
    const err = await rawError(follower.address, 'CreateTopic', { name: 'dup', partitions: 1, replicationFactor: 1 });
    expect(err.name).to.equal('TOPIC_ALREADY_EXISTS');
    expect(err.message).to.equal('topic dup exists');
  });

  it('answers CONTROLLER_UNAVAILABLE (retriable) when no leader is known', async () => {
    const [a] = await pair();
    a.driver.leader = 0;
    const err = await rawError(a.address, 'ListTopics', {});
    expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
    expect(err.retriable).to.equal(true);
  });

  it('answers NOT_CONTROLLER with leaderId and leaderAddress when the leader cannot be reached', async () => {
    const [a] = await pair();
    const dead = await deadAddress();
    a.driver.addresses.set(2, dead);
    const err = await rawError(a.address, 'ListTopics', {});
    expect(err.name).to.equal('NOT_CONTROLLER');
    expect(err.details).to.deep.equal({ leaderId: 2, leaderAddress: dead });
  });

  it('bounds forwarding hops when two controllers each think the other leads', async () => {
    const [a, b] = await pair();
    a.driver.leader = 2;
    b.driver.leader = 1;
    const err = await rawError(a.address, 'ListTopics', {});
    expect(err.name).to.equal('NOT_CONTROLLER');
    expect(err.message).to.match(/already forwarded 2 times/);
    expect(a.qc.calls + b.qc.calls).to.equal(0);
  });

  it('broker-facing calls are forwarded and answered in the proto shapes', async () => {
    const [follower] = await pair();
    expect(await rawCall(follower.address, 'RegisterBroker', { brokerId: 0, incarnationId: 'inc-1', host: 'b0', port: 9092 })).to.deep.equal({ brokerEpoch: 1 });
    expect(await rawCall(follower.address, 'BrokerHeartbeat', { brokerId: 0, brokerEpoch: 1, currentMetadataOffset: 3 })).to.deep.equal({
      isFenced: false,
      controllerEpoch: 0,
    });
    const altered = await rawCall(follower.address, 'AlterPartition', {
      brokerId: 1,
      brokerEpoch: 1,
      topic: 'orders',
      partition: 0,
      leaderEpoch: 0,
      partitionEpoch: 0,
      newIsr: [1],
    });
    expect(altered).to.deep.equal({ leader: 1, leaderEpoch: 0, partitionEpoch: 1, replicas: [1, 2], isr: [1] });
    expect(await rawCall(follower.address, 'AllocateProducerIds', { brokerId: 1, brokerEpoch: 1 })).to.deep.equal({ firstProducerId: 0, count: 1000 });
  });

  it('refuses oversized requests where they arrive', async () => {
    const [a] = await pair();
    const names = Array.from({ length: 1_001 }, (_, i) => `t${i}`);
    const err = await rawError(a.address, 'DescribeTopics', { names });
    expect(err.name).to.equal('INVALID_REQUEST');
    expect(err.message).to.match(/at most 1000/);
  });

  it("DescribeQuorum gives the answering node's own state with the leader's member progress", async () => {
    const [a, b] = await pair();
    b.driver.quorumStatus = () => ({
      leaderId: 2,
      term: 4,
      commitIndex: 9,
      appliedIndex: 9,
      snapshotIndex: 0,
      voters: [1, 2].map((id) => ({ id, address: `leader-view-${id}`, matchIndex: 9, lag: 0 })),
      learners: [],
    });
    const viaFollower = (await rawCall(a.address, 'DescribeQuorum', {})) as Record<string, unknown>;
    expect(viaFollower).to.include({ servedBy: 1, fromLeader: true, leaderId: 2, term: 1 });
    expect((viaFollower.voters as { address: string }[]).map((v) => v.address)).to.deep.equal(['leader-view-1', 'leader-view-2']);
    a.driver.leader = 0;
    const alone = (await rawCall(a.address, 'DescribeQuorum', {})) as Record<string, unknown>;
    expect(alone).to.include({ servedBy: 1, fromLeader: false, leaderId: 0 });
  });

  it('DescribeQuorum via a follower answers its own view within the caller\'s deadline when the leader does not answer', async () => {
    // Chaos seed 324362151: a follower that knew its leader answered nothing for 90 s, each
    // call's whole deadline spent on forwarding to a leader that was stalled.
    const [a, b] = await pair();
    (b.driver as unknown as { quorumStatus: () => Promise<never> }).quorumStatus = () => new Promise<never>(() => undefined);
    const res = (await rawCall(a.address, 'DescribeQuorum', {}, new grpc.Metadata(), 1_000)) as Record<string, unknown>;
    expect(res).to.include({ servedBy: 1, fromLeader: false, leaderId: 2 });
  });
});

describe('controller service: FetchMetadata', function () {
  this.timeout(20_000);
  let node: Node | undefined;
  afterEach(() => {
    node?.service.close();
    node?.server.forceShutdown();
    node = undefined;
  });

  type Entry = { offset: number; term: number; batch: Buffer; snapshot: boolean; snapshotDone: boolean };

  /** Collects streamed entries until `count` arrived, then cancels. */
  function fetch(address: string, fromOffset: number, count: number): Promise<Entry[]> {
    const Client = controllerServiceClient();
    const client = new Client(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    const got: Entry[] = [];
    return new Promise((resolve, reject) => {
      const call = (client as unknown as { FetchMetadata(r: object): grpc.ClientReadableStream<{ entries: Entry[] }> }).FetchMetadata({ fromOffset, clientId: 'test' });
      call.on('data', (msg: { entries: Entry[] }) => {
        got.push(...msg.entries);
        if (got.length >= count) {
          call.cancel();
          client.close();
          resolve(got);
        }
      });
      call.on('error', (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) reject(e);
      });
    });
  }

  const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);

  it('streams committed entries with their offsets and keeps following', async () => {
    node = await startNode(1);
    node.driver.log = [
      { index: 2, term: 1, data: bytes('a') },
      { index: 4, term: 1, data: bytes('b') },
    ];
    const done = fetch(node.address, 3, 2);
    const n = node;
    setTimeout(() => n.driver.log.push({ index: 7, term: 2, data: bytes('c') }), 50);
    const got = await done;
    expect(got.map((e) => [e.offset, e.term, Buffer.from(e.batch).toString(), e.snapshot])).to.deep.equal([
      [4, 1, 'b', false],
      [7, 2, 'c', false],
    ]);
  });

  it('sends the image first when the start offset was compacted, then continues after it', async () => {
    node = await startNode(1, [bytes('img1'), bytes('img2')]);
    node.driver.snapshotIndex = 5;
    node.driver.log = [{ index: 6, term: 2, data: bytes('next') }];
    const got = await fetch(node.address, 0, 3);
    expect(got.map((e) => [e.offset, Buffer.from(e.batch).toString(), e.snapshot, e.snapshotDone])).to.deep.equal([
      [5, 'img1', true, false],
      [5, 'img2', true, true],
      [6, 'next', false, false],
    ]);
  });
});
