// Where a record goes: Kafka's default placement, so that a key lands on the same partition
// whichever client (Java, librdkafka with its murmur2 partitioner, Flotilla) wrote it.
//
// - explicit `partition`: used as is (checked against the partition count);
// - a key: toPositive(murmur2(keyBytes)) % numPartitions — Kafka's
//   `BuiltInPartitioner.partitionForKey` (Utils.murmur2, Utils.toPositive);
// - no key: sticky (KIP-480): all keyless records of a topic go to one partition until the
//   batch being filled there is closed (full, or drained by the sender), then another
//   partition is chosen at random (never the same one twice in a row when there are more).
//   Sticky rather than round-robin because it fills batches: round-robin spreads a burst
//   of small records into one tiny batch per partition.
//
// Pure apart from the injected random source.

/** Kafka's Utils.murmur2: 32-bit MurmurHash2 with seed 0x9747b28c, as a signed int32. */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  const seed = 0x9747b28c;
  const m = 0x5bd1e995;
  const r = 24;
  let h = (seed ^ length) | 0;
  const length4 = length >>> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k = (data[i4]! & 0xff) | ((data[i4 + 1]! & 0xff) << 8) | ((data[i4 + 2]! & 0xff) << 16) | ((data[i4 + 3]! & 0xff) << 24);
    k = Math.imul(k, m);
    k ^= k >>> r;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  // The tail (Kafka's switch falls through from 3 to 1).
  const tail = length & ~3;
  const rest = length % 4;
  if (rest === 3) h ^= (data[tail + 2]! & 0xff) << 16;
  if (rest >= 2) h ^= (data[tail + 1]! & 0xff) << 8;
  if (rest >= 1) {
    h ^= data[tail]! & 0xff;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** Kafka's Utils.toPositive: clears the sign bit (not Math.abs: abs(MIN_VALUE) overflows). */
export function toPositive(n: number): number {
  return n & 0x7fffffff;
}

/** The partition Kafka's default partitioner gives a key. */
export function partitionForKey(key: Uint8Array, numPartitions: number): number {
  return toPositive(murmur2(key)) % numPartitions;
}

/** The sticky choice for keyless records, one current partition per topic. */
export class StickyPartitioner {
  /** topic -> current partition. Bounded by the topics a producer writes to (see TOPICS_MAX). */
  private readonly current = new Map<string, number>();

  constructor(private readonly random: () => number = Math.random) {}

  partition(topic: string, numPartitions: number): number {
    let p = this.current.get(topic);
    if (p === undefined || p >= numPartitions) {
      p = Math.floor(this.random() * numPartitions);
      if (this.current.size >= TOPICS_MAX) this.current.delete(this.current.keys().next().value as string);
      this.current.set(topic, p);
    }
    return p;
  }

  /** The batch on `partition` was closed: the next keyless record of `topic` goes elsewhere. */
  onBatchClosed(topic: string, partition: number, numPartitions: number): void {
    if (this.current.get(topic) !== partition) return;
    if (numPartitions <= 1) return;
    const other = Math.floor(this.random() * (numPartitions - 1));
    this.current.set(topic, other >= partition ? other + 1 : other);
  }
}

/** Topics whose sticky partition is remembered; older ones are forgotten (and re-chosen). */
const TOPICS_MAX = 10_000;
