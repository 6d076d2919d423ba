// An immutable map with structural sharing: a hash array mapped trie (Bagwell, "Ideal Hash
// Trees", 2001; the shape of Clojure's PersistentHashMap, and of the persistent maps Kafka's
// MetadataImage moved to for the same reason, KAFKA-14022). set() and delete() return a new
// map that shares every node but the O(log32 n) on the path to the changed key; the old map
// is untouched. That is what lets MetadataDelta.apply() build the next image in O(changed)
// instead of copying every topic (at 10,000 topics the copies were 40 % of the leader's CPU).
//
// Why our own and not a library (`immutable` v5 would do the job): the image's maps must stay
// `ReadonlyMap`s, so controller/, broker/ and cli/ read them exactly as before (get, has,
// size, keys, values, for..of); immutable's Map is not one (different forEach, iteration of
// [k, v] only through entries()) and would need an adapter over every map anyway. The trie
// below is ~250 lines with only string/number keys, and test/metadata/persistent-map.test.ts
// checks it against a native Map on random operation sequences, hash collisions included.
//
// Canonical form: the trie's shape depends only on the set of keys, never on the order they
// were inserted or deleted in (a single leaf or collision node below the root is lifted into
// its parent on delete; collision leaves are kept sorted by key). So two maps with equal
// contents are deep-equal, which the snapshot and replica tests rely on.
//
// Iteration order is the trie order, not insertion order: fixed for a given set of keys, but
// callers that show or compare orders sort (as they did before). Small non-negative integer
// keys (partitions, broker ids below 32) iterate in ascending order.
//
// Keys are strings or numbers compared with ===, so NaN is not a valid key.

type Key = string | number;

const BITS = 5;
const MASK = (1 << BITS) - 1;

class Leaf<K extends Key, V> {
  constructor(
    readonly hash: number,
    readonly key: K,
    readonly value: V,
  ) {}
}

/** An inner node: bit i of `bitmap` set = a slot for hash chunk i, at index popcount(bitmap below i). */
class Branch<K extends Key, V> {
  constructor(
    readonly bitmap: number,
    readonly slots: readonly Slot<K, V>[],
  ) {}
}

/** Two or more keys with the same 32-bit hash, sorted by key. */
class Collision<K extends Key, V> {
  constructor(
    readonly hash: number,
    readonly leaves: readonly Leaf<K, V>[],
  ) {}
}

type Slot<K extends Key, V> = Leaf<K, V> | Branch<K, V> | Collision<K, V>;

/** The 32-bit hash the trie is indexed by (exported for tests). */
export function hashKey(key: Key): number {
  // int32 keys hash to themselves: dense ids fill the root in order and hash for free.
  if (typeof key === 'number' && (key | 0) === key) return key | 0;
  const s = typeof key === 'string' ? key : `#${key}`;
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // murmur3's fmix32: spreads every character into the low bits, which the trie reads first.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}

function popcount(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

function keyBefore(a: Key, b: Key): boolean {
  return typeof a === typeof b ? a < b : typeof a === 'number';
}

function withInserted<T>(array: readonly T[], i: number, item: T): T[] {
  const out = new Array<T>(array.length + 1);
  for (let j = 0; j < i; j++) out[j] = array[j];
  out[i] = item;
  for (let j = i; j < array.length; j++) out[j + 1] = array[j];
  return out;
}

function withReplaced<T>(array: readonly T[], i: number, item: T): T[] {
  const out = array.slice();
  out[i] = item;
  return out;
}

function withRemoved<T>(array: readonly T[], i: number): T[] {
  const out = new Array<T>(array.length - 1);
  for (let j = 0; j < i; j++) out[j] = array[j];
  for (let j = i + 1; j < array.length; j++) out[j - 1] = array[j];
  return out;
}

// Set by insert() when the key was not there before (JavaScript is single-threaded, and
// insert() calls nothing that could re-enter).
let inserted = false;

function insert<K extends Key, V>(node: Slot<K, V>, shift: number, leaf: Leaf<K, V>): Slot<K, V> {
  if (node instanceof Branch) {
    const bit = 1 << ((leaf.hash >>> shift) & MASK);
    const i = popcount(node.bitmap & (bit - 1));
    if ((node.bitmap & bit) === 0) {
      inserted = true;
      return new Branch(node.bitmap | bit, withInserted(node.slots, i, leaf));
    }
    const child = node.slots[i];
    const next = insert(child, shift + BITS, leaf);
    return next === child ? node : new Branch(node.bitmap, withReplaced(node.slots, i, next));
  }
  if (node instanceof Leaf) {
    if (node.key === leaf.key) return Object.is(node.value, leaf.value) ? node : leaf;
    inserted = true;
    return merge(node, leaf, shift);
  }
  if (node.hash === leaf.hash) {
    const i = node.leaves.findIndex((l) => l.key === leaf.key);
    if (i >= 0) {
      return Object.is(node.leaves[i].value, leaf.value) ? node : new Collision(node.hash, withReplaced(node.leaves, i, leaf));
    }
    inserted = true;
    let at = 0;
    while (at < node.leaves.length && keyBefore(node.leaves[at].key, leaf.key)) at++;
    return new Collision(node.hash, withInserted(node.leaves, at, leaf));
  }
  inserted = true;
  return merge(node, leaf, shift);
}

/** The subtree at `shift` holding `a` (a leaf or a collision node) and a new leaf `b`. */
function merge<K extends Key, V>(a: Leaf<K, V> | Collision<K, V>, b: Leaf<K, V>, shift: number): Slot<K, V> {
  if (a.hash === b.hash) {
    // Only a leaf can get here: insert() handles a collision node of the same hash itself.
    const l = a as Leaf<K, V>;
    return new Collision(a.hash, keyBefore(l.key, b.key) ? [l, b] : [b, l]);
  }
  // Two different 32-bit hashes differ in some chunk at shift <= 30, so this terminates.
  const ia = (a.hash >>> shift) & MASK;
  const ib = (b.hash >>> shift) & MASK;
  if (ia === ib) return new Branch(1 << ia, [merge(a, b, shift + BITS)]);
  return new Branch((1 << ia) | (1 << ib), ia < ib ? [a, b] : [b, a]);
}

/** The subtree without `key`: the same node when absent, undefined when nothing is left. */
function remove<K extends Key, V>(node: Slot<K, V>, shift: number, hash: number, key: K): Slot<K, V> | undefined {
  if (node instanceof Branch) {
    const bit = 1 << ((hash >>> shift) & MASK);
    if ((node.bitmap & bit) === 0) return node;
    const i = popcount(node.bitmap & (bit - 1));
    const child = node.slots[i];
    const next = remove(child, shift + BITS, hash, key);
    if (next === child) return node;
    if (next === undefined) {
      if (node.slots.length === 1) return undefined;
      const slots = withRemoved(node.slots, i);
      // Canonical form: below the root, a lone leaf or collision node moves up a level.
      if (shift > 0 && slots.length === 1 && !(slots[0] instanceof Branch)) return slots[0];
      return new Branch(node.bitmap ^ bit, slots);
    }
    if (shift > 0 && node.slots.length === 1 && !(next instanceof Branch)) return next;
    return new Branch(node.bitmap, withReplaced(node.slots, i, next));
  }
  if (node instanceof Leaf) return node.key === key ? undefined : node;
  if (node.hash !== hash) return node;
  const i = node.leaves.findIndex((l) => l.key === key);
  if (i < 0) return node;
  if (node.leaves.length === 2) return node.leaves[1 - i];
  return new Collision(node.hash, withRemoved(node.leaves, i));
}

/** setAll() rebuilds the whole trie for at least BULK_MIN changes with changes x BULK_RATIO >= size. */
const BULK_MIN = 32;
const BULK_RATIO = 8;

/** The canonical subtree at `shift` for leaves with distinct keys (a branch at the root). */
function build<K extends Key, V>(leaves: Leaf<K, V>[], shift: number): Slot<K, V> {
  if (shift > 0) {
    if (leaves.length === 1) return leaves[0];
    const hash = leaves[0].hash;
    if (leaves.every((l) => l.hash === hash)) return new Collision(hash, leaves.sort((a, b) => (keyBefore(a.key, b.key) ? -1 : 1)));
  }
  const buckets: Leaf<K, V>[][] = [];
  let bitmap = 0;
  for (const l of leaves) {
    const chunk = (l.hash >>> shift) & MASK;
    const bucket = buckets[chunk];
    if (bucket === undefined) buckets[chunk] = [l];
    else bucket.push(l);
    bitmap |= 1 << chunk;
  }
  const slots: Slot<K, V>[] = [];
  for (let chunk = 0; chunk <= MASK; chunk++) {
    const bucket = buckets[chunk];
    if (bucket !== undefined) slots.push(build(bucket, shift + BITS));
  }
  return new Branch(bitmap, slots);
}

function walk<K extends Key, V>(node: Slot<K, V>, visit: (leaf: Leaf<K, V>) => void): void {
  if (node instanceof Leaf) visit(node);
  else if (node instanceof Branch) for (const s of node.slots) walk(s, visit);
  else for (const l of node.leaves) visit(l);
}

function eachNode<K extends Key, V>(node: Slot<K, V>, visit: (node: Slot<K, V>) => void): void {
  visit(node);
  if (node instanceof Branch) for (const s of node.slots) eachNode(s, visit);
  else if (node instanceof Collision) for (const l of node.leaves) visit(l);
}

/** A depth-first walk over the trie (no generators: this is on every scan of the image). */
class TrieIterator<K extends Key, V, T> implements MapIterator<T> {
  private readonly nodes: (readonly Slot<K, V>[])[];
  private readonly positions: number[];
  private collision: readonly Leaf<K, V>[] | null = null;
  private collisionAt = 0;

  constructor(
    root: Branch<K, V>,
    private readonly pick: (leaf: Leaf<K, V>) => T,
  ) {
    this.nodes = [root.slots];
    this.positions = [0];
  }

  next(): IteratorResult<T, undefined> {
    for (;;) {
      if (this.collision !== null) {
        if (this.collisionAt < this.collision.length) return { done: false, value: this.pick(this.collision[this.collisionAt++]) };
        this.collision = null;
      }
      const depth = this.nodes.length - 1;
      if (depth < 0) return { done: true, value: undefined };
      const slots = this.nodes[depth];
      const i = this.positions[depth];
      if (i >= slots.length) {
        this.nodes.pop();
        this.positions.pop();
        continue;
      }
      this.positions[depth] = i + 1;
      const s = slots[i];
      if (s instanceof Leaf) return { done: false, value: this.pick(s) };
      if (s instanceof Branch) {
        this.nodes.push(s.slots);
        this.positions.push(0);
      } else {
        this.collision = s.leaves;
        this.collisionAt = 0;
      }
    }
  }

  [Symbol.iterator](): this {
    return this;
  }
}

const pickEntry = <K extends Key, V>(l: Leaf<K, V>): [K, V] => [l.key, l.value];
const pickKey = <K extends Key, V>(l: Leaf<K, V>): K => l.key;
const pickValue = <K extends Key, V>(l: Leaf<K, V>): V => l.value;

export class PersistentMap<K extends Key, V> implements ReadonlyMap<K, V> {
  private static readonly EMPTY = new PersistentMap<never, never>(new Branch<never, never>(0, []), 0);

  static empty<K extends Key, V>(): PersistentMap<K, V> {
    return PersistentMap.EMPTY as unknown as PersistentMap<K, V>;
  }

  static from<K extends Key, V>(entries: Iterable<readonly [K, V]>): PersistentMap<K, V> {
    let map = PersistentMap.empty<K, V>();
    for (const [k, v] of entries) map = map.set(k, v);
    return map;
  }

  private constructor(
    private readonly root: Branch<K, V>,
    readonly size: number,
  ) {}

  get(key: K): V | undefined {
    const hash = hashKey(key);
    let node: Slot<K, V> = this.root;
    let shift = 0;
    for (;;) {
      if (node instanceof Branch) {
        const bit = 1 << ((hash >>> shift) & MASK);
        if ((node.bitmap & bit) === 0) return undefined;
        node = node.slots[popcount(node.bitmap & (bit - 1))];
        shift += BITS;
      } else if (node instanceof Leaf) {
        return node.key === key ? node.value : undefined;
      } else {
        if (node.hash !== hash) return undefined;
        for (const l of node.leaves) if (l.key === key) return l.value;
        return undefined;
      }
    }
  }

  has(key: K): boolean {
    // get() cannot tell a stored undefined from a missing key; values here are never undefined
    // in the image, but the map is general.
    const hash = hashKey(key);
    let node: Slot<K, V> = this.root;
    let shift = 0;
    for (;;) {
      if (node instanceof Branch) {
        const bit = 1 << ((hash >>> shift) & MASK);
        if ((node.bitmap & bit) === 0) return false;
        node = node.slots[popcount(node.bitmap & (bit - 1))];
        shift += BITS;
      } else if (node instanceof Leaf) {
        return node.key === key;
      } else {
        return node.hash === hash && node.leaves.some((l) => l.key === key);
      }
    }
  }

  /** The map with `key` set to `value`; `this` when it already held exactly that value. */
  set(key: K, value: V): PersistentMap<K, V> {
    inserted = false;
    const root = insert(this.root, 0, new Leaf(hashKey(key), key, value)) as Branch<K, V>;
    return root === this.root ? this : new PersistentMap(root, inserted ? this.size + 1 : this.size);
  }

  /**
   * The map with every entry of `changes` set. Few changes are set one by one (each shares
   * all but a path with the map before); when they are many compared to the map's size (a
   * snapshot loaded into an empty image, a first image), the trie is rebuilt bottom-up
   * instead, which allocates each new node once rather than a path per entry.
   */
  setAll(changes: ReadonlyMap<K, V>): PersistentMap<K, V> {
    if (changes.size === 0) return this;
    if (changes.size < BULK_MIN || changes.size * BULK_RATIO < this.size) {
      let map: PersistentMap<K, V> = this;
      for (const [k, v] of changes) map = map.set(k, v);
      return map;
    }
    const leaves = new Map<K, Leaf<K, V>>();
    walk(this.root, (l) => leaves.set(l.key, l));
    for (const [k, v] of changes) {
      const old = leaves.get(k);
      if (old === undefined || !Object.is(old.value, v)) leaves.set(k, new Leaf(hashKey(k), k, v));
    }
    return new PersistentMap(build([...leaves.values()], 0) as Branch<K, V>, leaves.size);
  }

  /** The map without `key`; `this` when it was absent. */
  delete(key: K): PersistentMap<K, V> {
    const root = remove(this.root, 0, hashKey(key), key);
    if (root === this.root) return this;
    if (root === undefined) return PersistentMap.empty();
    return new PersistentMap(root as Branch<K, V>, this.size - 1);
  }

  /**
   * How many trie nodes (leaves included) of this map are not nodes of `other`: what this
   * map did not share with it. Diagnostics for tests of structural sharing (one set() or
   * delete() makes at most the trie's depth plus one, about log32 n); walks both maps.
   */
  nodesNotIn(other: PersistentMap<K, V>): number {
    const theirs = new Set<Slot<K, V>>();
    eachNode(other.root, (n) => theirs.add(n));
    let count = 0;
    eachNode(this.root, (n) => {
      if (!theirs.has(n)) count++;
    });
    return count;
  }

  forEach(callbackfn: (value: V, key: K, map: ReadonlyMap<K, V>) => void, thisArg?: unknown): void {
    walk(this.root, (l) => callbackfn.call(thisArg, l.value, l.key, this));
  }

  entries(): MapIterator<[K, V]> {
    return new TrieIterator<K, V, [K, V]>(this.root, pickEntry);
  }

  keys(): MapIterator<K> {
    return new TrieIterator<K, V, K>(this.root, pickKey);
  }

  values(): MapIterator<V> {
    return new TrieIterator<K, V, V>(this.root, pickValue);
  }

  [Symbol.iterator](): MapIterator<[K, V]> {
    return this.entries();
  }
}
