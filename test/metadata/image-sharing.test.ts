import { expect } from 'chai';
import {
  imageFromRecords,
  imageToRecords,
  MetadataDelta,
  MetadataImage,
  MetadataRecord,
  NO_LEADER,
  partitionKey,
  PartitionState,
  replayOnto,
  TopicImage,
  topicCollisionKey,
} from '../../shared/metadata';
import { seededRandom as seeded } from '../support/seeded-random';

// The image is built by structural sharing (MetadataDelta.apply costs what the delta
// touched, not the size of the cluster) and keeps running indexes instead of scans. These
// tests check both without timing anything: by object identity, by counting the trie nodes a
// new image does not share with its base, and by comparing each index with a full recount.


function topicId(i: number): string {
  return `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`;
}

function register(brokerId: number): MetadataRecord {
  return { type: 'RegisterBroker', brokerId, incarnationId: `inc-${brokerId}`, brokerEpoch: 0, host: `b${brokerId}`, port: 9092, rack: null, fenced: false, reason: '', timestampMs: 0 };
}

function createTopic(name: string, id: string, partitions: number, first = 1): MetadataRecord[] {
  const records: MetadataRecord[] = [{ type: 'Topic', name, topicId: id, reason: `topic ${name} created`, timestampMs: 0 }];
  for (let p = 0; p < partitions; p++) {
    const replicas = [1, 2, 3].map((b) => ((b + p + first - 2) % 3) + 1);
    records.push({ type: 'Partition', topicId: id, partition: p, replicas, isr: replicas, leader: replicas[0], leaderEpoch: 0, partitionEpoch: 0 });
  }
  return records;
}

/** Brokers 1..3 and `topics` topics of 10 partitions (RF 3), all in one snapshot-like delta. */
function bigImage(topics: number): MetadataImage {
  const records: MetadataRecord[] = [register(1), register(2), register(3)];
  for (let i = 0; i < topics; i++) records.push(...createTopic(`t${i}`, topicId(i), 10));
  return imageFromRecords(records, 1);
}

/** The image's maps and indexes, recomputed from scratch by scanning every topic. */
function recount(image: MetadataImage) {
  let partitions = 0;
  const collisions = new Map<string, string[]>();
  const offPreferred = new Map<string, PartitionState>();
  for (const t of image.topics.values()) {
    expect(image.topicsById.get(t.topicId)).to.equal(t);
    partitions += t.partitions.size;
    const key = topicCollisionKey(t.name);
    collisions.set(key, [...(collisions.get(key) ?? []), t.name].sort());
    for (const p of t.partitions.values()) {
      const preferred = p.replicas.length > 0 ? p.replicas[0] : NO_LEADER;
      if (p.leader !== preferred) offPreferred.set(partitionKey(t.topicId, p.partition), p);
    }
  }
  expect(image.topicsById.size).to.equal(image.topics.size);
  return { partitions, collisions, offPreferred };
}

function expectIndexesMatchScan(image: MetadataImage, what: string): void {
  const scan = recount(image);
  expect(image.partitionCount(), `${what}: partition count`).to.equal(scan.partitions);
  expect(new Map([...image.topicNamesByCollisionKey].map(([k, v]) => [k, [...v]])), `${what}: collision keys`).to.deep.equal(scan.collisions);
  expect(image.partitionsOffPreferredLeader.size, `${what}: off-preferred size`).to.equal(scan.offPreferred.size);
  for (const [key, state] of scan.offPreferred) {
    expect(image.partitionsOffPreferredLeader.get(key)?.state, `${what}: off-preferred ${key}`).to.equal(state);
  }
}

describe('shared/metadata image: structural sharing and running indexes', () => {
  it('a delta touching one topic leaves every other topic the same object, and the base image unchanged', () => {
    const base = bigImage(2000);
    const touched = base.topics.get('t1234') as TopicImage;
    const baseTopics = [...base.topics];
    const baseP3 = touched.partitions.get(3);

    const next = replayOnto(base, [{ type: 'PartitionChange', topicId: touched.topicId, partition: 3, isr: [touched.partitions.get(3)?.leader as number], reason: 'shrink', timestampMs: 1 }], 2);

    for (const [name, t] of base.topics) {
      if (name === 't1234') continue;
      expect(next.topics.get(name), name).to.equal(t);
      expect(next.topicsById.get(t.topicId), name).to.equal(t);
    }
    const after = next.topics.get('t1234') as TopicImage;
    expect(after).to.not.equal(touched);
    expect(after.partitions.get(3)?.partitionEpoch).to.equal(1);
    for (const p of [0, 1, 2, 4, 5, 6, 7, 8, 9]) expect(after.partitions.get(p)).to.equal(touched.partitions.get(p));
    expect(after.configs).to.equal(touched.configs);
    expect(next.brokers).to.equal(base.brokers);

    // The base image did not move: same entries, same objects, same partition state.
    expect([...base.topics]).to.deep.equal(baseTopics);
    baseTopics.forEach(([name, t]) => expect(base.topics.get(name)).to.equal(t));
    expect(base.topics.get('t1234')?.partitions.get(3)).to.equal(baseP3);
    expect(baseP3?.partitionEpoch).to.equal(0);
  });

  it('building the next image allocates O(log n) trie nodes per touched topic, not O(topics): the regression guard against copying', () => {
    const base = bigImage(4000);
    const id = base.topics.get('t77')?.topicId as string;
    const next = replayOnto(base, [
      { type: 'PartitionChange', topicId: id, partition: 0, leader: 2, reason: 'move', timestampMs: 1 },
      ...createTopic('fresh', topicId(999_999), 10),
    ], 2);
    // Two topics touched; each of these maps had ~4000 entries (a copy would be thousands of
    // nodes). One change is at most the trie's depth + 1 nodes (3 levels at this size).
    expect(next.topics.nodesNotIn(base.topics)).to.be.at.most(10);
    expect(next.topicsById.nodesNotIn(base.topicsById)).to.be.at.most(10);
    expect(next.topicNamesByCollisionKey.nodesNotIn(base.topicNamesByCollisionKey)).to.be.at.most(5);
    expect(next.partitionsOffPreferredLeader.nodesNotIn(base.partitionsOffPreferredLeader)).to.be.at.most(5);
    // Within the touched topic, one partition changed: its map shares the other nine.
    const before = base.topicsById.get(id) as TopicImage;
    expect((next.topicsById.get(id) as TopicImage).partitions.nodesNotIn(before.partitions)).to.be.at.most(2);
    expect(next.partitionCount()).to.equal(base.partitionCount() + 10);
  });

  it('createTopic-style collision lookups and the partition count come from the indexes', () => {
    let image = bigImage(3);
    image = replayOnto(image, createTopic('a_b', topicId(100), 4), 2);
    expect(image.collidingTopic('a.b')).to.equal('a_b');
    expect(image.collidingTopic('a_b')).to.equal(undefined, 'a topic does not collide with itself');
    expect(image.collidingTopic('a-b')).to.equal(undefined);
    expect(image.partitionCount()).to.equal(34);
    image = replayOnto(image, [{ type: 'RemoveTopic', topicId: topicId(100), reason: 'gone', timestampMs: 0 }], 3);
    expect(image.collidingTopic('a.b')).to.equal(undefined);
    expect(image.partitionCount()).to.equal(30);
  });

  it('the running indexes equal a full rescan after random creates, deletes, re-creates and leader moves (and through a snapshot)', () => {
    const r = seeded(11);
    let image = replayOnto(MetadataImage.EMPTY, [register(1), register(2), register(3)], 1);
    let nextId = 0;
    for (let offset = 2; offset < 400; offset++) {
      const delta = new MetadataDelta(image);
      const batch = 1 + Math.floor(r() * 4);
      for (let i = 0; i < batch; i++) {
        const live = [...image.topics.values()];
        const roll = r();
        const name = `${r() < 0.5 ? 'x.' : 'x_'}${Math.floor(r() * 30)}`;
        if (roll < 0.35 || live.length === 0) {
          for (const rec of createTopic(name, topicId(nextId++), 1 + Math.floor(r() * 5), 1 + Math.floor(r() * 3))) delta.replay(rec, offset);
        } else if (roll < 0.5) {
          const t = live[Math.floor(r() * live.length)];
          delta.replay({ type: 'RemoveTopic', topicId: t.topicId, reason: '', timestampMs: 0 }, offset);
          if (r() < 0.5) {
            // Deleted and re-created in one batch, under the same name or even the same id.
            for (const rec of createTopic(t.name, r() < 0.5 ? t.topicId : topicId(nextId++), 1 + Math.floor(r() * 5))) delta.replay(rec, offset);
          }
        } else {
          const t = live[Math.floor(r() * live.length)];
          const p = Math.floor(r() * t.partitions.size);
          const leader = r() < 0.2 ? NO_LEADER : 1 + Math.floor(r() * 3);
          delta.replay({ type: 'PartitionChange', topicId: t.topicId, partition: p, leader, reason: '', timestampMs: 0 }, offset);
        }
      }
      const next = delta.apply();
      expectIndexesMatchScan(next, `offset ${offset}`);
      image = next;
    }
    expect(image.partitionsOffPreferredLeader.size).to.be.greaterThan(0);
    expect([...image.topicNamesByCollisionKey.values()].some((names) => names.length > 1), 'replay keeps colliding names it is given').to.equal(true);
    const restored = imageFromRecords(imageToRecords(image), image.offset);
    expect(restored).to.deep.equal(image);
  });
});
