import * as grpc from '@grpc/grpc-js';
import { Writable } from 'node:stream';
import { expect } from 'chai';
import { controllerClientConstructor, startBroker } from '../../broker';
import type { Admin, TopicDescription } from '../../client';
import { FlotillaError } from '../../shared/errors/error-codes';
import { createLogger } from '../../shared/log';
import { fromGrpcError } from '../../shared/rpc/grpc-errors';
import { CHANNEL_OPTIONS } from '../../shared/rpc/proto';
import { InProcessCluster, waitFor } from './in-process-cluster';
import { BrokerWire } from '../broker-replica/broker-wire';
import { freePort } from '../integration/controller-launcher';

// startBroker against real controllers in this process: registration and unfencing, the
// broker's own metadata image following topic changes, the replica placeholder learning its
// roles, the admin API through a broker (same answers and typed errors as a controller),
// broker-facing calls refused, catching up from a snapshot, and following the log across a
// controller going away.

async function failure(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    return e as FlotillaError;
  }
  throw new Error('expected a failure');
}

/** The partitions of a topic as the broker's own image has them, in describeTopics' shape. */
function imagePartitions(cluster: InProcessCluster, brokerId: number, name: string) {
  const t = cluster.brokers.get(brokerId)!.image().topics.get(name);
  if (!t) return undefined;
  return [...t.partitions.values()]
    .sort((a, b) => a.partition - b.partition)
    .map((p) => ({ partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: [...p.replicas], isr: [...p.isr] }));
}

function describedPartitions(t: TopicDescription) {
  return t.partitions.map((p) => ({ partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, replicas: p.replicas, isr: p.isr }));
}

describe('broker: startBroker with in-process controllers', function () {
  this.timeout(60_000);
  let cluster: InProcessCluster;

  afterEach(async () => {
    await cluster?.stop();
  });

  it('registers, becomes unfenced, and is listed by the controller at its bound address', async () => {
    cluster = await InProcessCluster.start();
    const startMs = Date.now();
    const b = await cluster.startBroker(1, { rack: 'rack-a' });
    await waitFor('unfenced', () => b.status().state === 'running');
    const tookMs = Date.now() - startMs;
    const s = b.status();
    expect(s.isFenced).to.equal(false);
    expect(s.brokerEpoch).to.be.greaterThan(0);
    expect(s.metadataOffset).to.be.at.least(s.brokerEpoch);
    const c = await cluster.admin(cluster.bootstrap()).describeCluster();
    expect(c.brokers).to.deep.equal([{ id: 1, host: '127.0.0.1', port: Number(b.address.split(':')[1]), rack: 'rack-a', fenced: false, epoch: s.brokerEpoch }]);
    // The broker's own image agrees once it has applied the BrokerUnfenced record.
    await waitFor('the unfencing in its own image', () => b.image().brokers.get(1)?.fenced === false);
    expect(b.image().brokers.get(1)).to.include({ epoch: s.brokerEpoch, incarnationId: b.incarnationId });
    expect(tookMs).to.be.below(15_000);
  });

  it("follows topic creation and deletion in its own image; each replica takes its role and the logs go with the topic", async () => {
    cluster = await InProcessCluster.start();
    for (const id of [1, 2, 3]) await cluster.startBroker(id);
    await waitFor('three unfenced brokers', () => [1, 2, 3].every((id) => cluster.brokers.get(id)!.status().state === 'running'));
    const admin = cluster.admin(cluster.bootstrap());
    const created = await admin.createTopic({ name: 'orders', partitions: 3, replicationFactor: 3 });
    for (const id of [1, 2, 3]) {
      await waitFor(`broker ${id} to see orders`, () => imagePartitions(cluster, id, 'orders'));
      expect(imagePartitions(cluster, id, 'orders')).to.deep.equal(describedPartitions(created));
      // Logs open asynchronously: wait until every replica has taken its role.
      await waitFor(`broker ${id} to open its replicas`, () => cluster.brokers.get(id)!.replicas().every((r) => r.role === 'leader' || r.role === 'follower'));
      const replicas = cluster.brokers.get(id)!.replicas();
      expect(replicas.map((r) => r.partition)).to.deep.equal([0, 1, 2]);
      for (const r of replicas) {
        const p = created.partitions[r.partition]!;
        expect(r.role, `broker ${id} orders-${r.partition}`).to.equal(p.leader === id ? 'leader' : 'follower');
        expect(r.leaderEpoch).to.equal(p.leaderEpoch);
      }
    }
    await admin.deleteTopic('orders');
    for (const id of [1, 2, 3]) {
      await waitFor(`broker ${id} to forget orders`, () => !cluster.brokers.get(id)!.image().topics.has('orders'));
      expect(cluster.brokers.get(id)!.replicas()).to.deep.equal([]);
    }
  });

  it('serves the admin API by forwarding: the same answers and the same typed errors as a controller', async () => {
    cluster = await InProcessCluster.start();
    const b = await cluster.startBroker(1);
    await waitFor('unfenced', () => b.status().state === 'running');
    const viaBroker = cluster.admin([b.address]);
    const viaController = cluster.admin(cluster.bootstrap());

    const t = await viaBroker.createTopic({ name: 'via-broker', partitions: 2, replicationFactor: 1, configs: { 'retention.ms': '60000' } });
    expect(t.partitions).to.have.length(2);
    expect(await viaBroker.listTopics()).to.deep.equal(['via-broker']);
    expect(await viaBroker.describeTopics(['via-broker'])).to.deep.equal(await viaController.describeTopics(['via-broker']));
    expect((await viaBroker.describeCluster()).brokers.map((x) => x.id)).to.deep.equal([1]);
    expect((await viaBroker.describeQuorum()).leaderId).to.equal(1);
    expect((await viaBroker.listEvents()).map((e) => e.kind)).to.include('topic-created');

    const bad: [string, (a: Admin) => Promise<unknown>][] = [
      ['INVALID_TOPIC_NAME', (a) => a.createTopic({ name: 'bad name!', partitions: 1, replicationFactor: 1 })],
      ['INVALID_PARTITIONS', (a) => a.createTopic({ name: 'zero', partitions: 0, replicationFactor: 1 })],
      ['INVALID_REPLICATION_FACTOR', (a) => a.createTopic({ name: 'rf', partitions: 1, replicationFactor: 2 })],
      ['INVALID_CONFIG', (a) => a.createTopic({ name: 'cfg', partitions: 1, replicationFactor: 1, configs: { 'retention.ms': 'soon' } })],
      ['TOPIC_ALREADY_EXISTS', (a) => a.createTopic({ name: 'via-broker', partitions: 1, replicationFactor: 1 })],
      ['UNKNOWN_TOPIC', (a) => a.deleteTopic('missing')],
      ['INVALID_REQUEST', (a) => a.describeTopics([''])],
    ];
    for (const [code, op] of bad) {
      const fromBroker = await failure(op(viaBroker));
      const fromController = await failure(op(viaController));
      expect(fromBroker.name, code).to.equal(code);
      expect(fromBroker.message).to.equal(fromController.message);
      expect(fromBroker.details).to.deep.equal(fromController.details);
    }
    await viaBroker.deleteTopic('via-broker');
    expect(await viaController.listTopics()).to.deep.equal([]);
  });

  it('answers INVALID_REQUEST to broker-facing calls (unary and FetchMetadata)', async () => {
    cluster = await InProcessCluster.start();
    const b = await cluster.startBroker(1);
    const Client = controllerClientConstructor();
    const client = new Client(b.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS) as unknown as Record<string, (...args: unknown[]) => unknown> & grpc.Client;
    try {
      const unary = await new Promise<grpc.ServiceError>((resolve) =>
        client.RegisterBroker!({ brokerId: 9, incarnationId: 'x', host: 'h', port: 1 }, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err: grpc.ServiceError) => resolve(err)),
      );
      expect(fromGrpcError(unary).name).to.equal('INVALID_REQUEST');
      expect(fromGrpcError(unary).message).to.match(/broker 1 does not serve RegisterBroker/);
      const stream = client.FetchMetadata!({ fromOffset: 0 }, new grpc.Metadata(), {}) as grpc.ClientReadableStream<unknown>;
      const streamErr = await new Promise<grpc.ServiceError>((resolve) => {
        stream.on('data', () => undefined);
        stream.on('error', resolve);
      });
      expect(fromGrpcError(streamErr).name).to.equal('INVALID_REQUEST');
    } finally {
      client.close();
    }
  });

  it('catches up from the controller snapshot when the log it needs was compacted', async () => {
    cluster = await InProcessCluster.start({ controller: { snapshotEveryEntries: 5 } });
    const b1 = await cluster.startBroker(1);
    await waitFor('broker 1 unfenced', () => b1.status().state === 'running');
    const admin = cluster.admin(cluster.bootstrap());
    for (let i = 0; i < 12; i++) await admin.createTopic({ name: `t${i}`, partitions: 1, replicationFactor: 1 });
    await waitFor('a snapshot past the first entries', async () => (await admin.describeQuorum()).snapshotIndex > 5);
    const lines: string[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) });
    const b2 = await cluster.startBroker(2, { logger: createLogger({ nodeId: 2, role: 'broker', destination: sink, pretty: false }) });
    await waitFor('broker 2 unfenced', () => b2.status().state === 'running');
    expect(lines.some((l) => l.includes('image loaded from a controller snapshot'))).to.equal(true);
    expect([...b2.image().topics.keys()].sort()).to.deep.equal([...b1.image().topics.keys()].sort());
    expect(b2.image().topics.size).to.equal(12);
  });

  it('keeps following the metadata log and heartbeating when the controller it streams from stops', async () => {
    cluster = await InProcessCluster.start({ controllers: 3 });
    const b = await cluster.startBroker(1);
    await waitFor('unfenced', () => b.status().state === 'running');
    const streamingFrom = b.status().controller!;
    const id = [...cluster.controllerAddresses].find(([, a]) => a === streamingFrom)![0];
    await cluster.stopController(id);
    const survivors = cluster.bootstrap().filter((a) => a !== streamingFrom);
    const admin = cluster.admin(survivors);
    await admin.createTopic({ name: 'after-stop', partitions: 1, replicationFactor: 1 });
    await waitFor('the topic in the broker image', () => b.image().topics.has('after-stop'));
    expect(b.status().controller).to.not.equal(streamingFrom);
    await waitFor('unfenced after the change', () => b.status().state === 'running');
    const c = await admin.describeCluster();
    expect(c.brokers.find((x) => x.id === 1)?.fenced).to.equal(false);
  });

  it('refuses a data dir that belongs to another broker id', async () => {
    cluster = await InProcessCluster.start();
    const b = await cluster.startBroker(1);
    await cluster.stopBroker(1);
    const err = await failure(
      startBroker({ nodeId: 2, listen: '127.0.0.1:0', controllers: cluster.bootstrap(), dataDir: `${cluster.rootDir}/broker-1`, logger: createLogger({ nodeId: 2, role: 'broker', level: 'silent' }) }),
    );
    expect(String(err.message)).to.match(/belongs to broker 1, not 2/);
    expect(b.address).to.match(/^127\.0\.0\.1:\d+$/);
  });

  it('registers --advertised-address instead of the bound one: describeCluster and every broker\'s Metadata answer it', async () => {
    cluster = await InProcessCluster.start();
    const port = await freePort();
    const b1 = await cluster.startBroker(1, { listen: `127.0.0.1:${port}`, advertisedAddress: `localhost:${port}` });
    const b2 = await cluster.startBroker(2);
    await waitFor('two unfenced brokers', () => [b1, b2].every((b) => b.status().state === 'running'));
    expect(b1.address).to.equal(`127.0.0.1:${port}`);
    expect(b1.advertisedAddress).to.equal(`localhost:${port}`);
    // Without the option the bound address is the advertised one.
    expect(b2.advertisedAddress).to.equal(b2.address);
    const c = await cluster.admin(cluster.bootstrap()).describeCluster();
    expect(c.brokers.map((b) => `${b.id}=${b.host}:${b.port}`)).to.deep.equal([`1=localhost:${port}`, `2=${b2.address}`]);
    for (const b of [b1, b2]) {
      const wire = new BrokerWire(b.address);
      try {
        await waitFor(`broker ${b.address} to know both registrations`, async () => (await wire.metadata()).brokers.length === 2);
        const md = await wire.metadata();
        expect(md.brokers.map((x) => `${x.brokerId}=${x.host}:${x.port}`).sort()).to.deep.equal([`1=localhost:${port}`, `2=${b2.address}`]);
      } finally {
        wire.close();
      }
    }
  });

  it('refuses an advertised address that no one could connect to, with INVALID_CONFIG', async () => {
    cluster = await InProcessCluster.start();
    for (const bad of ['0.0.0.0:9193', 'broker-1:0', 'no-port']) {
      const err = await failure(cluster.startBroker(1, { advertisedAddress: bad }));
      expect(err.name, bad).to.equal('INVALID_CONFIG');
    }
  });
});
