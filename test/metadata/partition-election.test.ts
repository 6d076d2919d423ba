import { expect } from 'chai';
import {
  BrokerRegistration,
  electLeader,
  partitionHealth,
  PartitionState,
  preferredLeader,
  preferredLeaderChange,
} from '../../shared/metadata';

function p(replicas: number[], isr: number[], leader: number): PartitionState {
  return { partition: 0, replicas, isr, leader, leaderEpoch: 3, partitionEpoch: 7 };
}

const live = (...ids: number[]) => new Set(ids);
const clean = { uncleanLeaderElection: false, label: 't-0' };
const unclean = { uncleanLeaderElection: true, label: 't-0' };

describe('shared/metadata partition leader election', () => {
  it('returns null when the leader is alive and every ISR member is alive (no churn)', () => {
    expect(electLeader(p([1, 2, 3], [1, 2, 3], 2), live(1, 2, 3), clean)).to.equal(null);
  });

  it('a fenced follower leaves the ISR; the live leader stays', () => {
    const r = electLeader(p([1, 2, 3], [1, 2, 3], 1), live(1, 2), clean);
    expect(r).to.include({ leader: 1 });
    expect(r?.isr).to.deep.equal([1, 2]);
    expect(r?.reason).to.equal('t-0: ISR [1,2,3] -> [1,2]');
  });

  it('a fenced leader is replaced by the first replica in replica order that is alive and in the ISR', () => {
    const r = electLeader(p([3, 1, 2], [1, 2, 3], 3), live(1, 2), clean);
    expect(r?.leader).to.equal(1);
    expect(r?.isr).to.deep.equal([1, 2]);
    expect(r?.reason).to.contain('leader 3 -> 1 (from ISR [1,2])');
    // Replica order, not ISR order, decides.
    expect(electLeader(p([3, 2, 1], [1, 2, 3], 3), live(1, 2), clean)?.leader).to.equal(2);
  });

  it('a live replica outside the ISR is never chosen by a clean election', () => {
    const r = electLeader(p([1, 2], [1], 1), live(2), clean);
    expect(r?.leader).to.equal(-1);
    expect(r?.isr).to.deep.equal([1]);
    expect(r?.reason).to.contain('unclean leader election disabled');
  });

  it('the ISR never becomes empty: its last member (the old leader) stays so it can come back', () => {
    const r = electLeader(p([1, 2, 3], [2, 3], 3), live(), clean);
    expect(r).to.include({ leader: -1 });
    expect(r?.isr).to.deep.equal([3]);
  });

  it('with no live ISR member, an unclean election picks the first live replica, makes it the ISR, and says "unclean"', () => {
    const r = electLeader(p([1, 2, 3], [1], 1), live(3, 2), unclean);
    expect(r?.leader).to.equal(2);
    expect(r?.isr).to.deep.equal([2]);
    expect(r?.reason).to.contain('unclean');
  });

  it('an offline partition gets its leader back when its last ISR member returns', () => {
    const r = electLeader(p([1, 2], [2], -1), live(2), clean);
    expect(r?.leader).to.equal(2);
    expect(r?.isr).to.deep.equal([2]);
  });

  it('accepts a predicate as well as a set for the live brokers', () => {
    expect(electLeader(p([1, 2], [1, 2], 1), (id) => id === 2, clean)?.leader).to.equal(2);
  });

  describe('preferred leader', () => {
    it('is the first assigned replica', () => {
      expect(preferredLeader(p([4, 5], [4, 5], 5))).to.equal(4);
    });

    it('moves leadership back when the preferred replica is alive and in the ISR', () => {
      const r = preferredLeaderChange(p([1, 2], [1, 2], 2), live(1, 2), 't-0');
      expect(r).to.include({ leader: 1 });
      expect(r?.isr).to.deep.equal([1, 2]);
    });

    it('does nothing when the preferred replica leads, is fenced, or is out of the ISR', () => {
      expect(preferredLeaderChange(p([1, 2], [1, 2], 1), live(1, 2))).to.equal(null);
      expect(preferredLeaderChange(p([1, 2], [1, 2], 2), live(2))).to.equal(null);
      expect(preferredLeaderChange(p([1, 2], [2], 2), live(1, 2))).to.equal(null);
    });
  });
});

describe('shared/metadata partition health', () => {
  function brokersMap(spec: Record<number, boolean>): Map<number, BrokerRegistration> {
    return new Map(
      Object.entries(spec).map(([id, fenced]) => [
        Number(id),
        { id: Number(id), incarnationId: 'x', epoch: 1, host: 'h', port: 1, rack: null, fenced },
      ]),
    );
  }

  it('online: live leader and full ISR, no why', () => {
    expect(partitionHealth(p([1, 2], [1, 2], 1), brokersMap({ 1: false, 2: false }))).to.deep.equal({ status: 'online', why: '' });
  });

  it('under-replicated: names each replica out of the ISR and why', () => {
    const h = partitionHealth(p([1, 2, 3], [1], 1), brokersMap({ 1: false, 2: false, 3: true }), 2);
    expect(h.status).to.equal('under-replicated');
    expect(h.why).to.contain('replica 2 out of ISR: broker 2 is catching up');
    expect(h.why).to.contain('replica 3 out of ISR: broker 3 fenced');
    expect(h.why).to.contain('min.insync.replicas 2');
  });

  it('offline: says the leader is fenced and no ISR member is alive', () => {
    const h = partitionHealth(p([2, 3], [2], 2), brokersMap({ 2: true, 3: false }));
    expect(h.status).to.equal('offline');
    expect(h.why).to.contain('leader broker 2 is fenced and no ISR member is alive');
    const none = partitionHealth(p([2, 3], [2], -1), brokersMap({ 2: true, 3: false }));
    expect(none).to.deep.equal({ status: 'offline', why: 'no leader: no ISR member is alive (broker 2 fenced)' });
  });
});
