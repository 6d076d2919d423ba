import { expect } from 'chai';
import { Flotilla, FlotillaError, Producer, ProducerConfig, isFlotillaError } from '../../client';
import { resolveProducerConfig } from '../../client/producer-config';
import { FakeCluster } from './fake-broker';

// The producer's delivery rules against in-memory fake brokers (test/client/fake-broker.ts):
// batching, acks levels, retries of retriable errors only, leader moves, and the idempotent
// producer's no-duplicate / in-order / <= 5 in flight guarantees.

const FAST_RETRY = { backoffInitialMs: 5, backoffMaxMs: 20 };

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    expect(isFlotillaError(e), `expected a FlotillaError, got ${e}`).to.equal(true);
    return e as FlotillaError;
  }
  throw new Error('expected a rejection');
}

/** Waits (bounded) until `cond` holds. */
async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const values = (n: number, prefix = 'm'): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('client: producer', function () {
  this.timeout(30_000);
  let cluster: FakeCluster;
  const producers: Producer[] = [];
  async function producer(config: ProducerConfig, brokers = cluster.addresses): Promise<Producer> {
    const p = new Flotilla({ brokers }).producer({ retry: FAST_RETRY, ...config });
    producers.push(p);
    await p.connect();
    return p;
  }
  beforeEach(async () => {
    cluster = await FakeCluster.start({ brokers: 2, topics: { t: 1, wide: 4 } });
  });
  afterEach(async () => {
    cluster.release();
    await Promise.all(producers.splice(0).map((p) => p.disconnect().catch(() => undefined)));
    cluster.stop();
  });

  describe('batching', () => {
    it('many sends within lingerMs go out in few requests; each record is acknowledged at its log offset, in order', async () => {
      const p = await producer({ lingerMs: 100 });
      const vs = values(200);
      const results = await Promise.all(vs.map((v) => p.send({ topic: 't', messages: [{ value: v }] })));
      expect(results.map((r) => r[0]!.offset)).to.deep.equal(vs.map((_, i) => i));
      expect(cluster.values('t', 0)).to.deep.equal(vs);
      expect(cluster.produceLog.length, 'requests for 200 sends').to.be.at.most(3);
    });

    it('a lone record waits for lingerMs (not sent early); flush() sends it at once', async () => {
      const p = await producer({ lingerMs: 60_000 });
      const sent = p.send({ topic: 't', messages: [{ value: 'x' }] });
      await new Promise((r) => setTimeout(r, 200));
      expect(cluster.produceLog.length, 'nothing sent before linger').to.equal(0);
      await p.flush();
      expect((await sent)[0]!.offset).to.equal(0);
      expect(cluster.produceLog.length).to.equal(1);
    });

    it('a full batch (batchSizeBytes) is sent without waiting for lingerMs', async () => {
      const p = await producer({ lingerMs: 60_000, batchSizeBytes: 1_024 });
      const value = Buffer.alloc(300, 1);
      const sends = Array.from({ length: 10 }, () => p.send({ topic: 't', messages: [{ value }] }));
      // The full batches resolve although linger is a minute; the last, partial one is flushed.
      await Promise.all(sends.slice(0, 6));
      expect(cluster.produceLog.length).to.be.at.least(2);
      for (const e of cluster.produceLog) expect(e.partitions[0]!.recordCount).to.be.at.most(3);
      await p.flush();
      expect(cluster.values('t', 0)).to.have.length(10);
    });

    it('batches ready together go out as one request per broker, one batch per partition', async () => {
      const p = await producer({ lingerMs: 60_000 });
      const sent = p.send({ topic: 'wide', messages: [0, 1, 2, 3].map((partition) => ({ value: `p${partition}`, partition })) });
      await p.flush(); // every batch ready at the same drain
      const md = await sent;
      expect(md.map((m) => [m.partition, m.offset])).to.deep.equal([
        [0, 0],
        [1, 0],
        [2, 0],
        [3, 0],
      ]);
      expect(cluster.produceLog.map((e) => e.brokerId).sort()).to.deep.equal([1, 2]);
      for (const e of cluster.produceLog) expect(e.partitions).to.have.length(2);
    });
  });

  describe('acks and retries', () => {
    it('acks=0 (atMostOnce) never retries: a refused request is not resent and the record gets offset -1', async () => {
      const p = await producer({ qos: 'atMostOnce', lingerMs: 0 });
      cluster.inject({ method: 'Produce', kind: 'refuse', error: 'NOT_ENOUGH_REPLICAS' });
      const md = await p.send({ topic: 't', messages: [{ value: 'lost' }] });
      expect(md[0]!.offset).to.equal(-1);
      await new Promise((r) => setTimeout(r, 200));
      expect(cluster.produceLog.length, 'sent once, never retried').to.equal(1);
      expect(cluster.produceLog[0]!.acks).to.equal(0);
      expect(cluster.values('t', 0)).to.deep.equal([]);
    });

    it('at-least-once retries a retriable error (NOT_ENOUGH_REPLICAS) until it is appended', async () => {
      const p = await producer({ qos: 'atLeastOnce', lingerMs: 0 });
      cluster.inject({ method: 'Produce', kind: 'refuse', error: 'NOT_ENOUGH_REPLICAS', times: 2 });
      const md = await p.send({ topic: 't', messages: [{ value: 'a' }] });
      expect(md[0]!.offset).to.equal(0);
      expect(cluster.produceLog.length).to.equal(3);
      expect(cluster.values('t', 0)).to.deep.equal(['a']);
    });

    it('at-least-once follows a moved leader: NOT_LEADER_FOR_PARTITION, then the new leader appends', async () => {
      const p = await producer({ qos: 'atLeastOnce', lingerMs: 0 });
      expect(cluster.partition('t', 0).leader).to.equal(1);
      cluster.moveLeader('t', 0, 2);
      const md = await p.send({ topic: 't', messages: [{ value: 'moved' }] });
      expect(md[0]!.offset).to.equal(0);
      expect(cluster.produceLog.map((e) => e.brokerId)).to.deep.equal([1, 2]);
      expect(cluster.values('t', 0)).to.deep.equal(['moved']);
    });

    it('at-least-once finds the new leader through metadata when the old leader is unreachable', async () => {
      const p = await producer({ qos: 'atLeastOnce', lingerMs: 0, requestTimeoutMs: 1_000 });
      await cluster.stopBroker(1);
      cluster.moveLeader('t', 0, 2);
      const md = await p.send({ topic: 't', messages: [{ value: 'after-failover' }] });
      expect(md[0]!.offset).to.equal(0);
      expect(cluster.values('t', 0)).to.deep.equal(['after-failover']);
    });

    it('at-least-once: a dropped answer is retried and duplicates the record (why idempotence exists)', async () => {
      const p = await producer({ qos: 'atLeastOnce', lingerMs: 0, requestTimeoutMs: 300 });
      cluster.inject({ method: 'Produce', kind: 'drop' });
      const md = await p.send({ topic: 't', messages: [{ value: 'twice' }] });
      expect(md[0]!.offset).to.equal(1);
      expect(cluster.values('t', 0)).to.deep.equal(['twice', 'twice']);
    });

    it('non-retriable errors surface typed at once and are not retried (RECORD_TOO_LARGE)', async () => {
      const p = await producer({ lingerMs: 0 });
      cluster.inject({ method: 'Produce', kind: 'refuse', error: 'RECORD_TOO_LARGE' });
      const err = await rejection(p.send({ topic: 't', messages: [{ value: 'a' }, { value: 'b' }] }));
      expect(err.name).to.equal('RECORD_TOO_LARGE');
      expect(err.details).to.include({ failedRecords: 2, records: 2 });
      expect(cluster.produceLog.length).to.equal(1);
    });

    it('an unknown topic is UNKNOWN_TOPIC; a partition past the count is UNKNOWN_PARTITION; nothing is sent', async () => {
      const p = await producer({ lingerMs: 0, maxBlockMs: 300 });
      expect((await rejection(p.send({ topic: 'nope', messages: [{ value: 'a' }] }))).name).to.equal('UNKNOWN_TOPIC');
      expect((await rejection(p.send({ topic: 't', messages: [{ value: 'a', partition: 1 }] }))).name).to.equal('UNKNOWN_PARTITION');
      expect((await rejection(p.send({ topic: 't', messages: [] }))).name).to.equal('INVALID_REQUEST');
      expect(cluster.produceLog.length).to.equal(0);
    });

    it('retries stop at deliveryTimeoutMs: a partition without a leader fails REQUEST_TIMED_OUT', async () => {
      const p = await producer({ lingerMs: 0, deliveryTimeoutMs: 400 });
      cluster.moveLeader('t', 0, -1);
      const err = await rejection(p.send({ topic: 't', messages: [{ value: 'a' }] }));
      expect(err.name).to.equal('REQUEST_TIMED_OUT');
      expect(cluster.values('t', 0)).to.deep.equal([]);
    });

    it('a full buffer makes send() wait, then reject REQUEST_TIMED_OUT (reason buffer-full) after maxBlockMs', async () => {
      const p = await producer({ lingerMs: 0, bufferMemoryBytes: 2_048, maxBlockMs: 200 });
      cluster.holdProduceAnswers();
      const first = p.send({ topic: 't', messages: [{ value: Buffer.alloc(1_500) }] });
      const err = await rejection(p.send({ topic: 't', messages: [{ value: Buffer.alloc(1_500) }] }));
      expect(err.name).to.equal('REQUEST_TIMED_OUT');
      expect(err.details.reason).to.equal('buffer-full');
      cluster.release();
      expect((await first)[0]!.offset).to.equal(0);
      expect((await rejection(p.send({ topic: 't', messages: [{ value: Buffer.alloc(4_096) }] }))).name, 'larger than the whole buffer').to.equal('RECORD_TOO_LARGE');
    });

    it('disconnect() flushes: a lingering record is acknowledged before it returns', async () => {
      const p = await producer({ lingerMs: 60_000 });
      const sent = p.send({ topic: 't', messages: [{ value: 'last' }] });
      await p.disconnect();
      expect((await sent)[0]!.offset).to.equal(0);
      expect((await rejection(p.send({ topic: 't', messages: [{ value: 'late' }] }))).name).to.equal('INVALID_REQUEST');
    });
  });

  describe('idempotent (exactlyOnce)', () => {
    it('a dropped answer, then a retry with the same sequence: no duplicate in the log, the original offset returned', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 0, requestTimeoutMs: 300 });
      expect(p.producerIdentity.producerId).to.be.at.least(0);
      cluster.inject({ method: 'Produce', kind: 'drop' });
      const md = await p.send({ topic: 't', messages: [{ value: 'once' }] });
      expect(md[0]!.offset).to.equal(0);
      expect(cluster.values('t', 0)).to.deep.equal(['once']);
      expect(cluster.produceLog.map((e) => e.partitions[0]!.baseSequence), 'the retry kept its sequence').to.deep.equal([0, 0]);
    });

    it('at most 5 batches in flight per partition, and they are pipelined', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 0, batchSizeBytes: 1 });
      cluster.holdProduceAnswers();
      const vs = values(20);
      const sends = vs.map((v) => p.send({ topic: 't', messages: [{ value: v }] }));
      await until(() => cluster.produceLog.length >= 5, '5 requests');
      await new Promise((r) => setTimeout(r, 200));
      expect(cluster.produceLog.length, 'no sixth request while 5 are unanswered').to.equal(5);
      expect(cluster.maxOutstanding.get('t-0')).to.equal(5);
      cluster.release();
      const results = await Promise.all(sends);
      expect(results.map((r) => r[0]!.offset)).to.deep.equal(vs.map((_, i) => i));
      expect(cluster.maxOutstanding.get('t-0'), 'never more than 5 unanswered').to.be.at.most(5);
      expect(cluster.values('t', 0)).to.deep.equal(vs);
    });

    it('order is kept per partition under retries: a refused first batch, OUT_OF_ORDER echoes behind it, a dropped answer', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 0, batchSizeBytes: 1, requestTimeoutMs: 400 });
      cluster.inject({ method: 'Produce', kind: 'refuse', error: 'NOT_ENOUGH_REPLICAS' });
      cluster.inject({ method: 'Produce', kind: 'drop', skip: 3 });
      const vs = values(30);
      const results = await Promise.all(vs.map((v) => p.send({ topic: 't', messages: [{ value: v }] })));
      expect(cluster.values('t', 0), 'every record once, in send order').to.deep.equal(vs);
      expect(results.map((r) => r[0]!.offset)).to.deep.equal(vs.map((_, i) => i));
      const sent = cluster.produceLog.length;
      expect(sent, 'retries happened').to.be.above(30);
    });

    it('order and no duplicates across a leader move with answers lost', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 1, requestTimeoutMs: 400 });
      const vs = values(40);
      const sends: Promise<unknown>[] = [];
      for (let i = 0; i < vs.length; i++) {
        if (i === 15) {
          cluster.inject({ method: 'Produce', kind: 'drop', times: 2 });
        }
        if (i === 25) cluster.moveLeader('t', 0, 2);
        sends.push(p.send({ topic: 't', messages: [{ value: vs[i]! }] }));
        if (i % 5 === 4) await new Promise((r) => setTimeout(r, 5));
      }
      await Promise.all(sends);
      expect(cluster.values('t', 0)).to.deep.equal(vs);
    });

    it('OUT_OF_ORDER_SEQUENCE for the next expected batch is fatal and typed; later sends fail the same way', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 0 });
      await p.send({ topic: 't', messages: [{ value: 'a' }] });
      // The broker now expects a later sequence than the producer's next: a lost batch.
      const st = cluster.partition('t', 0).producers.get(p.producerIdentity.producerId)!;
      st.recent.push({ firstSeq: 1, lastSeq: 5, baseOffset: 99 });
      const err = await rejection(p.send({ topic: 't', messages: [{ value: 'b' }] }));
      expect(err.name).to.equal('OUT_OF_ORDER_SEQUENCE');
      expect(err.retriable).to.equal(false);
      expect((await rejection(p.send({ topic: 't', messages: [{ value: 'c' }] }))).name).to.equal('OUT_OF_ORDER_SEQUENCE');
      expect(cluster.values('t', 0)).to.deep.equal(['a']);
    });

    it('INVALID_PRODUCER_EPOCH (fenced by a newer instance) is fatal and typed', async () => {
      const p = await producer({ qos: 'exactlyOnce', lingerMs: 0 });
      await p.send({ topic: 't', messages: [{ value: 'a' }] });
      cluster.partition('t', 0).producers.get(p.producerIdentity.producerId)!.epoch = 3;
      expect((await rejection(p.send({ topic: 't', messages: [{ value: 'b' }] }))).name).to.equal('INVALID_PRODUCER_EPOCH');
    });
  });

  describe('config', () => {
    it('QoS presets set acks, retries and idempotence; contradictions are refused INVALID_REQUEST', () => {
      expect(resolveProducerConfig({ qos: 'atMostOnce' })).to.include({ acks: 0, retries: 0, idempotent: false });
      expect(resolveProducerConfig({ qos: 'atLeastOnce' })).to.include({ acks: -1, idempotent: false });
      expect(resolveProducerConfig({ qos: 'exactlyOnce' })).to.include({ acks: -1, idempotent: true, maxInFlightRequests: 5 });
      expect(resolveProducerConfig({})).to.include({ acks: -1, idempotent: false });
      expect(resolveProducerConfig({ acks: 'all' }).acks).to.equal(-1);
      for (const bad of [
        { qos: 'atMostOnce', idempotent: true },
        { qos: 'exactlyOnce', acks: 1 },
        { idempotent: true, acks: 0 },
        { idempotent: true, maxInFlightRequests: 6 },
        { idempotent: true, retry: { retries: 0 } },
        { acks: 2 },
        { lingerMs: -1 },
        { qos: 'sometimes' },
      ]) {
        expect(() => resolveProducerConfig(bad as ProducerConfig), JSON.stringify(bad)).to.throw(FlotillaError, /producer config/);
      }
    });

    it('brokers and bootstrap are both accepted; a bad address is INVALID_REQUEST', () => {
      expect(() => new Flotilla({ brokers: ['127.0.0.1:1'], bootstrap: ['127.0.0.1:2'] })).to.not.throw();
      expect(() => new Flotilla({ brokers: [] })).to.throw(FlotillaError, /at least one/);
      expect(() => new Flotilla({ brokers: ['nohost'] })).to.throw(FlotillaError, /not host:port/);
    });
  });
});
