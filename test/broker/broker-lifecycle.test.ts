import { expect } from 'chai';
import { BrokerLifecycleManager, ControllerChannel } from '../../broker';
import { FlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import { FakeController } from '../client/fake-controller';
import { waitFor } from './in-process-cluster';

// The broker's session with the controllers, against a scripted controller: register, then
// heartbeat with the applied metadata offset; unfence as soon as the metadata reaches the
// broker's own registration; register again (same incarnation) when the controller no longer
// knows the epoch; ask for a controlled shutdown on stop.

describe('broker: BrokerLifecycleManager', function () {
  this.timeout(20_000);
  let fake: FakeController;
  let channel: ControllerChannel;
  let manager: BrokerLifecycleManager | undefined;
  let applied = 0;

  beforeEach(async () => {
    fake = await FakeController.start();
    channel = new ControllerChannel({ controllers: [fake.address], logger: silentLogger(), backoffInitialMs: 10, backoffMaxMs: 50 });
    applied = 0;
  });

  afterEach(async () => {
    await manager?.stop();
    manager = undefined;
    channel.close();
    fake.stop();
  });

  function start(heartbeatIntervalMs: number): BrokerLifecycleManager {
    manager = new BrokerLifecycleManager({
      brokerId: 7,
      incarnationId: 'inc-1',
      host: '127.0.0.1',
      port: 1234,
      rack: 'r1',
      channel,
      logger: silentLogger(),
      appliedOffset: () => applied,
      heartbeatIntervalMs,
    });
    manager.start();
    return manager;
  }

  it('registers, heartbeats the applied offset, and unfences at once when the metadata reaches its epoch', async () => {
    fake.on('RegisterBroker', () => ({ brokerEpoch: 42 }));
    fake.on('BrokerHeartbeat', (req) => ({ isFenced: Number(req.currentMetadataOffset) < Number(req.brokerEpoch), controllerEpoch: 3 }));
    // A long interval: only the wake-up on reaching the epoch can unfence within the wait below.
    const m = start(60_000);
    await waitFor('registration', () => m.status().brokerEpoch === 42);
    expect(fake.calls.find((c) => c.method === 'RegisterBroker')!.request).to.include({ brokerId: 7, incarnationId: 'inc-1', host: '127.0.0.1', port: 1234, rack: 'r1' });
    expect(m.status()).to.include({ state: 'recovery', isFenced: true });
    applied = 42;
    m.onMetadataApplied(42);
    await waitFor('unfenced', () => !m.status().isFenced, { timeoutMs: 2_000 });
    expect(m.status()).to.include({ state: 'running', lastHeartbeatOffset: 42 });
    const last = fake.calls.filter((c) => c.method === 'BrokerHeartbeat').pop()!;
    expect(last.request).to.include({ brokerId: 7, brokerEpoch: 42, currentMetadataOffset: 42, wantShutdown: false });
  });

  it('registers again, with the same incarnation, when a heartbeat is answered STALE_BROKER_EPOCH', async () => {
    let epoch = 10;
    fake.on('RegisterBroker', () => ({ brokerEpoch: epoch }));
    fake.on('BrokerHeartbeat', (req) => {
      if (Number(req.brokerEpoch) !== epoch) throw new FlotillaError('STALE_BROKER_EPOCH', `epoch ${req.brokerEpoch} is not ${epoch}`);
      return { isFenced: false };
    });
    const m = start(50);
    await waitFor('unfenced at epoch 10', () => m.status().brokerEpoch === 10 && !m.status().isFenced);
    epoch = 20; // as if another registration replaced ours
    await waitFor('registered again at epoch 20', () => m.status().brokerEpoch === 20 && !m.status().isFenced);
    const registrations = fake.calls.filter((c) => c.method === 'RegisterBroker');
    expect(registrations).to.have.length(2);
    expect(registrations.map((r) => r.request.incarnationId)).to.deep.equal(['inc-1', 'inc-1']);
    expect(m.status().registrations).to.equal(2);
  });

  it('registers again when the controller answers UNKNOWN_BROKER', async () => {
    let known = true;
    fake.on('RegisterBroker', () => {
      known = true;
      return { brokerEpoch: 5 };
    });
    fake.on('BrokerHeartbeat', () => {
      if (!known) throw new FlotillaError('UNKNOWN_BROKER', 'broker 7 is not registered');
      return { isFenced: false };
    });
    const m = start(50);
    await waitFor('unfenced', () => !m.status().isFenced);
    known = false;
    await waitFor('a second registration', () => m.status().registrations === 2);
  });

  it('keeps retrying registration while the controller is unavailable', async () => {
    let attempts = 0;
    fake.on('RegisterBroker', () => {
      if (++attempts < 4) throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'election in progress');
      return { brokerEpoch: 3 };
    });
    fake.on('BrokerHeartbeat', () => ({ isFenced: false }));
    const m = start(50);
    await waitFor('registered', () => m.status().brokerEpoch === 3);
    expect(attempts).to.be.at.least(4);
  });

  it('asks for a controlled shutdown (heartbeat with wantShutdown) when stopped', async () => {
    fake.on('RegisterBroker', () => ({ brokerEpoch: 8 }));
    fake.on('BrokerHeartbeat', (req) => ({ isFenced: req.wantShutdown === true }));
    const m = start(50);
    await waitFor('unfenced', () => !m.status().isFenced);
    await m.stop(2_000);
    manager = undefined;
    const last = fake.calls.filter((c) => c.method === 'BrokerHeartbeat').pop()!;
    expect(last.request).to.include({ brokerEpoch: 8, wantShutdown: true });
    expect(m.status()).to.include({ state: 'shut-down', isFenced: true });
  });
});
