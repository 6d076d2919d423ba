import { expect } from 'chai';
import { ControllerChannel } from '../../broker';
import { FlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import { FakeController, deadAddress } from '../client/fake-controller';

// The broker's route to the active controller: follows NOT_CONTROLLER, skips controllers it
// cannot reach, passes the controller's typed answers through unchanged, retries a timed-out
// call elsewhere only when repeating it is harmless, and gives up within the deadline.

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    return e as FlotillaError;
  }
  throw new Error('expected a rejection');
}

describe('broker: ControllerChannel', function () {
  this.timeout(20_000);
  const fakes: FakeController[] = [];
  const channels: ControllerChannel[] = [];

  async function fake(): Promise<FakeController> {
    const f = await FakeController.start();
    fakes.push(f);
    return f;
  }

  function channel(controllers: string[], attemptsMax = 10): ControllerChannel {
    // random() = 0: the first address tried is controllers[0], so the tests are deterministic.
    const c = new ControllerChannel({ controllers, logger: silentLogger(), attemptsMax, backoffInitialMs: 10, backoffMaxMs: 50, random: () => 0 });
    channels.push(c);
    return c;
  }

  afterEach(() => {
    for (const c of channels.splice(0)) c.close();
    for (const f of fakes.splice(0)) f.stop();
  });

  it('follows NOT_CONTROLLER to the leader address and prefers it for the next call', async () => {
    const follower = await fake();
    const leader = await fake();
    follower.on('ListTopics', () => {
      throw new FlotillaError('NOT_CONTROLLER', 'not me', { leaderId: 2, leaderAddress: leader.address });
    });
    leader.on('ListTopics', () => ({ names: ['a'] }));
    const ch = channel([follower.address, leader.address]);
    const first = await ch.call<{ names: string[] }>('ListTopics', {}, { deadlineMs: Date.now() + 5_000, idempotent: true });
    expect(first.names).to.deep.equal(['a']);
    await ch.call('ListTopics', {}, { deadlineMs: Date.now() + 5_000, idempotent: true });
    expect(follower.count('ListTopics')).to.equal(1);
    expect(leader.count('ListTopics')).to.equal(2);
  });

  it("passes the controller's typed errors through unchanged (name, message, details)", async () => {
    const c = await fake();
    c.on('CreateTopic', () => {
      throw new FlotillaError('TOPIC_ALREADY_EXISTS', 'topic "x" already exists', { topic: 'x' });
    });
    const err = await rejection(channel([c.address]).call('CreateTopic', { name: 'x' }, { deadlineMs: Date.now() + 5_000, idempotent: false }));
    expect(err).to.be.instanceOf(FlotillaError);
    expect(err.name).to.equal('TOPIC_ALREADY_EXISTS');
    expect(err.message).to.equal('topic "x" already exists');
    expect(err.details).to.deep.equal({ topic: 'x' });
    expect(c.count('CreateTopic')).to.equal(1);
  });

  it('moves on from an unreachable controller and from one that knows no leader', async () => {
    const dead = await deadAddress();
    const electing = await fake();
    const ok = await fake();
    electing.on('DescribeCluster', () => {
      throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'election in progress');
    });
    ok.on('DescribeCluster', () => ({ brokers: [], controllerId: 3 }));
    const res = await channel([dead, electing.address, ok.address]).call<{ controllerId: number }>('DescribeCluster', {}, { deadlineMs: Date.now() + 5_000, idempotent: true });
    expect(res.controllerId).to.equal(3);
    expect(electing.count('DescribeCluster')).to.equal(1);
  });

  it('does not repeat a write whose answer timed out: REQUEST_TIMED_OUT, may have been applied', async () => {
    const slow = await fake();
    const other = await fake();
    slow.on('CreateTopic', () => new Promise((resolve) => setTimeout(() => resolve({}), 2_000)));
    other.on('CreateTopic', () => ({}));
    const err = await rejection(channel([slow.address, other.address]).call('CreateTopic', { name: 't' }, { deadlineMs: Date.now() + 300, idempotent: false }));
    expect(err.name).to.equal('REQUEST_TIMED_OUT');
    expect(err.message).to.match(/may or may not have been applied/);
    expect(other.count('CreateTopic')).to.equal(0);
  });

  it('retries an idempotent call that timed out on another controller', async () => {
    const slow = await fake();
    const other = await fake();
    slow.on('BrokerHeartbeat', () => new Promise((resolve) => setTimeout(() => resolve({ isFenced: false }), 2_000)));
    other.on('BrokerHeartbeat', () => ({ isFenced: false, controllerEpoch: 1 }));
    const res = await channel([slow.address, other.address]).call<{ isFenced: boolean }>(
      'BrokerHeartbeat',
      { brokerId: 1 },
      { deadlineMs: Date.now() + 1_500, idempotent: true, attemptTimeoutMs: 200 },
    );
    expect(res.isFenced).to.equal(false);
    expect(other.count('BrokerHeartbeat')).to.equal(1);
  });

  it('gives up with a retriable CONTROLLER_UNAVAILABLE when no controller answers, within the deadline', async () => {
    const a = await deadAddress();
    const b = await deadAddress();
    const start = Date.now();
    const err = await rejection(channel([a, b], 100).call('ListTopics', {}, { deadlineMs: Date.now() + 500, idempotent: true }));
    expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
    expect(err.retriable).to.equal(true);
    expect(Date.now() - start).to.be.below(2_000);
  });

  it('bounds attempts: a controller that keeps answering NOT_CONTROLLER without an address', async () => {
    const c = await fake();
    c.on('ListTopics', () => {
      throw new FlotillaError('NOT_CONTROLLER', 'lost', { leaderId: 0, leaderAddress: '' });
    });
    const err = await rejection(channel([c.address], 4).call('ListTopics', {}, { deadlineMs: Date.now() + 10_000, idempotent: true }));
    expect(err.name).to.equal('CONTROLLER_UNAVAILABLE');
    expect(c.count('ListTopics')).to.equal(4);
  });
});
