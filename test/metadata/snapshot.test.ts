import { expect } from 'chai';
import {
  decodeBatch,
  encodeBatch,
  encodeImageInSlices,
  imageFromRecords,
  imageToBatches,
  imageToRecords,
  MetadataImage,
  MetadataRecord,
  replayOnto,
} from '../../shared/metadata';

function busyImage(): MetadataImage {
  const T = '00000000-0000-4000-8000-00000000000a';
  const batches: MetadataRecord[][] = [
    [{ type: 'RegisterBroker', brokerId: 1, incarnationId: 'a', brokerEpoch: 0, host: 'h1', port: 1, rack: 'r1', fenced: true, reason: 'reg 1', timestampMs: 10 }],
    [{ type: 'RegisterBroker', brokerId: 2, incarnationId: 'b', brokerEpoch: 0, host: 'h2', port: 2, rack: null, fenced: true, reason: 'reg 2', timestampMs: 11 }],
    [
      { type: 'BrokerUnfenced', brokerId: 1, brokerEpoch: 1, reason: 'unfenced 1', timestampMs: 12 },
      { type: 'BrokerUnfenced', brokerId: 2, brokerEpoch: 2, reason: 'unfenced 2', timestampMs: 12 },
    ],
    [
      { type: 'Topic', name: 'orders', topicId: T, reason: 'created', timestampMs: 13 },
      { type: 'Partition', topicId: T, partition: 0, replicas: [1, 2], isr: [1, 2], leader: 1, leaderEpoch: 0, partitionEpoch: 0 },
      { type: 'Partition', topicId: T, partition: 1, replicas: [2, 1], isr: [2, 1], leader: 2, leaderEpoch: 0, partitionEpoch: 0 },
      { type: 'Config', resourceType: 'topic', resourceName: 'orders', key: 'retention.ms', value: '1000', reason: '', timestampMs: 13 },
    ],
    [
      { type: 'BrokerFenced', brokerId: 2, brokerEpoch: 2, reason: 'fenced 2', timestampMs: 14 },
      { type: 'PartitionChange', topicId: T, partition: 1, leader: 1, isr: [1], reason: 'orders-1 moved', timestampMs: 14 },
      { type: 'PartitionChange', topicId: T, partition: 0, isr: [1], reason: 'orders-0 shrank', timestampMs: 14 },
    ],
    [
      { type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 1, firstProducerId: 0, count: 1000, reason: 'pids', timestampMs: 15 },
      { type: 'Config', resourceType: 'cluster', resourceName: '', key: 'k', value: 'v', reason: 'cluster config', timestampMs: 15 },
      { type: 'Config', resourceType: 'broker', resourceName: '1', key: 'k', value: 'v', reason: '', timestampMs: 15 },
    ],
  ];
  let image = MetadataImage.EMPTY;
  batches.forEach((records, i) => {
    image = replayOnto(image, records, (i + 1) * 3);
  });
  return image;
}

describe('shared/metadata snapshots (image as records)', () => {
  it('replaying imageToRecords(image) into an empty image at its offset gives an equal image', () => {
    const image = busyImage();
    const restored = imageFromRecords(imageToRecords(image), image.offset);
    expect(restored).to.deep.equal(image);
    expect(restored.events.length).to.be.greaterThan(5);
  });

  it('the round trip also holds through the protobuf encoding', () => {
    const image = busyImage();
    const restored = imageFromRecords(decodeBatch(encodeBatch(imageToRecords(image))), image.offset);
    expect(restored).to.deep.equal(image);
  });

  it('encoding in slices gives the same bytes as one encode, pausing between slices', async () => {
    const image = busyImage();
    let pauses = 0;
    const sliced = await encodeImageInSlices(image, async () => { pauses++; }, 2);
    expect(Buffer.from(sliced).equals(Buffer.from(encodeBatch(imageToRecords(image))))).to.equal(true);
    expect(pauses).to.equal(Math.ceil(imageToRecords(image).length / 2) - 1);
    expect(imageFromRecords(decodeBatch(sliced), image.offset)).to.deep.equal(image);
  });

  it('snapshot records carry no reason, so replaying them derives no new events', () => {
    const records = imageToRecords(busyImage());
    for (const r of records) if ('reason' in r) expect(r.reason).to.equal('');
  });

  it('the empty image round-trips to the empty image', () => {
    expect(imageFromRecords(imageToRecords(MetadataImage.EMPTY), 0)).to.deep.equal(MetadataImage.EMPTY);
  });

  it('imageToBatches chunks the snapshot records without losing or reordering any', () => {
    const image = busyImage();
    const batches = imageToBatches(image, 3);
    expect(batches.length).to.be.greaterThan(1);
    expect(batches.flatMap((b) => decodeBatch(b))).to.deep.equal(imageToRecords(image));
  });
});
