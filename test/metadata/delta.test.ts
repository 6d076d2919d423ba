import { expect } from 'chai';
import {
  EVENTS_CAPACITY,
  MetadataDelta,
  MetadataImage,
  MetadataRecord,
  configResourceKey,
  replayOnto,
} from '../../shared/metadata';

const T1 = '00000000-0000-4000-8000-000000000001';
const T2 = '00000000-0000-4000-8000-000000000002';

function register(brokerId: number, fenced = false, brokerEpoch = 0): MetadataRecord {
  return { type: 'RegisterBroker', brokerId, incarnationId: `inc-${brokerId}`, brokerEpoch, host: `b${brokerId}`, port: 9092, rack: null, fenced, reason: `broker ${brokerId} registered`, timestampMs: 100 };
}

function topic(name: string, topicId: string, partitions: number[][]): MetadataRecord[] {
  return [
    { type: 'Topic', name, topicId, reason: `topic ${name} created`, timestampMs: 200 },
    ...partitions.map((replicas, partition): MetadataRecord => ({
      type: 'Partition', topicId, partition, replicas, isr: replicas, leader: replicas[0], leaderEpoch: 0, partitionEpoch: 0,
    })),
  ];
}

/** An image with brokers 1..3 (epochs 1..3, unfenced) and topic "orders" at offset 4. */
function baseImage(): MetadataImage {
  let image = MetadataImage.EMPTY;
  image = replayOnto(image, [register(1)], 1);
  image = replayOnto(image, [register(2)], 2);
  image = replayOnto(image, [register(3)], 3);
  image = replayOnto(image, topic('orders', T1, [[1, 2, 3], [2, 3, 1]]), 4);
  return image;
}

describe('shared/metadata MetadataDelta', () => {
  it('a RegisterBroker without an explicit epoch gets the offset of its record as broker epoch (KRaft)', () => {
    const image = replayOnto(MetadataImage.EMPTY, [register(7, true)], 42);
    expect(image.brokers.get(7)).to.include({ epoch: 42, fenced: true, host: 'b7' });
    expect(image.offset).to.equal(42);
  });

  it('a PartitionChange always bumps the partition epoch, and the leader epoch only when the leader changes', () => {
    const image = baseImage();
    const isrOnly = replayOnto(image, [{ type: 'PartitionChange', topicId: T1, partition: 0, isr: [1, 2], reason: 'shrink', timestampMs: 1 }], 5);
    expect(isrOnly.partition('orders', 0)).to.deep.include({ isr: [1, 2], leader: 1, leaderEpoch: 0, partitionEpoch: 1 });
    const sameLeader = replayOnto(isrOnly, [{ type: 'PartitionChange', topicId: T1, partition: 0, leader: 1, reason: 'noop leader', timestampMs: 1 }], 6);
    expect(sameLeader.partition('orders', 0)).to.deep.include({ leader: 1, leaderEpoch: 0, partitionEpoch: 2 });
    const newLeader = replayOnto(sameLeader, [{ type: 'PartitionChange', topicId: T1, partition: 0, leader: 2, reason: 'move', timestampMs: 1 }], 7);
    expect(newLeader.partition('orders', 0)).to.deep.include({ leader: 2, leaderEpoch: 1, partitionEpoch: 3, isr: [1, 2] });
  });

  it('images are immutable: applying a delta leaves the base image and its objects unchanged', () => {
    const image = baseImage();
    const before = image.partition('orders', 0);
    const next = replayOnto(image, [
      { type: 'BrokerFenced', brokerId: 2, brokerEpoch: 2, reason: 'fenced', timestampMs: 1 },
      { type: 'PartitionChange', topicId: T1, partition: 0, isr: [1, 3], reason: 'x', timestampMs: 1 },
    ], 5);
    expect(image.brokers.get(2)?.fenced).to.equal(false);
    expect(image.partition('orders', 0)).to.equal(before);
    expect(before?.isr).to.deep.equal([1, 2, 3]);
    expect(next.brokers.get(2)?.fenced).to.equal(true);
    expect(Object.isFrozen(next.partition('orders', 0))).to.equal(true);
    // Unchanged parts are shared, not copied.
    expect(next.topics.get('orders')?.partitions.get(1)).to.equal(image.topics.get('orders')?.partitions.get(1));
  });

  it('BrokerFenced/BrokerUnfenced for another broker epoch are ignored (and counted), identically everywhere', () => {
    const delta = new MetadataDelta(baseImage());
    delta.replay({ type: 'BrokerFenced', brokerId: 2, brokerEpoch: 99, reason: 'stale', timestampMs: 1 }, 5);
    expect(delta.ignoredRecords).to.equal(1);
    const next = delta.apply();
    expect(next.brokers.get(2)?.fenced).to.equal(false);
    expect(next.events.map((e) => e.text)).to.not.include('stale');
  });

  it('records that reference a missing topic or partition are skipped instead of crashing replay', () => {
    const delta = new MetadataDelta(baseImage());
    delta.replay({ type: 'PartitionChange', topicId: T2, partition: 0, isr: [1], reason: 'x', timestampMs: 1 }, 5);
    delta.replay({ type: 'PartitionChange', topicId: T1, partition: 77, isr: [1], reason: 'x', timestampMs: 1 }, 5);
    delta.replay({ type: 'Topic', name: 'orders', topicId: T2, reason: 'dup name', timestampMs: 1 }, 5);
    delta.replay({ type: 'RemoveTopic', topicId: T2, reason: 'x', timestampMs: 1 }, 5);
    expect(delta.ignoredRecords).to.equal(4);
    expect(delta.apply().topics.get('orders')?.topicId).to.equal(T1);
  });

  it('RemoveTopic removes the topic, its partitions and its configs; the name can be reused with a new id', () => {
    let image = replayOnto(baseImage(), [
      { type: 'Config', resourceType: 'topic', resourceName: 'orders', key: 'retention.ms', value: '5', reason: '', timestampMs: 0 },
    ], 5);
    expect(image.topics.get('orders')?.configs.get('retention.ms')).to.equal('5');
    image = replayOnto(image, [
      { type: 'RemoveTopic', topicId: T1, reason: 'gone', timestampMs: 0 },
      ...topic('orders', T2, [[3]]),
    ], 6);
    const t = image.topics.get('orders');
    expect(t?.topicId).to.equal(T2);
    expect(t?.configs.size).to.equal(0);
    expect(t?.partitions.size).to.equal(1);
    expect(image.topicsById.has(T1)).to.equal(false);
    expect(image.topicsById.get(T2)).to.equal(t);
  });

  it('Config records set and delete broker and cluster configs', () => {
    let image = replayOnto(MetadataImage.EMPTY, [
      { type: 'Config', resourceType: 'broker', resourceName: '1', key: 'a', value: '1', reason: '', timestampMs: 0 },
      { type: 'Config', resourceType: 'cluster', resourceName: '', key: 'b', value: '2', reason: '', timestampMs: 0 },
    ], 1);
    expect(image.configs.get(configResourceKey('broker', '1'))?.get('a')).to.equal('1');
    expect(image.configs.get(configResourceKey('cluster', ''))?.get('b')).to.equal('2');
    image = replayOnto(image, [{ type: 'Config', resourceType: 'broker', resourceName: '1', key: 'a', value: null, reason: '', timestampMs: 0 }], 2);
    expect(image.configs.has(configResourceKey('broker', '1'))).to.equal(false);
  });

  it('ProducerIdBlock moves nextProducerId past the block and never backwards', () => {
    let image = replayOnto(MetadataImage.EMPTY, [{ type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 1, firstProducerId: 0, count: 1000, reason: '', timestampMs: 0 }], 1);
    expect(image.nextProducerId).to.equal(1000);
    image = replayOnto(image, [{ type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 1, firstProducerId: 0, count: 10, reason: '', timestampMs: 0 }], 2);
    expect(image.nextProducerId).to.equal(1000);
  });

  it('derives an event from every applied record with a reason: offset, timestamp, kind and text', () => {
    const image = replayOnto(baseImage(), [
      { type: 'BrokerFenced', brokerId: 2, brokerEpoch: 2, reason: 'broker 2 fenced: no heartbeat for 9012 ms', timestampMs: 555 },
      { type: 'PartitionChange', topicId: T1, partition: 1, leader: 3, isr: [3, 1], reason: 'orders-1: leader 2 -> 3', timestampMs: 555 },
      { type: 'PartitionChange', topicId: T1, partition: 0, isr: [1, 3], reason: 'orders-0: ISR shrink', timestampMs: 555 },
    ], 5);
    expect(image.events.slice(-3)).to.deep.equal([
      { offset: 5, timestampMs: 555, kind: 'broker-fenced', text: 'broker 2 fenced: no heartbeat for 9012 ms' },
      { offset: 5, timestampMs: 555, kind: 'leader-elected', text: 'orders-1: leader 2 -> 3' },
      { offset: 5, timestampMs: 555, kind: 'isr-changed', text: 'orders-0: ISR shrink' },
    ]);
  });

  it('keeps a bounded ring of the most recent EVENTS_CAPACITY events', () => {
    let image = replayOnto(MetadataImage.EMPTY, [register(1)], 1);
    const delta = new MetadataDelta(image);
    for (let i = 0; i < EVENTS_CAPACITY * 3; i++) {
      delta.replay({ type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 1, firstProducerId: i, count: 1, reason: `block ${i}`, timestampMs: i }, 2 + i);
    }
    image = delta.apply();
    expect(image.events).to.have.length(EVENTS_CAPACITY);
    expect(image.events[EVENTS_CAPACITY - 1].text).to.equal(`block ${EVENTS_CAPACITY * 3 - 1}`);
    image = replayOnto(image, [{ type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 1, firstProducerId: 0, count: 1, reason: 'one more', timestampMs: 0 }], 10_000);
    expect(image.events).to.have.length(EVENTS_CAPACITY);
    expect(image.events[EVENTS_CAPACITY - 1].text).to.equal('one more');
  });

  it('refuses to replay at an offset before one already replayed (log order is a precondition)', () => {
    const delta = new MetadataDelta(baseImage());
    delta.replay(register(9), 10);
    expect(() => delta.replay(register(8), 9)).to.throw(/offset/);
  });

  describe('localChanges(brokerId)', () => {
    it('lists changed partitions the broker now leads, follows, or no longer hosts; a deleted topic is all deletes', () => {
      const delta = new MetadataDelta(baseImage());
      delta.replay({ type: 'PartitionChange', topicId: T1, partition: 0, leader: 2, reason: '', timestampMs: 0 }, 5);
      delta.replay({ type: 'PartitionChange', topicId: T1, partition: 1, replicas: [2, 3], isr: [2, 3], reason: '', timestampMs: 0 }, 5);
      for (const r of topic('events', T2, [[1, 3]])) delta.replay(r, 5);

      const b1 = delta.localChanges(1);
      expect(b1.leaders.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['events-0']);
      expect(b1.followers.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['orders-0']);
      expect(b1.deletes.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['orders-1']);

      const b2 = delta.localChanges(2);
      expect(b2.leaders.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['orders-0', 'orders-1']);
      expect(b2.leaders[0].state.leaderEpoch).to.equal(1);

      const removal = new MetadataDelta(delta.apply());
      removal.replay({ type: 'RemoveTopic', topicId: T1, reason: '', timestampMs: 0 }, 6);
      expect(removal.localChanges(3).deletes.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['orders-0', 'orders-1']);
      expect(removal.localChanges(3).leaders).to.deep.equal([]);
    });
  });
});
