import { expect } from 'chai';
import { Flotilla, FlotillaError, isFlotillaError } from '../../client';
import { backoffMs, resolveRetryOptions } from '../../client/retry-policy';
import { FakeController, QUORUM_REPLY, deadAddress } from './fake-controller';

// The admin client's routing and retry rules, against fake controllers on 127.0.0.1:
// follow NOT_CONTROLLER to leaderAddress, move past unreachable addresses, retry only what
// the error table calls retriable, and give up at the total deadline.

const FAST = { backoffInitialMs: 5, backoffMaxMs: 20, requestTimeoutMs: 1_000 };

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    expect(isFlotillaError(e), `expected a FlotillaError, got ${e}`).to.equal(true);
    return e as FlotillaError;
  }
  throw new Error('expected a rejection');
}

describe('client: admin retry and leader following', function () {
  this.timeout(20_000);
  const fakes: FakeController[] = [];
  const start = async (): Promise<FakeController> => {
    const f = await FakeController.start();
    fakes.push(f);
    return f;
  };
  afterEach(() => {
    for (const f of fakes.splice(0)) f.stop();
  });

  it('follows NOT_CONTROLLER to the leaderAddress it names, at once', async () => {
    const follower = await start();
    const leader = await start();
    follower.on('ListTopics', () => {
      throw new FlotillaError('NOT_CONTROLLER', 'not me', { leaderId: 2, leaderAddress: leader.address });
    });
    leader.on('ListTopics', () => ({ names: ['a', 'b'] }));
    const admin = new Flotilla({ bootstrap: [follower.address], ...FAST }).admin();
    try {
      const t0 = Date.now();
      expect(await admin.listTopics()).to.deep.equal(['a', 'b']);
      expect(follower.count('ListTopics')).to.equal(1);
      expect(leader.count('ListTopics')).to.equal(1);
      expect(Date.now() - t0, 'a redirect is followed without backoff').to.be.below(1_000);
      // The leader is remembered: the next call goes straight to it.
      await admin.listTopics();
      expect(follower.count('ListTopics')).to.equal(1);
      expect(leader.count('ListTopics')).to.equal(2);
    } finally {
      await admin.close();
    }
  });

  it('moves on to the next bootstrap address when one is unreachable', async () => {
    const live = await start();
    live.on('DescribeQuorum', () => QUORUM_REPLY);
    const admin = new Flotilla({ bootstrap: [await deadAddress(), live.address], ...FAST }).admin();
    try {
      const q = await admin.describeQuorum();
      expect(q.leaderId).to.equal(2);
      expect(q.voters.map((v) => v.id)).to.deep.equal([1, 2]);
      expect(q.fromLeader).to.equal(true);
    } finally {
      await admin.close();
    }
  });

  it('retries a retriable error (CONTROLLER_UNAVAILABLE) with backoff until it succeeds', async () => {
    const c = await start();
    c.on('DeleteTopic', (_req, i) => {
      if (i < 2) throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'election in progress');
      return {};
    });
    const admin = new Flotilla({ bootstrap: [c.address], ...FAST }).admin();
    try {
      await admin.deleteTopic('orders');
      expect(c.count('DeleteTopic')).to.equal(3);
      expect(c.calls[0]!.request).to.deep.equal({ name: 'orders' });
    } finally {
      await admin.close();
    }
  });

  it('surfaces a non-retriable error at once, typed, with its details', async () => {
    const c = await start();
    c.on('CreateTopic', () => {
      throw new FlotillaError('INVALID_REPLICATION_FACTOR', 'replication factor 1 exceeds the 0 live brokers', { liveBrokers: 0 });
    });
    const admin = new Flotilla({ bootstrap: [c.address], ...FAST }).admin();
    try {
      const err = await rejection(admin.createTopic({ name: 'demo', partitions: 3, replicationFactor: 1 }));
      expect(err.name).to.equal('INVALID_REPLICATION_FACTOR');
      expect(err.retriable).to.equal(false);
      expect(err.message).to.equal('replication factor 1 exceeds the 0 live brokers');
      expect(err.details).to.deep.equal({ liveBrokers: 0 });
      expect(c.count('CreateTopic')).to.equal(1);
      expect(c.calls[0]!.request).to.include({ name: 'demo', partitions: 3, replicationFactor: 1 });
    } finally {
      await admin.close();
    }
  });

  it('gives up at the total deadline, with the last error', async () => {
    const c = await start();
    c.on('ListTopics', () => {
      throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'election in progress');
    });
    const admin = new Flotilla({ bootstrap: [c.address], ...FAST, totalTimeoutMs: 300 }).admin();
    try {
      const t0 = Date.now();
      const err = await rejection(admin.listTopics());
      const elapsed = Date.now() - t0;
      expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
      expect(err.message).to.match(/gave up after \d+ attempt/);
      expect(elapsed).to.be.at.most(2_000);
      expect(c.count('ListTopics')).to.be.greaterThan(1);
    } finally {
      await admin.close();
    }
  });

  it('reports the error that caused the retries when the total deadline cuts the last attempt', async () => {
    const c = await start();
    c.on('ListTopics', (_req, i) => {
      if (i === 0) throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'election in progress');
      return new Promise<object>(() => undefined); // never answers
    });
    const admin = new Flotilla({ bootstrap: [c.address], ...FAST, totalTimeoutMs: 300 }).admin();
    try {
      const err = await rejection(admin.listTopics());
      expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
      expect(err.message).to.match(/^election in progress \(gave up after 2 attempt/);
    } finally {
      await admin.close();
    }
  });

  it('bounds redirects between controllers that name each other', async () => {
    const a = await start();
    const b = await start();
    a.on('ListTopics', () => {
      throw new FlotillaError('NOT_CONTROLLER', 'ask b', { leaderId: 2, leaderAddress: b.address });
    });
    b.on('ListTopics', () => {
      throw new FlotillaError('NOT_CONTROLLER', 'ask a', { leaderId: 1, leaderAddress: a.address });
    });
    const admin = new Flotilla({ bootstrap: [a.address], ...FAST, totalTimeoutMs: 500 }).admin();
    try {
      const err = await rejection(admin.listTopics());
      expect(err.name).to.equal('NOT_CONTROLLER');
      expect(err.message).to.match(/gave up after/);
      // Free redirects are bounded; after them every hop waits a backoff, so 500 ms allow few calls.
      expect(a.count('ListTopics') + b.count('ListTopics')).to.be.below(60);
    } finally {
      await admin.close();
    }
  });

  it('reports an unreachable cluster as CONTROLLER_UNAVAILABLE naming the address', async () => {
    const dead = await deadAddress();
    const admin = new Flotilla({ bootstrap: [dead], ...FAST, totalTimeoutMs: 300 }).admin();
    try {
      const err = await rejection(admin.listTopics());
      expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
      expect(err.message).to.contain(dead);
    } finally {
      await admin.close();
    }
  });

  it('maps wire shapes: partition status, absent why and rack', async () => {
    const c = await start();
    c.on('DescribeTopics', () => ({
      topics: [
        {
          name: 'demo',
          topicId: 'id-1',
          configs: { 'retention.ms': '1000' },
          partitions: [
            { partition: 0, leader: 1, leaderEpoch: 0, partitionEpoch: 0, replicas: [1, 2], isr: [1, 2], status: 'PARTITION_STATUS_ONLINE', why: '' },
            { partition: 1, leader: -1, leaderEpoch: 2, partitionEpoch: 5, replicas: [2], isr: [2], status: 'PARTITION_STATUS_OFFLINE', why: 'broker 2 fenced' },
          ],
        },
      ],
    }));
    c.on('DescribeCluster', () => ({ brokers: [{ id: 1, host: 'h', port: 9092, rack: '', fenced: false, epoch: 7 }], controllerId: 2 }));
    const admin = new Flotilla({ bootstrap: [c.address], ...FAST }).admin();
    try {
      const [t] = await admin.describeTopics(['demo']);
      expect(c.calls[0]!.request).to.deep.equal({ names: ['demo'] });
      expect(t!.configs).to.deep.equal({ 'retention.ms': '1000' });
      expect(t!.partitions[0]).to.deep.equal({ partition: 0, leader: 1, leaderEpoch: 0, partitionEpoch: 0, replicas: [1, 2], isr: [1, 2], status: 'online' });
      expect(t!.partitions[1]).to.include({ status: 'offline', why: 'broker 2 fenced', leader: -1 });
      const cluster = await admin.describeCluster();
      expect(cluster).to.deep.equal({ brokers: [{ id: 1, host: 'h', port: 9092, fenced: false, epoch: 7 }], controllerId: 2 });
    } finally {
      await admin.close();
    }
  });

  it('refuses a bad bootstrap list before any network use', () => {
    expect(() => new Flotilla({ bootstrap: [] })).to.throw(FlotillaError, /at least one/);
    expect(() => new Flotilla({ bootstrap: ['nohost'] })).to.throw(FlotillaError, /not host:port/);
  });
});

describe('client: backoff schedule', () => {
  const o = resolveRetryOptions({ backoffInitialMs: 100, backoffMaxMs: 1_000 });

  it('doubles per retry up to the cap, jittered within [cap/2, cap)', () => {
    expect(backoffMs(0, o, () => 0)).to.equal(50);
    expect(backoffMs(0, o, () => 0.999)).to.be.closeTo(100, 0.1);
    expect(backoffMs(3, o, () => 0)).to.equal(400);
    expect(backoffMs(10, o, () => 0)).to.equal(500);
    expect(backoffMs(10_000, o, () => 0.999)).to.be.below(1_000);
  });

  it('defaults the total deadline to 15 s and rejects nonsense', () => {
    expect(resolveRetryOptions().totalTimeoutMs).to.equal(15_000);
    expect(() => resolveRetryOptions({ totalTimeoutMs: -1 })).to.throw(RangeError);
    expect(() => resolveRetryOptions({ attemptsMax: 0 })).to.throw(RangeError);
  });
});
