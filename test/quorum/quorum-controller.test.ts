import { expect } from 'chai';
import { FlotillaError, ErrorName } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import { decodeBatch, MetadataImage, MetadataRecord, PartitionState } from '../../shared/metadata';
import { QuorumController } from '../../controller/quorum';
import { FakeMetadataLog } from './fake-metadata-log';
import { seededRandom as seeded } from '../support/seeded-random';

const SESSION_MS = 9000;


interface Harness {
  readonly c: QuorumController;
  readonly log: FakeMetadataLog;
  readonly clock: { now: number };
  /** brokerId -> current broker epoch */
  readonly epochs: Map<number, number>;
}

function setup(opts: { maxPendingProposals?: number; producerIdBlockSize?: number; leaderImbalanceCheckIntervalMs?: number; departureChangesPerBatch?: number } = {}): Harness {
  const clock = { now: 1_000_000 };
  const log = new FakeMetadataLog();
  const c = new QuorumController({
    log,
    nowMs: () => clock.now,
    logger: silentLogger(),
    brokerSessionTimeoutMs: SESSION_MS,
    random: seeded(42),
    ...opts,
  });
  log.attach(c);
  log.becomeLeader();
  c.onLeadershipChange(true, clock.now);
  return { c, log, clock, epochs: new Map() };
}

async function addBroker(h: Harness, id: number, rack?: string): Promise<number> {
  const { brokerEpoch } = await h.c.registerBroker({ brokerId: id, incarnationId: `inc-${id}-${brokerEpochSalt++}`, host: `broker${id}`, port: 9092, rack });
  const hb = await h.c.brokerHeartbeat({ brokerId: id, brokerEpoch, currentMetadataOffset: h.log.lastIndex() });
  expect(hb.isFenced).to.equal(false);
  h.epochs.set(id, brokerEpoch);
  return brokerEpoch;
}
let brokerEpochSalt = 0;

async function heartbeat(h: Harness, ...ids: number[]): Promise<void> {
  for (const id of ids) {
    await h.c.brokerHeartbeat({ brokerId: id, brokerEpoch: h.epochs.get(id) as number, currentMetadataOffset: h.log.lastIndex() });
  }
}

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (err) {
    expect(err).to.be.instanceOf(FlotillaError);
    return err as FlotillaError;
  }
  throw new Error('expected the call to reject');
}

async function expectCode(p: Promise<unknown>, name: ErrorName, message?: RegExp): Promise<FlotillaError> {
  const err = await rejection(p);
  expect(err.name, err.message).to.equal(name);
  if (message !== undefined) expect(err.message).to.match(message);
  return err;
}

function partitionOf(h: Harness, topic: string, partition: number): PartitionState {
  const p = h.c.image().partition(topic, partition);
  expect(p, `${topic}-${partition}`).to.not.equal(undefined);
  return p as PartitionState;
}

function recordsInLog(h: Harness): MetadataRecord[] {
  return h.log.entries.filter((e) => e.data.length > 0).flatMap((e) => decodeBatch(e.data));
}

describe('controller/quorum QuorumController', () => {
  describe('createTopic', () => {
    it('rejects each invalid request with its code, and nothing is proposed or half-created', async () => {
      const h = setup();
      await addBroker(h, 1);
      await addBroker(h, 2);
      await h.c.createTopic({ name: 'exists', partitions: 1, replicationFactor: 1 });
      const before = h.c.image();
      const entries = h.log.entries.length;

      await expectCode(h.c.createTopic({ name: 'bad name', partitions: 1, replicationFactor: 1 }), 'INVALID_TOPIC_NAME', /"bad name"/);
      await expectCode(h.c.createTopic({ name: '..', partitions: 1, replicationFactor: 1 }), 'INVALID_TOPIC_NAME');
      await expectCode(h.c.createTopic({ name: 'x'.repeat(250), partitions: 1, replicationFactor: 1 }), 'INVALID_TOPIC_NAME');
      await expectCode(h.c.createTopic({ name: 'exists', partitions: 1, replicationFactor: 1 }), 'TOPIC_ALREADY_EXISTS');
      await expectCode(h.c.createTopic({ name: 't', partitions: 0, replicationFactor: 1 }), 'INVALID_PARTITIONS', /0/);
      await expectCode(h.c.createTopic({ name: 't', partitions: 10_001, replicationFactor: 1 }), 'INVALID_PARTITIONS');
      await expectCode(h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 3 }), 'INVALID_REPLICATION_FACTOR', /live.*2/);
      await expectCode(h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 0 }), 'INVALID_REPLICATION_FACTOR');
      await expectCode(h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 1, configs: { 'retention.ms': 'soon' } }), 'INVALID_CONFIG', /retention\.ms/);
      await expectCode(h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 2, configs: { 'min.insync.replicas': '3' } }), 'INVALID_CONFIG', /replication factor 2/);
      await expectCode(h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 1, configs: { bogus: '1' } }), 'INVALID_CONFIG', /unknown/);

      expect(h.log.entries.length, 'no entry was proposed').to.equal(entries);
      expect(h.c.image()).to.equal(before);
      expect(await h.c.listTopics()).to.deep.equal(['exists']);
    });

    it('refuses a name that collides with an existing one by "." vs "_"', async () => {
      const h = setup();
      await addBroker(h, 1);
      await h.c.createTopic({ name: 'a_b', partitions: 1, replicationFactor: 1 });
      await expectCode(h.c.createTopic({ name: 'a.b', partitions: 1, replicationFactor: 1 }), 'TOPIC_ALREADY_EXISTS', /collides with existing topic "a_b"/);
    });

    it('a created topic is visible: listed, described online with leaders on the first replica, configs kept, event logged', async () => {
      const h = setup();
      for (const id of [1, 2, 3]) await addBroker(h, id);
      const created = await h.c.createTopic({ name: 'orders', partitions: 6, replicationFactor: 3, configs: { 'retention.ms': '60000' } });
      expect(created.name).to.equal('orders');
      expect(created.partitions).to.have.length(6);
      expect(created.configs).to.deep.equal({ 'retention.ms': '60000' });

      expect(await h.c.listTopics()).to.deep.equal(['orders']);
      const [described] = await h.c.describeTopics(['orders']);
      expect(described).to.deep.equal(created);
      for (const p of described.partitions) {
        expect(p.status).to.equal('online');
        expect(p.leader).to.equal(p.replicas[0]);
        expect(p.isr).to.deep.equal(p.replicas);
        expect(new Set(p.replicas).size).to.equal(3);
        expect(p).to.include({ leaderEpoch: 0, partitionEpoch: 0, why: '' });
      }
      // Leaders spread over the three brokers.
      expect(new Set(described.partitions.map((p) => p.leader)).size).to.equal(3);
      const events = await h.c.listEvents();
      expect(events.map((e) => e.kind)).to.include('topic-created');
      expect(events.find((e) => e.kind === 'topic-created')?.text).to.equal(
        'topic orders created: 6 partitions, replication factor 3 with retention.ms=60000',
      );
    });

    it('concurrent creates of one name see each other through the speculative image: exactly one wins', async () => {
      const h = setup();
      await addBroker(h, 1);
      const results = await Promise.allSettled([
        h.c.createTopic({ name: 'dup', partitions: 1, replicationFactor: 1 }),
        h.c.createTopic({ name: 'dup', partitions: 2, replicationFactor: 1 }),
      ]);
      expect(results.map((r) => r.status).sort()).to.deep.equal(['fulfilled', 'rejected']);
      const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect((rejected.reason as FlotillaError).name).to.equal('TOPIC_ALREADY_EXISTS');
      expect(recordsInLog(h).filter((r) => r.type === 'Topic')).to.have.length(1);
    });
  });

  describe('deleteTopic', () => {
    it('removes the topic; describing it is UNKNOWN_TOPIC; re-creating gives a new topic id', async () => {
      const h = setup();
      await addBroker(h, 1);
      const first = await h.c.createTopic({ name: 'gone', partitions: 2, replicationFactor: 1 });
      await h.c.deleteTopic('gone');
      expect(await h.c.listTopics()).to.deep.equal([]);
      await expectCode(h.c.describeTopics(['gone']), 'UNKNOWN_TOPIC');
      await expectCode(h.c.deleteTopic('gone'), 'UNKNOWN_TOPIC');
      const again = await h.c.createTopic({ name: 'gone', partitions: 1, replicationFactor: 1 });
      expect(again.topicId).to.not.equal(first.topicId);
      expect((await h.c.listEvents()).map((e) => e.kind)).to.include('topic-deleted');
    });
  });

  describe('broker registration and heartbeats', () => {
    it('the broker epoch is the offset of the RegisterBroker record; a new broker starts fenced', async () => {
      const h = setup();
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 5, incarnationId: 'i1', host: 'h', port: 1, rack: 'r1' });
      const entry = h.log.entries.find((e) => e.index === brokerEpoch);
      expect(decodeBatch(entry?.data as Uint8Array)[0]).to.include({ type: 'RegisterBroker', brokerId: 5 });
      expect(h.c.image().brokers.get(5)).to.include({ epoch: brokerEpoch, fenced: true, rack: 'r1' });
      const { brokers } = await h.c.describeCluster();
      expect(brokers).to.have.length(1);
      expect(brokers[0]).to.include({ id: 5, epoch: brokerEpoch, fenced: true, rack: 'r1' });
    });

    it('a heartbeat not yet caught up with the registration keeps the broker fenced', async () => {
      const h = setup();
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 1, incarnationId: 'i', host: 'h', port: 1 });
      const hb = await h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch, currentMetadataOffset: brokerEpoch - 1 });
      expect(hb.isFenced).to.equal(true);
      expect(h.c.image().brokers.get(1)?.fenced).to.equal(true);
    });

    it('a caught-up heartbeat unfences the broker with a reasoned event', async () => {
      const h = setup();
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 2, incarnationId: 'i', host: 'h', port: 1 });
      const hb = await h.c.brokerHeartbeat({ brokerId: 2, brokerEpoch, currentMetadataOffset: brokerEpoch });
      expect(hb.isFenced).to.equal(false);
      expect(hb.leaderEpoch).to.equal(h.log.term);
      expect(h.c.image().brokers.get(2)?.fenced).to.equal(false);
      const unfenced = (await h.c.listEvents()).find((e) => e.kind === 'broker-unfenced');
      expect(unfenced?.text).to.equal(`broker 2 unfenced: heartbeat caught up at offset ${brokerEpoch}`);
    });

    it('rejects heartbeats with a stale epoch (STALE_BROKER_EPOCH) or from an unknown broker (UNKNOWN_BROKER)', async () => {
      const h = setup();
      const old = await addBroker(h, 1);
      await expectCode(h.c.brokerHeartbeat({ brokerId: 9, brokerEpoch: 1, currentMetadataOffset: 0 }), 'UNKNOWN_BROKER');
      h.clock.now += SESSION_MS + 1; // the old incarnation's session ends (e.g. it crashed)
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 1, incarnationId: 'new-incarnation', host: 'h', port: 1 });
      expect(brokerEpoch).to.be.greaterThan(old);
      await expectCode(h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch: old, currentMetadataOffset: 100 }), 'STALE_BROKER_EPOCH');
      expect(h.c.image().brokers.get(1)).to.include({ incarnationId: 'new-incarnation', epoch: brokerEpoch, fenced: true });
    });

    it('a new incarnation replaces the old one: the old one’s leaderships move away in the same batch', async () => {
      const h = setup();
      await addBroker(h, 1);
      await addBroker(h, 2);
      await h.c.createTopic({ name: 't', partitions: 2, replicationFactor: 2 });
      const led = [0, 1].filter((p) => partitionOf(h, 't', p).leader === 1);
      expect(led).to.have.length(1);
      h.clock.now += SESSION_MS + 1; // 1 crashed: silent past its session, not yet fenced by a tick
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 1, incarnationId: 'restarted', host: 'h', port: 1 });
      const batch = decodeBatch(h.log.entries.find((e) => e.index === brokerEpoch)?.data as Uint8Array);
      expect(batch.map((r) => r.type)).to.deep.equal(['RegisterBroker', 'PartitionChange', 'PartitionChange']);
      for (const p of [0, 1]) {
        expect(partitionOf(h, 't', p).leader).to.equal(2);
        expect(partitionOf(h, 't', p).isr).to.deep.equal([2]);
      }
    });

    it('refuses a second incarnation while the first still heartbeats (DUPLICATE_BROKER_REGISTRATION), accepts it once the first is fenced', async () => {
      const h = setup();
      const first = await addBroker(h, 1);
      const before = h.log.entries.length;
      await expectCode(h.c.registerBroker({ brokerId: 1, incarnationId: 'impostor', host: 'h2', port: 2 }), 'DUPLICATE_BROKER_REGISTRATION', /another live incarnation/);
      expect(h.log.entries.length, 'nothing written').to.equal(before);
      expect(h.c.image().brokers.get(1)).to.include({ epoch: first, fenced: false });
      // Still live just before the session ends; replaceable once it is fenced.
      h.clock.now += SESSION_MS - 1;
      await h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch: first, currentMetadataOffset: first });
      await expectCode(h.c.registerBroker({ brokerId: 1, incarnationId: 'impostor', host: 'h2', port: 2 }), 'DUPLICATE_BROKER_REGISTRATION');
      await h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch: first, currentMetadataOffset: first, wantShutdown: true });
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 1, incarnationId: 'impostor', host: 'h2', port: 2 });
      expect(h.c.image().brokers.get(1)).to.include({ incarnationId: 'impostor', epoch: brokerEpoch, fenced: true });
    });

    it('after a controller failover, a restarted broker re-registers at once: the fresh session a new leader grants is not a sign of life', async () => {
      const h = setup();
      const first = await addBroker(h, 1);
      h.log.loseLeadership();
      h.c.onLeadershipChange(false, h.clock.now);
      h.clock.now += 100;
      h.log.becomeLeader();
      h.c.onLeadershipChange(true, h.clock.now);
      // The old process is gone (it never heartbeats to this leader): its successor is accepted.
      const { brokerEpoch } = await h.c.registerBroker({ brokerId: 1, incarnationId: 'restarted', host: 'broker1', port: 9092 });
      expect(brokerEpoch).to.be.greaterThan(first);
      expect(h.c.image().brokers.get(1)).to.include({ incarnationId: 'restarted', fenced: true });
      // Once this leader has heard from an incarnation, a third one is refused while it lives.
      await h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch, currentMetadataOffset: h.log.lastIndex() });
      await expectCode(h.c.registerBroker({ brokerId: 1, incarnationId: 'third', host: 'broker1', port: 9092 }), 'DUPLICATE_BROKER_REGISTRATION');
    });

    it('registration validates its fields (INVALID_REQUEST)', async () => {
      const h = setup();
      await expectCode(h.c.registerBroker({ brokerId: -1, incarnationId: 'i', host: 'h', port: 1 }), 'INVALID_REQUEST', /brokerId/);
      await expectCode(h.c.registerBroker({ brokerId: 1, incarnationId: 'i', host: '', port: 1 }), 'INVALID_REQUEST', /host/);
      await expectCode(h.c.registerBroker({ brokerId: 1, incarnationId: 'i', host: 'h', port: 70000 }), 'INVALID_REQUEST', /port/);
    });
  });

  describe('fencing by tick (injected clock)', () => {
    async function threeBrokersOneTopic(): Promise<Harness> {
      const h = setup();
      for (const id of [1, 2, 3]) await addBroker(h, id);
      await h.c.createTopic({ name: 'orders', partitions: 3, replicationFactor: 3 });
      return h;
    }

    it('fences a broker whose session connection closed once the grace passes with no heartbeat, and says so', async () => {
      const h = await threeBrokersOneTopic();
      const epoch2 = h.c.image().brokers.get(2)!.epoch;
      h.c.brokerSessionOpened(2, epoch2);
      h.c.brokerSessionClosed(2, epoch2, h.clock.now);
      h.clock.now += 999;
      await h.c.tick(h.clock.now);
      expect(h.c.image().brokers.get(2)?.fenced, 'within the grace').to.equal(false);
      h.clock.now += 1;
      await h.c.tick(h.clock.now);
      expect(h.c.image().brokers.get(2)?.fenced, 'after the grace').to.equal(true);
      const fenced = (await h.c.listEvents()).find((e) => e.kind === 'broker-fenced');
      expect(fenced?.text).to.equal('broker 2 fenced: its connection closed 1000 ms ago and no heartbeat followed');
      expect(h.c.image().unfencedBrokerIds()).to.deep.equal([1, 3]);
    });

    it('does not fence a broker whose session connection closed but which heartbeat afterwards (alive: the stream merely broke)', async () => {
      const h = await threeBrokersOneTopic();
      const epoch2 = h.c.image().brokers.get(2)!.epoch;
      h.c.brokerSessionOpened(2, epoch2);
      h.c.brokerSessionClosed(2, epoch2, h.clock.now);
      h.clock.now += 10;
      await heartbeat(h, 2);
      h.clock.now += 5000;
      await h.c.tick(h.clock.now);
      expect(h.c.image().unfencedBrokerIds()).to.deep.equal([1, 2, 3]);
      // A session of a superseded epoch closing means nothing.
      h.c.brokerSessionClosed(2, epoch2 - 1, h.clock.now);
      h.clock.now += 2000;
      await h.c.tick(h.clock.now);
      expect(h.c.image().unfencedBrokerIds()).to.deep.equal([1, 2, 3]);
    });

    it('does not fence a broker at exactly the session timeout, only after it', async () => {
      const h = await threeBrokersOneTopic();
      const before = h.log.entries.length;
      h.clock.now += SESSION_MS;
      await h.c.tick(h.clock.now);
      expect(h.log.entries.length).to.equal(before);
      expect(h.c.image().unfencedBrokerIds()).to.deep.equal([1, 2, 3]);
    });

    it('fences a broker whose session expired, moves its leaderships to another ISR member (leaderEpoch+1) and shrinks its ISRs, in one batch', async () => {
      const h = await threeBrokersOneTopic();
      const before = [0, 1, 2].map((p) => partitionOf(h, 'orders', p));
      const ledBy2 = before.filter((p) => p.leader === 2).map((p) => p.partition);
      expect(ledBy2).to.have.length(1);

      h.clock.now += 5000;
      await heartbeat(h, 1, 3);
      h.clock.now += 4012; // broker 2: 9012 ms of silence; 1 and 3: 4012 ms
      const entriesBefore = h.log.entries.length;
      await h.c.tick(h.clock.now);

      expect(h.log.entries.length, 'one batch').to.equal(entriesBefore + 1);
      expect(h.c.image().brokers.get(2)?.fenced).to.equal(true);
      for (const old of before) {
        const now = partitionOf(h, 'orders', old.partition);
        expect(now.isr).to.not.include(2);
        expect(now.partitionEpoch).to.equal(old.partitionEpoch + 1);
        if (old.leader === 2) {
          expect(now.leader).to.be.oneOf([1, 3]);
          expect(old.isr).to.include(now.leader);
          expect(now.leaderEpoch).to.equal(old.leaderEpoch + 1);
        } else {
          expect(now.leader).to.equal(old.leader);
          expect(now.leaderEpoch).to.equal(old.leaderEpoch);
        }
      }
      const events = await h.c.listEvents();
      const fenced = events.find((e) => e.kind === 'broker-fenced');
      expect(fenced?.text).to.equal('broker 2 fenced: no heartbeat for 9012 ms');
      const elected = events.filter((e) => e.kind === 'leader-elected');
      expect(elected).to.have.length(1);
      expect(elected[0].text).to.match(/^orders-\d: leader 2 -> [13] .*broker 2 fenced: no heartbeat for 9012 ms$/);
      const [described] = await h.c.describeTopics(['orders']);
      for (const p of described.partitions) {
        expect(p.status).to.equal('under-replicated');
        expect(p.why).to.equal('replica 2 out of ISR: broker 2 fenced');
      }
    });

    it('a partition whose only ISR member is fenced goes offline (leader -1, ISR kept) and comes back when it unfences', async () => {
      const h = setup();
      await addBroker(h, 1);
      await addBroker(h, 2);
      await h.c.createTopic({ name: 'solo', partitions: 1, replicationFactor: 1 });
      const owner = partitionOf(h, 'solo', 0).leader;
      const other = owner === 1 ? 2 : 1;
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, other);
      await h.c.tick(h.clock.now);
      const offline = partitionOf(h, 'solo', 0);
      expect(offline).to.deep.include({ leader: -1, isr: [owner], leaderEpoch: 1 });
      const [d] = await h.c.describeTopics(['solo']);
      expect(d.partitions[0].status).to.equal('offline');
      expect(d.partitions[0].why).to.contain(`broker ${owner} fenced`);

      const hb = await h.c.brokerHeartbeat({ brokerId: owner, brokerEpoch: h.epochs.get(owner) as number, currentMetadataOffset: h.log.lastIndex() });
      expect(hb.isFenced).to.equal(false);
      expect(partitionOf(h, 'solo', 0)).to.deep.include({ leader: owner, isr: [owner], leaderEpoch: 2 });
    });

    it('unclean.leader.election.enable lets a live out-of-ISR replica lead, and the event says "unclean"', async () => {
      const h = setup();
      await addBroker(h, 1);
      await addBroker(h, 2);
      await h.c.createTopic({ name: 'u', partitions: 1, replicationFactor: 2, configs: { 'unclean.leader.election.enable': 'true' } });
      const p = partitionOf(h, 'u', 0);
      const follower = p.replicas.find((r) => r !== p.leader) as number;
      await h.c.alterPartition({
        brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 'u', partition: 0,
        leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, newIsr: [p.leader], reason: 'follower fell behind',
      });
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, follower);
      await h.c.tick(h.clock.now);
      expect(partitionOf(h, 'u', 0)).to.deep.include({ leader: follower, isr: [follower] });
      const elected = (await h.c.listEvents()).find((e) => e.kind === 'leader-elected');
      expect(elected?.text).to.contain('unclean');
    });

    it('a controlled shutdown (wantShutdown) fences the broker and moves its leaderships away', async () => {
      const h = setup();
      await addBroker(h, 1);
      await addBroker(h, 2);
      await h.c.createTopic({ name: 't', partitions: 2, replicationFactor: 2 });
      const hb = await h.c.brokerHeartbeat({ brokerId: 1, brokerEpoch: h.epochs.get(1) as number, currentMetadataOffset: 0, wantShutdown: true });
      expect(hb.isFenced).to.equal(true);
      for (const p of [0, 1]) expect(partitionOf(h, 't', p).leader).to.equal(2);
      expect((await h.c.listEvents()).some((e) => e.text === 'broker 1 fenced: controlled shutdown requested')).to.equal(true);
    });

    it('moves leadership back to the preferred replica once it is unfenced and back in the ISR', async () => {
      const h = await threeBrokersOneTopic();
      const preferredBy2 = [0, 1, 2].find((p) => partitionOf(h, 'orders', p).replicas[0] === 2) as number;
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, 1, 3);
      await h.c.tick(h.clock.now);
      const moved = partitionOf(h, 'orders', preferredBy2);
      expect(moved.leader).to.not.equal(2);

      await heartbeat(h, 2); // caught up: unfenced
      expect(h.c.image().brokers.get(2)?.fenced).to.equal(false);
      // The leader re-admits 2 into the ISR once it has caught up (KIP-497).
      await h.c.alterPartition({
        brokerId: moved.leader, brokerEpoch: h.epochs.get(moved.leader) as number, topic: 'orders', partition: preferredBy2,
        leaderEpoch: moved.leaderEpoch, partitionEpoch: moved.partitionEpoch, newIsr: [...moved.isr, 2],
      });
      await h.c.tick(h.clock.now);
      const back = partitionOf(h, 'orders', preferredBy2);
      expect(back.leader).to.equal(2);
      expect(back.leaderEpoch).to.equal(moved.leaderEpoch + 1);
    });

    it('preferred-leader election looks only when brokers or a partition off its preferred leader changed, or after the check interval', async () => {
      const h = setup({ leaderImbalanceCheckIntervalMs: 3000 });
      for (const id of [1, 2, 3]) await addBroker(h, id);
      const checks = () => h.c.stats().leaderBalanceChecks;
      // Balanced (every leader is its preferred replica): ticks never look, however much is created.
      for (let i = 0; i < 20; i++) await h.c.createTopic({ name: `t${i}`, partitions: 3, replicationFactor: 3 });
      for (let i = 0; i < 5; i++) {
        h.clock.now += 1000;
        await heartbeat(h, 1, 2, 3);
        await h.c.tick(h.clock.now);
      }
      expect(checks()).to.equal(0);

      // Broker 2 is fenced and its leaderships move: the brokers changed, so the next tick looks once...
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, 1, 3);
      await h.c.tick(h.clock.now);
      expect(h.c.image().brokers.get(2)?.fenced).to.equal(true);
      const offPreferred = h.c.image().partitionsOffPreferredLeader.size;
      expect(offPreferred).to.equal(20);
      await h.c.tick(h.clock.now);
      expect(checks()).to.equal(1);
      // ...and not again while nothing changes, until the backstop interval has passed.
      const entries = h.log.entries.length;
      for (let i = 0; i < 8; i++) {
        h.clock.now += 250;
        await heartbeat(h, 1, 3);
        await h.c.tick(h.clock.now);
      }
      expect(checks()).to.equal(1);
      h.clock.now += 1000;
      await h.c.tick(h.clock.now);
      expect(checks()).to.equal(2);
      expect(h.log.entries.length, 'nothing could move: broker 2 is fenced').to.equal(entries);

      // Broker 2 returns (unfenced): a look, but it is in no ISR yet, so nothing moves.
      await heartbeat(h, 2);
      await h.c.tick(h.clock.now);
      expect(checks()).to.equal(3);
      expect(h.c.image().partitionsOffPreferredLeader.size).to.equal(offPreferred);

      // One partition takes it back into its ISR: that change alone is enough to look again.
      const [key] = [...h.c.image().partitionsOffPreferredLeader.keys()].sort();
      const { topicId, state } = h.c.image().partitionsOffPreferredLeader.get(key) as { topicId: string; state: PartitionState };
      const topic = h.c.image().topicsById.get(topicId)?.name as string;
      await h.c.alterPartition({
        brokerId: state.leader, brokerEpoch: h.epochs.get(state.leader) as number, topic, partition: state.partition,
        leaderEpoch: state.leaderEpoch, partitionEpoch: state.partitionEpoch, newIsr: [...state.isr, 2],
      });
      await h.c.tick(h.clock.now);
      expect(checks()).to.equal(4);
      expect(partitionOf(h, topic, state.partition).leader).to.equal(2);
      expect(h.c.image().partitionsOffPreferredLeader.size).to.equal(offPreferred - 1);
    });

    it('a departing broker of many partitions is handled in bounded batches: fenced at once, its partitions moved a batch per tick, none left naming it', async () => {
      const h = setup({ departureChangesPerBatch: 5 });
      for (const id of [1, 2, 3]) await addBroker(h, id);
      await h.c.createTopic({ name: 'many', partitions: 24, replicationFactor: 3 });
      const epochs = new Map([1, 3].map((id) => [id, h.c.image().brokers.get(id)!.epoch]));
      const naming2 = (): number => [...h.c.image().topics.get('many')!.partitions.values()].filter((p) => p.leader === 2 || p.isr.includes(2)).length;
      expect(naming2()).to.equal(24);
      const batchesBefore = h.log.entries.length;
      // Broker 2 falls silent; 1 and 3 keep heartbeating.
      for (let step = 0; step < 30 && naming2() > 0; step++) {
        h.clock.now += SESSION_MS / 4;
        for (const id of [1, 3]) await h.c.brokerHeartbeat({ brokerId: id, brokerEpoch: epochs.get(id)!, currentMetadataOffset: h.log.lastIndex() });
        await h.c.tick(h.clock.now);
      }
      expect(h.c.image().brokers.get(2)?.fenced).to.equal(true);
      expect(naming2(), 'partitions still naming the fenced broker').to.equal(0);
      const changesPerBatch = h.log.entries
        .slice(batchesBefore)
        .map((e) => (e.data.length === 0 ? [] : decodeBatch(e.data)))
        .map((records) => records.filter((r) => r.type === 'PartitionChange').length);
      expect(Math.max(...changesPerBatch)).to.equal(5);
      expect(changesPerBatch.reduce((a, b) => a + b, 0)).to.equal(24);
    });

    it('a new incarnation of a broker that still holds more than a batch of partitions is asked to retry while the old one is fenced and its partitions moved', async () => {
      const h = setup({ departureChangesPerBatch: 5 });
      for (const id of [1, 2, 3]) await addBroker(h, id);
      await h.c.createTopic({ name: 'many', partitions: 24, replicationFactor: 3 });
      const epochs = new Map([1, 3].map((id) => [id, h.c.image().brokers.get(id)!.epoch]));
      // A controller failover: this leader never heard from broker 2's running process.
      h.log.loseLeadership();
      h.c.onLeadershipChange(false, h.clock.now);
      h.log.becomeLeader();
      h.c.onLeadershipChange(true, h.clock.now);
      const register = () => h.c.registerBroker({ brokerId: 2, incarnationId: 'restarted', host: 'broker2', port: 9092 });
      await expectCode(register(), 'DUPLICATE_BROKER_REGISTRATION', /being moved: retry/);
      let registered: number | undefined;
      for (let step = 0; step < 30 && registered === undefined; step++) {
        h.clock.now += 250;
        for (const id of [1, 3]) await h.c.brokerHeartbeat({ brokerId: id, brokerEpoch: epochs.get(id)!, currentMetadataOffset: h.log.lastIndex() });
        await h.c.tick(h.clock.now);
        registered = await register().then((r) => r.brokerEpoch, () => undefined);
      }
      expect(registered, 'the new incarnation got in').to.not.equal(undefined);
      const b2 = h.c.image().brokers.get(2)!;
      expect(b2).to.include({ incarnationId: 'restarted', fenced: true });
      // The old incarnation's places are all gone, and no batch carried more than 5 changes.
      const parts = [...h.c.image().topics.get('many')!.partitions.values()];
      expect(parts.filter((p) => p.leader === 2 || p.isr.includes(2)).length).to.equal(0);
      const perBatch = h.log.entries.map((e) => (e.data.length === 0 ? 0 : decodeBatch(e.data).filter((r) => r.type === 'PartitionChange').length));
      expect(Math.max(...perBatch.slice(-20))).to.be.at.most(5);
    });

    it('a new leader gives every broker a fresh session: no one is fenced for the old leader’s silence', async () => {
      const h = await threeBrokersOneTopic();
      h.log.loseLeadership();
      h.c.onLeadershipChange(false, h.clock.now);
      h.clock.now += 60_000;
      h.log.becomeLeader();
      h.c.onLeadershipChange(true, h.clock.now);
      h.clock.now += SESSION_MS - 1;
      await h.c.tick(h.clock.now);
      expect(h.c.image().unfencedBrokerIds()).to.deep.equal([1, 2, 3]);
    });
  });

  describe('alterPartition', () => {
    async function oneTopic(): Promise<{ h: Harness; p: PartitionState }> {
      const h = setup();
      for (const id of [1, 2, 3]) await addBroker(h, id);
      await h.c.createTopic({ name: 't', partitions: 1, replicationFactor: 3 });
      return { h, p: partitionOf(h, 't', 0) };
    }

    it('the leader shrinks the ISR: partitionEpoch+1, leaderEpoch unchanged, the committed state is returned', async () => {
      const { h, p } = await oneTopic();
      const follower = p.replicas.find((r) => r !== p.leader) as number;
      const newIsr = p.isr.filter((r) => r !== follower);
      const result = await h.c.alterPartition({
        brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 't', partition: 0,
        leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, newIsr,
      });
      expect(result).to.deep.include({ isr: newIsr, leader: p.leader, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch + 1 });
      expect(partitionOf(h, 't', 0)).to.deep.equal(result);
    });

    it('rejects a stale partition epoch (STALE_PARTITION_EPOCH) and changes nothing', async () => {
      const { h, p } = await oneTopic();
      const base = { brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 't', partition: 0, leaderEpoch: p.leaderEpoch };
      await h.c.alterPartition({ ...base, partitionEpoch: p.partitionEpoch, newIsr: [p.leader] });
      const entries = h.log.entries.length;
      await expectCode(h.c.alterPartition({ ...base, partitionEpoch: p.partitionEpoch, newIsr: [...p.isr] }), 'STALE_PARTITION_EPOCH', /partition epoch 0 .* 1/);
      expect(h.log.entries.length).to.equal(entries);
      expect(partitionOf(h, 't', 0).isr).to.deep.equal([p.leader]);
    });

    it('only the current leader may; an invalid ISR is INVALID_ISR; unknown names are UNKNOWN_*', async () => {
      const { h, p } = await oneTopic();
      const follower = p.replicas.find((r) => r !== p.leader) as number;
      const ok = { brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 't', partition: 0, leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch };
      await expectCode(h.c.alterPartition({ ...ok, brokerId: follower, brokerEpoch: h.epochs.get(follower) as number, newIsr: [follower] }), 'NOT_LEADER_FOR_PARTITION');
      await expectCode(h.c.alterPartition({ ...ok, leaderEpoch: p.leaderEpoch + 5, newIsr: [p.leader] }), 'NOT_LEADER_FOR_PARTITION', /leader epoch/);
      await expectCode(h.c.alterPartition({ ...ok, newIsr: [] }), 'INVALID_ISR', /empty/);
      await expectCode(h.c.alterPartition({ ...ok, newIsr: [p.leader, 9] }), 'INVALID_ISR', /not a replica/);
      await expectCode(h.c.alterPartition({ ...ok, newIsr: [follower] }), 'INVALID_ISR', /does not contain its leader/);
      await expectCode(h.c.alterPartition({ ...ok, newIsr: [p.leader, p.leader] }), 'INVALID_ISR', /twice/);
      await expectCode(h.c.alterPartition({ ...ok, topic: 'nope', newIsr: [p.leader] }), 'UNKNOWN_TOPIC');
      await expectCode(h.c.alterPartition({ ...ok, partition: 4, newIsr: [p.leader] }), 'UNKNOWN_PARTITION');
      await expectCode(h.c.alterPartition({ ...ok, brokerEpoch: 1, newIsr: [p.leader] }), 'STALE_BROKER_EPOCH');
    });

    it('a fenced broker cannot join the ISR', async () => {
      const { h, p } = await oneTopic();
      const [a, b] = p.replicas.filter((r) => r !== p.leader);
      const shrunk = await h.c.alterPartition({
        brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 't', partition: 0,
        leaderEpoch: p.leaderEpoch, partitionEpoch: p.partitionEpoch, newIsr: [p.leader, b],
      });
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, p.leader, b);
      await h.c.tick(h.clock.now);
      expect(h.c.image().brokers.get(a)?.fenced).to.equal(true);
      const now = partitionOf(h, 't', 0);
      expect(now.partitionEpoch).to.equal(shrunk.partitionEpoch);
      await expectCode(
        h.c.alterPartition({
          brokerId: p.leader, brokerEpoch: h.epochs.get(p.leader) as number, topic: 't', partition: 0,
          leaderEpoch: now.leaderEpoch, partitionEpoch: now.partitionEpoch, newIsr: [p.leader, b, a],
        }),
        'INVALID_ISR',
        /fenced/,
      );
    });
  });

  describe('producer ids', () => {
    it('blocks handed out concurrently to several brokers are disjoint and contiguous', async () => {
      const h = setup({ producerIdBlockSize: 100 });
      await addBroker(h, 1);
      await addBroker(h, 2);
      const blocks = await Promise.all(
        Array.from({ length: 20 }, (_, i) => h.c.allocateProducerIds({ brokerId: 1 + (i % 2), brokerEpoch: h.epochs.get(1 + (i % 2)) as number })),
      );
      const sorted = [...blocks].sort((a, b) => a.firstProducerId - b.firstProducerId);
      sorted.forEach((b, i) => expect(b).to.deep.equal({ firstProducerId: i * 100, count: 100 }));
      expect(h.c.image().nextProducerId).to.equal(2000);
      await expectCode(h.c.allocateProducerIds({ brokerId: 1, brokerEpoch: 12345 }), 'STALE_BROKER_EPOCH');
    });
  });

  describe('snapshots and replicas', () => {
    async function busy(): Promise<Harness> {
      const h = setup();
      for (const id of [1, 2, 3]) await addBroker(h, id, `rack${id}`);
      await h.c.createTopic({ name: 'a', partitions: 4, replicationFactor: 3, configs: { 'cleanup.policy': 'compact' } });
      await h.c.createTopic({ name: 'b', partitions: 2, replicationFactor: 2 });
      await h.c.allocateProducerIds({ brokerId: 1, brokerEpoch: h.epochs.get(1) as number });
      h.clock.now += SESSION_MS + 1;
      await heartbeat(h, 1, 2);
      await h.c.tick(h.clock.now);
      await h.c.deleteTopic('b');
      return h;
    }

    it('takeSnapshot -> restoreSnapshot on a fresh controller gives an equal image, which keeps applying', async () => {
      const h = await busy();
      const snapshot = h.c.takeSnapshot();
      const fresh = new QuorumController({ log: new FakeMetadataLog(), nowMs: () => h.clock.now, logger: silentLogger() });
      fresh.restoreSnapshot(h.c.image().offset, snapshot);
      expect(fresh.image()).to.deep.equal(h.c.image());

      await h.c.createTopic({ name: 'after', partitions: 1, replicationFactor: 1 });
      const last = h.log.entries[h.log.entries.length - 1];
      fresh.apply(last.index, last.term, last.data);
      expect(fresh.image()).to.deep.equal(h.c.image());
    });

    it('a follower replaying the committed log holds the same image as the leader', async () => {
      const h = await busy();
      const follower = new QuorumController({ log: new FakeMetadataLog(), nowMs: () => 0, logger: silentLogger() });
      h.log.follow(follower);
      expect(follower.image()).to.deep.equal(h.c.image());
    });

    it('records are only generated by the leader: every call on a follower rejects NOT_CONTROLLER', async () => {
      const h = await busy();
      const follower = new QuorumController({ log: new FakeMetadataLog(), nowMs: () => 0, logger: silentLogger() });
      await expectCode(follower.createTopic({ name: 'x', partitions: 1, replicationFactor: 1 }), 'NOT_CONTROLLER');
      await expectCode(follower.listTopics(), 'NOT_CONTROLLER');
      await expectCode(follower.describeCluster(), 'NOT_CONTROLLER');
      await expectCode(follower.brokerHeartbeat({ brokerId: 1, brokerEpoch: 1, currentMetadataOffset: 0 }), 'NOT_CONTROLLER');
      await follower.tick(1); // a no-op, not an error
    });
  });

  describe('speculative state and limits', () => {
    it('requests in flight see each other; a leadership loss drops them and the next leader starts from the committed image', async () => {
      const h = setup();
      await addBroker(h, 1);
      h.log.autoCommit = false;
      const first = h.c.createTopic({ name: 'pending', partitions: 1, replicationFactor: 1 });
      const firstRejected = rejection(first);
      await new Promise((r) => setImmediate(r));
      expect(h.log.heldCount()).to.equal(1);
      // The second create sees the first through the speculative image, but its refusal
      // rests on an uncommitted change: it is not answered before that change settles...
      let secondSettled = false;
      const second = rejection(h.c.createTopic({ name: 'pending', partitions: 1, replicationFactor: 1 })).finally(() => (secondSettled = true));
      await new Promise((r) => setImmediate(r));
      expect(secondSettled, 'no answer while the first create is uncommitted').to.equal(false);

      h.log.loseLeadership();
      h.c.onLeadershipChange(false, h.clock.now);
      expect((await firstRejected).name).to.equal('NOT_CONTROLLER');
      // ...and since it was dropped, the second is told to retry, never TOPIC_ALREADY_EXISTS.
      const err2 = await second;
      expect(err2.name).to.equal('PROPOSAL_DROPPED');
      expect(err2.retriable).to.equal(true);
      h.log.autoCommit = true;
      h.log.becomeLeader();
      h.c.onLeadershipChange(true, h.clock.now);
      const created = await h.c.createTopic({ name: 'pending', partitions: 1, replicationFactor: 1 });
      expect(created.name).to.equal('pending');
    });

    it('a refusal read from an uncommitted create is answered only once that create commits (then TOPIC_ALREADY_EXISTS)', async () => {
      const h = setup();
      await addBroker(h, 1);
      h.log.autoCommit = false;
      const first = h.c.createTopic({ name: 'dup', partitions: 1, replicationFactor: 1 });
      await new Promise((r) => setImmediate(r));
      let settled = false;
      const second = rejection(h.c.createTopic({ name: 'dup', partitions: 1, replicationFactor: 1 })).finally(() => (settled = true));
      await new Promise((r) => setImmediate(r));
      expect(settled).to.equal(false);
      h.log.commitAll();
      expect((await first).name).to.equal('dup');
      expect((await second).name).to.equal('TOPIC_ALREADY_EXISTS');
    });

    it('bounds proposals in flight: beyond the limit a request fails PROPOSAL_DROPPED (retriable)', async () => {
      const h = setup({ maxPendingProposals: 2 });
      await addBroker(h, 1);
      h.log.autoCommit = false;
      const a = h.c.createTopic({ name: 'a', partitions: 1, replicationFactor: 1 });
      const b = h.c.createTopic({ name: 'b', partitions: 1, replicationFactor: 1 });
      const err = await expectCode(h.c.createTopic({ name: 'c', partitions: 1, replicationFactor: 1 }), 'PROPOSAL_DROPPED');
      expect(err.retriable).to.equal(true);
      h.log.commitAll();
      await Promise.all([a, b]);
      expect(await h.c.listTopics()).to.deep.equal(['a', 'b']);
    });

    it('a dropped proposal leaves the speculative image: the same request succeeds on retry', async () => {
      const h = setup();
      await addBroker(h, 1);
      h.log.autoCommit = false;
      const p = rejection(h.c.createTopic({ name: 'retry', partitions: 1, replicationFactor: 1 }));
      await new Promise((r) => setImmediate(r));
      h.log.failAll(new FlotillaError('PROPOSAL_DROPPED', 'fake: dropped'));
      expect((await p).name).to.equal('PROPOSAL_DROPPED');
      h.log.autoCommit = true;
      expect((await h.c.createTopic({ name: 'retry', partitions: 1, replicationFactor: 1 })).name).to.equal('retry');
    });

    it('under many concurrent requests every generated record applies (none skipped) and a follower ends with the leader’s image', async () => {
      const warnings: string[] = [];
      const clock = { now: 5_000 };
      const log = new FakeMetadataLog();
      const logger = { debug() {}, info() {}, error() {}, warn: (_o: object, msg?: string) => void warnings.push(String(msg)) };
      const c = new QuorumController({ log, nowMs: () => clock.now, logger, random: seeded(3) });
      const follower = new QuorumController({ log: new FakeMetadataLog(), nowMs: () => 0, logger: silentLogger() });
      log.attach(c);
      log.follow(follower);
      log.becomeLeader();
      c.onLeadershipChange(true, clock.now);
      const epochs = await Promise.all([1, 2, 3, 4].map((id) => c.registerBroker({ brokerId: id, incarnationId: `i${id}`, host: 'h', port: 1 })));
      await Promise.all(epochs.map((e, i) => c.brokerHeartbeat({ brokerId: i + 1, brokerEpoch: e.brokerEpoch, currentMetadataOffset: e.brokerEpoch })));
      const work: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) {
        work.push(c.createTopic({ name: `t${i}`, partitions: 3, replicationFactor: 2 }));
        work.push(c.allocateProducerIds({ brokerId: 1 + (i % 4), brokerEpoch: epochs[i % 4].brokerEpoch }));
        if (i % 10 === 9) work.push(c.deleteTopic(`t${i - 5}`));
        work.push(c.brokerHeartbeat({ brokerId: 1 + (i % 4), brokerEpoch: epochs[i % 4].brokerEpoch, currentMetadataOffset: 0 }));
      }
      await Promise.all(work);
      expect(warnings).to.deep.equal([]);
      expect((await c.listTopics()).length).to.equal(36);
      expect(c.image().nextProducerId).to.equal(40 * 1000);
      expect(follower.image()).to.deep.equal(c.image());
    });

    it('a committed image taken from the leader’s speculation equals a fresh replay of the log, across dropped, reordered and foreign entries', async () => {
      const clock = { now: 7_000 };
      const log = new FakeMetadataLog();
      const c = new QuorumController({ log, nowMs: () => clock.now, logger: silentLogger(), random: seeded(11) });
      // A controller that only ever replays (a follower), and a check after EVERY applied
      // entry that the leader's committed image is the one replay gives.
      const replica = new QuorumController({ log: new FakeMetadataLog(), nowMs: () => 0, logger: silentLogger() });
      let checked = 0;
      const checker = {
        apply(index: number): void {
          expect(c.image().offset, `offset at ${index}`).to.equal(index);
          expect(c.image(), `image at ${index}`).to.deep.equal(replica.image());
          checked++;
        },
        takeSnapshot: () => new Uint8Array(0),
        restoreSnapshot(): void {},
      };
      log.attach(c);
      log.follow(replica);
      log.follow(checker);
      log.becomeLeader();
      c.onLeadershipChange(true, clock.now);
      const epochs = new Map<number, number>();
      for (const id of [1, 2, 3]) {
        const { brokerEpoch } = await c.registerBroker({ brokerId: id, incarnationId: `i${id}`, host: 'h', port: 1 });
        await c.brokerHeartbeat({ brokerId: id, brokerEpoch, currentMetadataOffset: brokerEpoch });
        epochs.set(id, brokerEpoch);
      }
      const random = seeded(5);
      const pick = (n: number) => Math.floor(random() * n);
      const tick = () => new Promise((r) => setImmediate(r));
      log.autoCommit = false;
      const settled: Promise<unknown>[] = [];
      for (let round = 0; round < 60; round++) {
        for (let i = 0, n = 1 + pick(6); i < n; i++) {
          const op = pick(5);
          const name = `t${pick(12)}`;
          const call =
            op === 0 || op === 1
              ? c.createTopic({ name, partitions: 1 + pick(3), replicationFactor: 1 + pick(3) })
              : op === 2
                ? c.deleteTopic(name)
                : op === 3
                  ? c.allocateProducerIds({ brokerId: 1, brokerEpoch: epochs.get(1) as number })
                  : c.registerBroker({ brokerId: 4, incarnationId: `i4-${round}-${i}`, host: 'h', port: 1 });
          settled.push(call.catch(() => undefined));
        }
        await tick();
        switch (pick(6)) {
          case 0: // the oldest proposal is dropped; sometimes the controller hears of it first
            log.dropOldest(new FlotillaError('PROPOSAL_DROPPED', 'fake: dropped'));
            if (pick(2) === 0) await tick();
            break;
          case 1: // committed out of proposal order
            log.commitHeldAt(pick(Math.max(1, log.heldCount())));
            break;
          case 2: // an entry without records shifts every speculated offset
            log.commitForeign(new Uint8Array(0));
            break;
          case 3: // another leader's batch lands first
            log.commitForeign(log.entries.find((e) => e.data.length > 0)?.data ?? new Uint8Array(0));
            break;
          default:
            break;
        }
        if (pick(3) > 0) log.commitAll();
        clock.now += 10;
        await tick();
      }
      log.commitAll();
      await Promise.all(settled);
      expect(replica.image()).to.deep.equal(c.image());
      expect(checked).to.equal(log.entries.length);
      const stats = c.stats();
      // Both paths ran: the check above covered images taken from speculation, not only replays.
      expect(stats.committedFromSpeculation, 'taken from speculation').to.be.greaterThan(20);
      expect(stats.committedByReplay, 'replayed').to.be.greaterThan(5);
    });

    it('listEvents pages by offset and bounds its answer', async () => {
      const h = setup();
      for (const id of [1, 2, 3]) await addBroker(h, id);
      const all = await h.c.listEvents({ max: 1000 });
      expect(all.length).to.equal(6); // 3 registered + 3 unfenced
      const offsets = all.map((e) => e.offset);
      expect(offsets).to.deep.equal([...offsets].sort((a, b) => a - b));
      const later = await h.c.listEvents({ fromOffset: all[3].offset });
      expect(later).to.deep.equal(all.slice(3));
      expect(await h.c.listEvents({ max: 2 })).to.deep.equal(all.slice(0, 2));
    });

    it('image() is the committed image and is never mutated by later changes', async () => {
      const h = setup();
      await addBroker(h, 1);
      const snapshot: MetadataImage = h.c.image();
      await h.c.createTopic({ name: 'x', partitions: 1, replicationFactor: 1 });
      expect(snapshot.topics.size).to.equal(0);
      expect(h.c.image().topics.size).to.equal(1);
    });
  });
});
