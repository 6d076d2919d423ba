import { expect } from 'chai';
import { ProducerIdManager } from '../../broker/producer';
import type { ProducerIdBlock } from '../../broker/producer';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import { expectFlotillaError } from '../broker-log/helpers';

// ProducerIdManager: ids from controller blocks, the first block ahead of use (prefetch()),
// prefetch at 90 %, one allocation in flight,
// typed failure. The controller is a fake `allocate` that hands out increasing blocks.

class FakeController {
  next = 0;
  calls = 0;
  failNext = 0;
  /** Pending answers, resolved by release(): lets a test hold an allocation in flight. */
  private held: (() => void)[] = [];
  hold = false;

  constructor(readonly blockSize: number) {}

  readonly allocate = async (): Promise<ProducerIdBlock> => {
    this.calls++;
    if (this.hold) await new Promise<void>((resolve) => this.held.push(resolve));
    if (this.failNext > 0) {
      this.failNext--;
      throw new FlotillaError('CONTROLLER_UNAVAILABLE', 'no active controller');
    }
    const block = { firstProducerId: this.next, count: this.blockSize };
    this.next += this.blockSize;
    return block;
  };

  release(): void {
    this.hold = false;
    for (const r of this.held.splice(0)) r();
  }
}

describe('producer id manager: ids from controller-allocated blocks', () => {
  it('hands out every id of consecutive blocks exactly once, with epoch 0', async () => {
    const c = new FakeController(10);
    const m = new ProducerIdManager({ allocate: c.allocate });
    const ids: number[] = [];
    for (let i = 0; i < 35; i++) {
      const r = await m.generateProducerId();
      expect(r.producerEpoch).to.equal(0);
      ids.push(r.producerId);
    }
    expect(ids).to.deep.equal([...Array(35).keys()]);
  });

  it('fetches the next block once 90 % of the current one is used, before it runs out', async () => {
    const c = new FakeController(10);
    const m = new ProducerIdManager({ allocate: c.allocate });
    for (let i = 0; i < 8; i++) await m.generateProducerId();
    expect(c.calls, 'one block for the first 8 ids').to.equal(1);
    await m.generateProducerId(); // the 9th id: 90 % used
    await Promise.resolve();
    await new Promise((r) => setImmediate(r));
    expect(c.calls, 'prefetch started').to.equal(2);
    expect(m.idsAvailable).to.equal(1 + 10);
  });

  it('prefetch() gets the first block before any id is asked for, once however often it is called, and not while ids are held', async () => {
    const c = new FakeController(10);
    const m = new ProducerIdManager({ allocate: c.allocate });
    c.hold = true;
    m.prefetch();
    m.prefetch(); // while the first is in flight: no second allocation
    expect(c.calls).to.equal(1);
    c.release();
    await new Promise((r) => setImmediate(r));
    expect(m.idsAvailable, 'a block ready before the first InitProducerId').to.equal(10);
    m.prefetch(); // ids held: nothing to do
    expect(c.calls).to.equal(1);
    expect((await m.generateProducerId()).producerId).to.equal(0);
    expect(c.calls, 'the first id came from the prefetched block').to.equal(1);
  });

  it('a failed prefetch() does not throw, and the next call for an id allocates again', async () => {
    const c = new FakeController(10);
    const m = new ProducerIdManager({ allocate: c.allocate, retryBackoffMs: 0 });
    c.failNext = 1;
    m.prefetch();
    await new Promise((r) => setImmediate(r));
    expect(m.idsAvailable).to.equal(0);
    expect((await m.generateProducerId()).producerId).to.equal(0);
    expect(c.calls).to.equal(2);
  });

  it('concurrent callers share one allocation and never get the same id', async () => {
    const c = new FakeController(7);
    c.hold = true;
    const m = new ProducerIdManager({ allocate: c.allocate, attemptsMax: 10 });
    const pending = Array.from({ length: 40 }, () => m.generateProducerId());
    await new Promise((r) => setImmediate(r));
    expect(c.calls, 'one allocation in flight while callers wait').to.equal(1);
    c.release();
    const ids = (await Promise.all(pending)).map((r) => r.producerId);
    expect(new Set(ids).size).to.equal(40);
    expect(Math.max(...ids)).to.be.below(c.next);
  });

  it('a failed allocation is PRODUCER_ID_UNAVAILABLE (retriable, with the cause) for every waiting caller, and callers fail fast during the backoff', async () => {
    const c = new FakeController(5);
    let now = 1_000;
    const m = new ProducerIdManager({ allocate: c.allocate, nowMs: () => now, retryBackoffMs: 100 });
    c.failNext = 1;
    c.hold = true;
    const a = m.generateProducerId();
    const b = m.generateProducerId();
    await new Promise((r) => setImmediate(r));
    c.release();
    const ea = await expectFlotillaError(a, 'PRODUCER_ID_UNAVAILABLE');
    await expectFlotillaError(b, 'PRODUCER_ID_UNAVAILABLE');
    expect(ea.retriable).to.equal(true);
    expect(ea.details.cause).to.equal('CONTROLLER_UNAVAILABLE');
    expect(c.calls).to.equal(1);
    await expectFlotillaError(m.generateProducerId(), 'PRODUCER_ID_UNAVAILABLE');
    expect(c.calls, 'no new request within the backoff').to.equal(1);
    now += 100;
    expect((await m.generateProducerId()).producerId).to.equal(0);
    expect(c.calls).to.equal(2);
  });

  it('a block overlapping ids already accepted is refused (PRODUCER_ID_UNAVAILABLE), so no id is issued twice', async () => {
    const blocks: ProducerIdBlock[] = [
      { firstProducerId: 100, count: 2 },
      { firstProducerId: 101, count: 5 }, // overlaps: a controller bug or a replayed answer
      { firstProducerId: 102, count: 2 },
    ];
    let now = 0;
    const m = new ProducerIdManager({ allocate: async () => blocks.shift()!, nowMs: () => now, retryBackoffMs: 10, prefetchFraction: 1 });
    const got = [(await m.generateProducerId()).producerId, (await m.generateProducerId()).producerId];
    const e = await m.generateProducerId().catch((x: unknown) => x);
    expect(isFlotillaError(e, 'PRODUCER_ID_UNAVAILABLE'), String(e)).to.equal(true);
    now += 10;
    got.push((await m.generateProducerId()).producerId, (await m.generateProducerId()).producerId);
    expect(got).to.deep.equal([100, 101, 102, 103]);
  });
});
