import { expect } from 'chai';
import { assignReplicas, PlacementBroker, rackAlternatedBrokers } from '../../shared/metadata';
import { seededRandom as seeded } from '../support/seeded-random';

function brokers(n: number, rack?: (id: number) => string): PlacementBroker[] {
  return Array.from({ length: n }, (_, i) => ({ id: i, rack: rack === undefined ? null : rack(i) }));
}

function count(values: number[]): Map<number, number> {
  const m = new Map<number, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}


describe('shared/metadata replica placement', () => {
  it('matches Kafka AdminUtils’ documented rack-unaware layout (5 brokers, 10 partitions, RF 3, start 0)', () => {
    const a = assignReplicas(brokers(5), 10, 3, { startIndex: 0, replicaShift: 0 });
    expect(a[0]).to.deep.equal([0, 1, 2]);
    expect(a[4]).to.deep.equal([4, 0, 1]);
    expect(a[5]).to.deep.equal([0, 2, 3]);
    expect(a[9]).to.deep.equal([4, 1, 2]);
  });

  it('matches Kafka’s rack-aware test vector (AdminRackAwareTest, 6 brokers on 3 racks, 7 partitions, RF 3)', () => {
    const racks: Record<number, string> = { 0: 'rack1', 1: 'rack3', 2: 'rack3', 3: 'rack2', 4: 'rack2', 5: 'rack1' };
    const bs = brokers(6, (i) => racks[i]);
    expect(rackAlternatedBrokers(bs)).to.deep.equal([0, 3, 1, 5, 4, 2]);
    expect(assignReplicas(bs, 7, 3, { startIndex: 0, replicaShift: 0 })).to.deep.equal([
      [0, 3, 1],
      [3, 1, 5],
      [1, 5, 4],
      [5, 4, 2],
      [4, 2, 0],
      [2, 0, 3],
      [0, 4, 2],
    ]);
  });

  it('every partition gets RF distinct brokers, and leaders and replicas spread evenly', () => {
    for (const [n, partitions, rf] of [[3, 30, 3], [5, 50, 2], [7, 70, 3], [4, 4, 1]]) {
      const a = assignReplicas(brokers(n), partitions, rf, { random: seeded(n) });
      expect(a).to.have.length(partitions);
      for (const replicas of a) {
        expect(replicas).to.have.length(rf);
        expect(new Set(replicas).size).to.equal(rf);
      }
      const leaders = count(a.map((r) => r[0]));
      const all = count(a.flat());
      expect(leaders.size).to.equal(n);
      for (const c of leaders.values()) expect(c).to.equal(partitions / n);
      for (const c of all.values()) expect(c).to.equal((partitions * rf) / n);
    }
  });

  it('rack-aware placement puts the replicas of one partition on distinct racks while racks last', () => {
    const rackOf = (id: number) => `rack${id % 3}`;
    const a = assignReplicas(brokers(9, rackOf), 30, 3, { random: seeded(7) });
    for (const replicas of a) expect(new Set(replicas.map(rackOf)).size).to.equal(3);
    const b = assignReplicas(brokers(6, (id) => `rack${id % 2}`), 12, 3, { random: seeded(8) });
    for (const replicas of b) {
      expect(new Set(replicas).size).to.equal(3);
      expect(new Set(replicas.map((id) => `rack${id % 2}`)).size).to.equal(2);
    }
  });

  it('is deterministic for a given start and random source, and the start rotates the leaders', () => {
    const bs = brokers(4);
    expect(assignReplicas(bs, 8, 2, { random: seeded(1) })).to.deep.equal(assignReplicas(bs, 8, 2, { random: seeded(1) }));
    expect(assignReplicas(bs, 1, 1, { startIndex: 2 })[0]).to.deep.equal([2]);
  });

  it('ignores the order brokers are given in (placement works on ids)', () => {
    const shuffled = [{ id: 3, rack: null }, { id: 1, rack: null }, { id: 2, rack: null }];
    expect(assignReplicas(shuffled, 3, 2, { startIndex: 0, replicaShift: 0 })).to.deep.equal([
      [1, 2],
      [2, 3],
      [3, 1],
    ]);
  });
});
