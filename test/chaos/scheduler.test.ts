import { expect } from 'chai';
import { ALL_FAULT_TYPES, BROKER_SESSION_TIMEOUT_MS, FAULT_TYPES, FaultScheduler, faultTypesFor } from './scheduler';
import type { FaultSpec } from './scheduler';

// The chaos fault schedule: a seed replays it, the first round (the CI-sized run) has every
// fault type once with the roll-restart last, and every choice stays within its type's bounds.

function take(s: FaultScheduler, n: number): FaultSpec[] {
  return Array.from({ length: n }, () => s.next());
}

describe('chaos fault scheduler', () => {
  it('replays the same schedule from the same seed, and another from another seed', () => {
    expect(take(new FaultScheduler(42), 30)).to.deep.equal(take(new FaultScheduler(42), 30));
    expect(take(new FaultScheduler(42), 30)).to.not.deep.equal(take(new FaultScheduler(43), 30));
  });

  it('does not let target picks shift the schedule (they draw from their own stream)', () => {
    const a = new FaultScheduler(7);
    const b = new FaultScheduler(7);
    for (let i = 0; i < 100; i++) b.targetPrng().next();
    expect(take(a, 20)).to.deep.equal(take(b, 20));
  });

  it('starts with every fault type once, roll-restart last, then reports the first round done', () => {
    const s = new FaultScheduler(1);
    const first: FaultSpec[] = [];
    for (let i = 0; i < 100 && s.inFirstRound(); i++) first.push(s.next());
    expect(first.map((f) => f.type)).to.have.members(faultTypesFor(3));
    expect(first[first.length - 1].type).to.equal('roll-restart');
    expect(s.inFirstRound()).to.equal(false);
  });

  it('keeps targets, hold times and strengths within each type\'s bounds; pause-long outlasts the broker session', () => {
    const s = new FaultScheduler(99);
    for (const f of take(s, 300)) {
      const spec = FAULT_TYPES[f.type];
      expect(spec.targets).to.include(f.target);
      expect(f.holdMs).to.be.within(spec.holdMs[0], spec.holdMs[1]);
      if (spec.param) expect(f.param).to.be.within(spec.param[0], spec.param[1]);
      if (f.type === 'pause-long') expect(f.holdMs).to.be.greaterThan(BROKER_SESSION_TIMEOUT_MS);
    }
  });

  it('restricted to some types (--only), schedules nothing else', () => {
    const s = new FaultScheduler(5, ['kill', 'pause']);
    expect(new Set(take(s, 50).map((f) => f.type))).to.deep.equal(new Set(['kill', 'pause']));
  });

  it('schedules two brokers at once (kill-brokers) only with 5 brokers, and then in the first round', () => {
    for (const seed of [1, 2, 3]) {
      const three = take(new FaultScheduler(seed, undefined, 3), 200);
      expect(three.map((f) => f.type)).to.not.include('kill-brokers');
      const s = new FaultScheduler(seed, undefined, 5);
      const first: FaultSpec[] = [];
      for (let i = 0; i < 100 && s.inFirstRound(); i++) first.push(s.next());
      expect(first.map((f) => f.type)).to.have.members(ALL_FAULT_TYPES);
    }
  });
});
