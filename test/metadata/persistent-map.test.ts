import { expect } from 'chai';
import { hashKey, PersistentMap } from '../../shared/metadata/persistent-map';
import { seededRandom as seeded } from '../support/seeded-random';


/**
 * Pairs of distinct strings with one 32-bit hash: a birthday search, deterministic. The
 * strings are scrambled: FNV-1a almost never collides on sequential names like key-1, key-2.
 */
function collidingStrings(groups: number): string[][] {
  const byHash = new Map<number, string[]>();
  const found: string[][] = [];
  for (let i = 0; found.length < groups; i++) {
    const s = `key-${Math.imul(i, 0x9e3779b1).toString(36)}`;
    const h = hashKey(s);
    const same = byHash.get(h);
    if (same === undefined) byHash.set(h, [s]);
    else {
      same.push(s);
      if (same.length === 2) found.push(same);
    }
  }
  return found;
}

function expectSameContents<K extends string | number, V>(map: PersistentMap<K, V>, expected: ReadonlyMap<K, V>, what: string): void {
  expect(map.size, `${what}: size`).to.equal(expected.size);
  const entries = [...map];
  expect(entries.length, `${what}: entries`).to.equal(expected.size);
  for (const [k, v] of entries) expect(expected.get(k), `${what}: ${String(k)}`).to.equal(v);
  for (const [k, v] of expected) {
    expect(map.has(k), `${what}: has ${String(k)}`).to.equal(true);
    expect(map.get(k), `${what}: get ${String(k)}`).to.equal(v);
  }
  expect([...map.keys()]).to.deep.equal(entries.map(([k]) => k));
  expect([...map.values()]).to.deep.equal(entries.map(([, v]) => v));
  const seen: [K, V][] = [];
  map.forEach((v, k, m) => {
    expect(m).to.equal(map);
    seen.push([k, v]);
  });
  expect(seen).to.deep.equal(entries);
}

describe('shared/metadata PersistentMap (hash array mapped trie)', () => {
  const keySpaces: [string, (r: () => number) => string | number][] = [
    ['small integers', (r) => Math.floor(r() * 100)],
    ['integers far apart (deep tries)', (r) => Math.floor(r() * 64) * 1024 * 1024],
    ['negative and large integers', (r) => Math.floor(r() * 200) - 100 + (r() < 0.3 ? 2 ** 40 : 0)],
    ['strings', (r) => `topic-${Math.floor(r() * 300)}`],
  ];
  for (const [name, drawKey] of keySpaces) {
    it(`matches a native Map on random set/delete sequences, and older versions never change (${name})`, () => {
      for (let seed = 1; seed <= 5; seed++) {
        const r = seeded(seed);
        let map = PersistentMap.empty<string | number, number>();
        const model = new Map<string | number, number>();
        const versions: [PersistentMap<string | number, number>, Map<string | number, number>][] = [];
        for (let op = 0; op < 1500; op++) {
          const key = drawKey(r);
          if (r() < 0.35) {
            map = map.delete(key);
            model.delete(key);
          } else {
            const value = Math.floor(r() * 5);
            map = map.set(key, value);
            model.set(key, value);
          }
          if (op % 100 === 0) versions.push([map, new Map(model)]);
          expect(map.size).to.equal(model.size);
        }
        expectSameContents(map, model, `seed ${seed}`);
        versions.forEach(([old, contents], i) => expectSameContents(old, contents, `seed ${seed} version ${i}`));
      }
    });
  }

  it('keys with equal hashes are kept apart (collision nodes), through sets, deletes and iteration', () => {
    const groups = collidingStrings(3);
    for (const g of groups) expect(hashKey(g[0])).to.equal(hashKey(g[1]));
    const [[a, b], [c, d], [e, f]] = groups;
    let map = PersistentMap.empty<string, string>();
    const model = new Map<string, string>();
    const r = seeded(7);
    // Keys whose hashes share the first two or three 5-bit chunks with a and b's: the
    // collision node then sits below branches it shares with them.
    const near: string[] = [];
    for (let i = 0; near.length < 3; i++) {
      const s = `near-${i}`;
      if ((hashKey(s) & (near.length === 0 ? 0x3ff : 0x7fff)) === (hashKey(a) & (near.length === 0 ? 0x3ff : 0x7fff))) near.push(s);
    }
    const keys = [a, b, c, d, e, f, ...near, 'x', 'y', 'z'];
    for (let op = 0; op < 3000; op++) {
      const key = keys[Math.floor(r() * keys.length)];
      if (r() < 0.4) {
        map = map.delete(key);
        model.delete(key);
      } else {
        map = map.set(key, `v${op}`);
        model.set(key, `v${op}`);
      }
      expect(map.size).to.equal(model.size);
      for (const k of keys) expect(map.get(k)).to.equal(model.get(k));
      if (op % 50 === 0) expectSameContents(map, model, `op ${op}`);
    }
    expectSameContents(map, model, 'at the end');
  });

  it('has one shape per set of keys, whatever the order of sets and deletes (deep-equal maps)', () => {
    const [[a, b]] = collidingStrings(1);
    const keys = [a, b, ...Array.from({ length: 200 }, (_, i) => `k${i}`), ...Array.from({ length: 50 }, (_, i) => `gone${i}`)];
    const build = (order: string[]) => {
      let m = PersistentMap.empty<string, number>();
      for (const k of order) m = m.set(k, k.length);
      for (const k of order) if (k.startsWith('gone')) m = m.delete(k);
      return m;
    };
    const forward = build(keys);
    const backward = build([...keys].reverse());
    const shuffled = build([...keys].sort((x, y) => hashKey(x + 'salt') - hashKey(y + 'salt')));
    expect(backward).to.deep.equal(forward);
    expect(shuffled).to.deep.equal(forward);
    let emptied = forward;
    for (const k of keys) emptied = emptied.delete(k);
    expect(emptied).to.equal(PersistentMap.empty());
  });

  it('setAll() gives the map one set() at a time would, whether it sets one by one or rebuilds in bulk', () => {
    const [[a, b], [c, d]] = collidingStrings(2);
    const r = seeded(3);
    for (const [baseSize, changeCount] of [[0, 10], [0, 500], [100, 40], [1000, 20], [1000, 300], [5000, 5000]]) {
      let base = PersistentMap.empty<string, number>();
      for (let i = 0; i < baseSize; i++) base = base.set(`k${i}`, i);
      base = base.set(a, 1).set(c, 2);
      const changes = new Map<string, number>([[b, 3], [d, 4], [a, 1]]);
      while (changes.size < changeCount) changes.set(`k${Math.floor(r() * (baseSize + changeCount))}`, Math.floor(r() * 3));
      let oneByOne = base;
      for (const [k, v] of changes) oneByOne = oneByOne.set(k, v);
      const all = base.setAll(changes);
      expect(all, `${baseSize} + ${changeCount}`).to.deep.equal(oneByOne);
      const model = new Map(base);
      for (const [k, v] of changes) model.set(k, v);
      expectSameContents(all, model, `${baseSize} + ${changeCount}`);
      expect(base.setAll(new Map())).to.equal(base);
    }
  });

  it('set() of the value already there and delete() of an absent key return the same map', () => {
    const value = { x: 1 };
    const map = PersistentMap.from<string, object>([['a', value], ['b', {}]]);
    expect(map.set('a', value)).to.equal(map);
    expect(map.delete('nope')).to.equal(map);
    expect(map.set('a', { x: 1 })).to.not.equal(map);
  });

  it('one set() on a map of 100,000 entries makes O(log n) new nodes; the rest is shared', () => {
    let map = PersistentMap.empty<string, number>();
    for (let i = 0; i < 100_000; i++) map = map.set(`topic-${i}`, i);
    const next = map.set('topic-5', -5).set('new', 1).delete('topic-7');
    // 3 operations, each at most depth (4 levels at this size) + 1 nodes.
    expect(next.nodesNotIn(map)).to.be.at.most(15);
    expect(map.get('topic-5')).to.equal(5);
    expect(map.get('topic-7')).to.equal(7);
    expect(next.get('topic-7')).to.equal(undefined);
  });

  it('reads as a ReadonlyMap: spread, Map constructor, Object.fromEntries, destructuring', () => {
    const map = PersistentMap.from<number, string>([[2, 'b'], [1, 'a'], [3, 'c']]);
    const ro: ReadonlyMap<number, string> = map;
    expect(new Map(ro)).to.deep.equal(new Map([[1, 'a'], [2, 'b'], [3, 'c']]));
    // Small non-negative integer keys iterate in ascending order.
    expect([...ro.keys()]).to.deep.equal([1, 2, 3]);
    expect(Object.fromEntries(ro)).to.deep.equal({ 1: 'a', 2: 'b', 3: 'c' });
    const it = ro.entries();
    expect(it[Symbol.iterator]()).to.equal(it);
    expect(it.next()).to.deep.equal({ done: false, value: [1, 'a'] });
  });
});
