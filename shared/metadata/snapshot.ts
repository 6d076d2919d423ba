import { strict as assert } from 'node:assert';
import { MetadataDelta } from './delta';
import { MetadataImage } from './image';
import { encodeBatch } from './record-codec';
import type { MetadataRecord } from './records';

// A snapshot is the image written as records (KRaft writes its MetadataImage with
// ImageWriter the same way): replaying imageToRecords(image) into an empty image at
// image.offset gives an equal image. Snapshot records carry no reason, so replay derives no
// events from them; the event ring travels as EventRecords.

/** The image as records, in an order that replays cleanly (brokers, topics, partitions, configs). */
export function imageToRecords(image: MetadataImage): MetadataRecord[] {
  const records: MetadataRecord[] = [];
  for (const b of [...image.brokers.values()].sort((x, y) => x.id - y.id)) {
    records.push({
      type: 'RegisterBroker',
      brokerId: b.id,
      incarnationId: b.incarnationId,
      brokerEpoch: b.epoch,
      host: b.host,
      port: b.port,
      rack: b.rack,
      fenced: b.fenced,
      reason: '',
      timestampMs: 0,
    });
  }
  for (const t of [...image.topics.values()].sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0))) {
    records.push({ type: 'Topic', name: t.name, topicId: t.topicId, reason: '', timestampMs: 0 });
    for (const p of [...t.partitions.values()].sort((x, y) => x.partition - y.partition)) {
      records.push({
        type: 'Partition',
        topicId: t.topicId,
        partition: p.partition,
        replicas: p.replicas,
        isr: p.isr,
        leader: p.leader,
        leaderEpoch: p.leaderEpoch,
        partitionEpoch: p.partitionEpoch,
      });
    }
    for (const [key, value] of t.configs) {
      records.push({ type: 'Config', resourceType: 'topic', resourceName: t.name, key, value, reason: '', timestampMs: 0 });
    }
  }
  // Sorted: the image's maps iterate in hash order, and a snapshot reads best in a stable one.
  for (const [resource, configs] of [...image.configs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const colon = resource.indexOf(':');
    const resourceType = resource.slice(0, colon);
    assert(resourceType === 'broker' || resourceType === 'cluster', `config resource key ${resource}`);
    for (const [key, value] of configs) {
      records.push({ type: 'Config', resourceType, resourceName: resource.slice(colon + 1), key, value, reason: '', timestampMs: 0 });
    }
  }
  if (image.nextProducerId > 0) {
    // "Every id below nextProducerId is taken": one block from 0 says exactly that.
    records.push({
      type: 'ProducerIdBlock',
      brokerId: -1,
      brokerEpoch: -1,
      firstProducerId: 0,
      count: image.nextProducerId,
      reason: '',
      timestampMs: 0,
    });
  }
  for (const e of image.events) {
    records.push({ type: 'Event', offset: e.offset, timestampMs: e.timestampMs, kind: e.kind, text: e.text });
  }
  return records;
}

/** The image a snapshot taken at `offset` describes. */
export function imageFromRecords(records: readonly MetadataRecord[], offset: number): MetadataImage {
  const delta = new MetadataDelta(MetadataImage.EMPTY);
  delta.replayBatch(records, offset);
  // A snapshot was written from a consistent image: a record that does not apply is a bug.
  assert(delta.ignoredRecords === 0, `snapshot at offset ${offset} has ${delta.ignoredRecords} records that do not apply`);
  return delta.apply().withOffset(offset);
}

/**
 * The image as encoded MetadataRecordBatch chunks of at most `maxRecordsPerBatch` records
 * (for streaming an image to a broker whose fetch offset was compacted). Concatenating the
 * chunks' records gives imageToRecords(image).
 */
export function imageToBatches(image: MetadataImage, maxRecordsPerBatch = 5000): Uint8Array[] {
  assert(Number.isInteger(maxRecordsPerBatch) && maxRecordsPerBatch > 0, 'maxRecordsPerBatch must be a positive integer');
  const records = imageToRecords(image);
  const batches: Uint8Array[] = [];
  for (let i = 0; i < records.length; i += maxRecordsPerBatch) {
    batches.push(encodeBatch(records.slice(i, i + maxRecordsPerBatch)));
  }
  if (batches.length === 0) batches.push(encodeBatch([]));
  return batches;
}

/**
 * The same bytes as encodeBatch(imageToRecords(image)), produced in slices with a pause
 * (`yieldTurn`) between them, so a large image (6.6 MiB at 100k partitions, ~1 s of
 * protobuf work) does not hold the event loop and starve Raft heartbeats. Safe because the
 * image is immutable. Concatenated slices are one valid batch: protobuf merges repeated
 * fields of concatenated messages.
 */
export async function encodeImageInSlices(
  image: MetadataImage,
  yieldTurn: () => Promise<void>,
  recordsPerSlice = 2000,
): Promise<Uint8Array> {
  assert(Number.isInteger(recordsPerSlice) && recordsPerSlice > 0, 'recordsPerSlice must be a positive integer');
  const records = imageToRecords(image);
  if (records.length === 0) return encodeBatch([]);
  const slices: Uint8Array[] = [];
  for (let i = 0; i < records.length; i += recordsPerSlice) {
    if (i > 0) await yieldTurn();
    slices.push(encodeBatch(records.slice(i, i + recordsPerSlice)));
  }
  return Buffer.concat(slices);
}
