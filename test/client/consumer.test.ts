import { expect } from 'chai';
import { Consumer, ConsumerConfig, EachMessagePayload, Flotilla, FlotillaError, isFlotillaError } from '../../client';
import { encodeRecordBatch } from '../../shared/records';
import { FakeCluster } from './fake-broker';

// The consumer against in-memory fake brokers: positions inside batches, resets, leader
// moves, stop(), and a produce -> consume round trip.

function batch(values: string[], key?: string): Buffer {
  return encodeRecordBatch({ records: values.map((v) => ({ key: key ? Buffer.from(key) : null, value: Buffer.from(v), headers: [{ key: 'h', value: Buffer.from('hv') }], timestampMs: 1_000 })) });
}

async function until(cond: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('client: consumer', function () {
  this.timeout(30_000);
  let cluster: FakeCluster;
  const consumers: Consumer[] = [];
  const got: EachMessagePayload[] = [];
  const vals = (): string[] => got.map((g) => g.message.value!.toString());

  async function consume(config: ConsumerConfig, assign: { topic: string; partition: number }[], seek?: number | 'earliest' | 'latest'): Promise<Consumer> {
    const c = new Flotilla({ brokers: cluster.addresses }).consumer({ maxWaitMs: 100, retryBackoffMs: 10, ...config });
    consumers.push(c);
    await c.connect();
    c.assign(assign);
    if (seek !== undefined) for (const tp of assign) c.seek({ ...tp, offset: seek });
    await c.run({
      eachMessage: async (p) => {
        got.push(p);
      },
    });
    return c;
  }

  beforeEach(async () => {
    got.length = 0;
    cluster = await FakeCluster.start({ brokers: 2, topics: { t: 1, two: 2 } });
  });
  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.disconnect()));
    cluster.stop();
  });

  it('reads from an offset inside a batch: the records below it are skipped, none repeated', async () => {
    cluster.append('t', 0, batch(['a0', 'a1', 'a2', 'a3', 'a4']));
    cluster.append('t', 0, batch(['b5', 'b6']));
    await consume({}, [{ topic: 't', partition: 0 }], 3);
    await until(() => got.length >= 4, '4 records');
    await new Promise((r) => setTimeout(r, 150));
    expect(vals()).to.deep.equal(['a3', 'a4', 'b5', 'b6']);
    expect(got.map((g) => g.message.offset)).to.deep.equal([3, 4, 5, 6]);
    expect(got[0]!.message.headers.h!.toString()).to.equal('hv');
    expect(got[0]!.highWatermark).to.equal(7);
  });

  it('long-polls: a record appended after the consumer started is delivered', async () => {
    await consume({ autoOffsetReset: 'latest' }, [{ topic: 't', partition: 0 }]);
    await new Promise((r) => setTimeout(r, 150));
    cluster.append('t', 0, batch(['late']));
    await until(() => got.length === 1, 'the late record');
    expect(vals()).to.deep.equal(['late']);
  });

  it("autoOffsetReset 'latest' starts at the high watermark, 'earliest' at the log start", async () => {
    cluster.append('t', 0, batch(['old']));
    const latest = await consume({ autoOffsetReset: 'latest' }, [{ topic: 't', partition: 0 }]);
    await until(() => latest.position({ topic: 't', partition: 0 }) === 1, 'latest position');
    await latest.stop();
    expect(got).to.have.length(0);
    await consume({ autoOffsetReset: 'earliest' }, [{ topic: 't', partition: 0 }]);
    await until(() => got.length === 1, 'the old record');
    expect(vals()).to.deep.equal(['old']);
  });

  it('follows a leader move: keeps its position, no record lost or repeated', async () => {
    cluster.append('t', 0, batch(['x0', 'x1']));
    await consume({}, [{ topic: 't', partition: 0 }], 0);
    await until(() => got.length === 2, 'first records');
    cluster.moveLeader('t', 0, 2);
    cluster.append('t', 0, batch(['x2', 'x3']));
    await until(() => got.length === 4, 'records after the move');
    expect(vals()).to.deep.equal(['x0', 'x1', 'x2', 'x3']);
    expect(cluster.calls.some((c) => c.brokerId === 2 && c.method === 'Fetch'), 'fetched from the new leader').to.equal(true);
  });

  it('a whole fetch refused UNKNOWN_TOPIC (a broker just restarted, its metadata empty) is retried: no record lost, the loop goes on', async () => {
    cluster.append('t', 0, batch(['u0', 'u1']));
    cluster.inject({ method: 'Fetch', kind: 'refuse', error: 'UNKNOWN_TOPIC', times: 2 });
    const c = await consume({}, [{ topic: 't', partition: 0 }], 0);
    await until(() => got.length === 2, 'the records after the refusals');
    cluster.append('t', 0, batch(['u2']));
    await until(() => got.length === 3, 'a record appended later');
    expect(vals()).to.deep.equal(['u0', 'u1', 'u2']);
    expect(cluster.faults, 'both refusals were served').to.have.length(0);
    let ended = false;
    void c.join().then(() => (ended = true), () => (ended = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(ended, 'the consumer loop still runs').to.equal(false);
  });

  it("OFFSET_OUT_OF_RANGE: 'earliest' resets to the log start; 'none' ends the loop with the typed error", async () => {
    cluster.append('t', 0, batch(['r0', 'r1']));
    cluster.append('t', 0, batch(['r2']));
    cluster.truncateBefore('t', 0, 2);
    await consume({ autoOffsetReset: 'earliest' }, [{ topic: 't', partition: 0 }], 0);
    await until(() => got.length === 1, 'the record after the reset');
    expect(vals()).to.deep.equal(['r2']);
    const strict = await consume({ autoOffsetReset: 'none' }, [{ topic: 't', partition: 0 }], 0);
    let err: unknown;
    await strict.join().catch((e) => (err = e));
    expect(isFlotillaError(err, 'OFFSET_OUT_OF_RANGE'), String(err)).to.equal(true);
  });

  it('stop() ends the loop: nothing is delivered after it resolves, and join() resolves', async () => {
    const c = await consume({}, [{ topic: 't', partition: 0 }], 0);
    cluster.append('t', 0, batch(['s0']));
    await until(() => got.length === 1, 'one record');
    await c.stop();
    await c.join();
    cluster.append('t', 0, batch(['s1']));
    await new Promise((r) => setTimeout(r, 300));
    expect(vals()).to.deep.equal(['s0']);
  });

  it('an error thrown by eachMessage ends the loop (join() rejects) and the position stays on that record', async () => {
    cluster.append('t', 0, batch(['e0', 'e1', 'e2']));
    const c = new Flotilla({ brokers: cluster.addresses }).consumer({ maxWaitMs: 100 });
    consumers.push(c);
    c.assign([{ topic: 't', partition: 0 }]);
    c.seek({ topic: 't', partition: 0, offset: 0 });
    await c.run({
      eachMessage: ({ message }) => {
        if (message.offset === 1) throw new FlotillaError('INVALID_RECORD', 'handler refused e1');
      },
    });
    const err = await c.join().then(
      () => undefined,
      (e) => e,
    );
    expect(isFlotillaError(err, 'INVALID_RECORD')).to.equal(true);
    expect(c.position({ topic: 't', partition: 0 })).to.equal(1);
  });

  it('produce -> consume round trip over two partitions: keys, values, headers and offsets as acknowledged', async () => {
    const producer = new Flotilla({ brokers: cluster.addresses }).producer({ qos: 'exactlyOnce', lingerMs: 2 });
    await producer.connect();
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `k${i % 7}`, value: `v${i}`, headers: { n: String(i) } }));
    const acked = await producer.send({ topic: 'two', messages });
    await producer.disconnect();
    await consume({}, [0, 1].map((partition) => ({ topic: 'two', partition })), 'earliest');
    await until(() => got.length === 50, '50 records');
    const byValue = new Map(got.map((g) => [g.message.value!.toString(), g]));
    messages.forEach((m, i) => {
      const g = byValue.get(m.value)!;
      expect(g, m.value).to.not.equal(undefined);
      expect([g.partition, g.message.offset]).to.deep.equal([acked[i]!.partition, acked[i]!.offset]);
      expect(g.message.key!.toString()).to.equal(m.key);
      expect(g.message.headers.n!.toString()).to.equal(String(i));
    });
  });

  it('bad input is INVALID_REQUEST: seek on an unassigned partition, a negative offset, a bad reset policy', async () => {
    const c = new Flotilla({ brokers: cluster.addresses }).consumer();
    consumers.push(c);
    c.assign([{ topic: 't', partition: 0 }]);
    expect(() => c.seek({ topic: 't', partition: 1, offset: 0 })).to.throw(FlotillaError, /not assigned/);
    expect(() => c.seek({ topic: 't', partition: 0, offset: -1 })).to.throw(FlotillaError, /offset/);
    expect(() => new Flotilla({ brokers: cluster.addresses }).consumer({ autoOffsetReset: 'sometimes' as never })).to.throw(FlotillaError);
    expect(await c.partitionsFor('two')).to.deep.equal([0, 1]);
  });
});
