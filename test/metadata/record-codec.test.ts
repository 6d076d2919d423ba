import { expect } from 'chai';
import * as protobuf from 'protobufjs';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { decodeBatch, encodeBatch, MetadataRecord, RECORD_VERSION } from '../../shared/metadata';

const EVERY_TYPE: MetadataRecord[] = [
  { type: 'RegisterBroker', brokerId: 1, incarnationId: 'inc-a', brokerEpoch: 0, host: 'b1', port: 9092, rack: 'r1', fenced: true, reason: 'broker 1 registered', timestampMs: 1_700_000_000_123 },
  { type: 'RegisterBroker', brokerId: 2, incarnationId: 'inc-b', brokerEpoch: 17, host: 'b2', port: 9093, rack: null, fenced: false, reason: '', timestampMs: 0 },
  { type: 'UnregisterBroker', brokerId: 2, brokerEpoch: 17, reason: 'gone', timestampMs: 5 },
  { type: 'BrokerFenced', brokerId: 1, brokerEpoch: 3, reason: 'broker 1 fenced: no heartbeat for 9012 ms', timestampMs: 6 },
  { type: 'BrokerUnfenced', brokerId: 1, brokerEpoch: 3, reason: 'broker 1 unfenced', timestampMs: 7 },
  { type: 'Topic', name: 'orders', topicId: '6f1c1b9e-0000-4000-8000-000000000001', reason: 'created', timestampMs: 8 },
  { type: 'Partition', topicId: 't', partition: 3, replicas: [1, 2, 3], isr: [1, 2], leader: 1, leaderEpoch: 4, partitionEpoch: 9 },
  { type: 'PartitionChange', topicId: 't', partition: 0, leader: -1, isr: [], replicas: [3, 2], reason: 'r', timestampMs: 9 },
  { type: 'PartitionChange', topicId: 't', partition: 1, reason: 'nothing changes', timestampMs: 10 },
  { type: 'PartitionChange', topicId: 't', partition: 2, isr: [2], reason: 'isr only', timestampMs: 11 },
  { type: 'RemoveTopic', topicId: 't', reason: 'deleted', timestampMs: 12 },
  { type: 'Config', resourceType: 'topic', resourceName: 'orders', key: 'retention.ms', value: '1000', reason: '', timestampMs: 13 },
  { type: 'Config', resourceType: 'broker', resourceName: '1', key: 'x', value: null, reason: 'deleted', timestampMs: 14 },
  { type: 'Config', resourceType: 'cluster', resourceName: '', key: 'y', value: '', reason: '', timestampMs: 15 },
  { type: 'ProducerIdBlock', brokerId: 1, brokerEpoch: 3, firstProducerId: 2 ** 40, count: 1000, reason: 'alloc', timestampMs: 16 },
  { type: 'Event', offset: 99, timestampMs: 17, kind: 'broker-fenced', text: 'broker 1 fenced' },
];

describe('shared/metadata record codec', () => {
  it('round-trips every record type exactly, including absent optional fields and int64 values', () => {
    const decoded = decodeBatch(encodeBatch(EVERY_TYPE));
    expect(decoded).to.deep.equal(EVERY_TYPE);
  });

  it('keeps "absent" (no change) distinct from "empty" for PartitionChange isr/replicas and leader', () => {
    const [unchanged, emptied] = decodeBatch(
      encodeBatch([
        { type: 'PartitionChange', topicId: 't', partition: 0, reason: '', timestampMs: 0 },
        { type: 'PartitionChange', topicId: 't', partition: 0, leader: -1, isr: [], reason: '', timestampMs: 0 },
      ]),
    );
    expect(unchanged).to.not.have.any.keys('leader', 'isr', 'replicas');
    expect(emptied).to.include({ leader: -1 });
    expect(emptied).to.have.property('isr').that.deep.equals([]);
  });

  it('encodes every record type to the bytes protobufjs gives for the same message built by fromObject (canonical encoding)', () => {
    const t = protobuf.loadSync(path.join(findProtoDir(), 'metadata.proto')).lookupType('flotilla.metadata.MetadataRecordBatch');
    for (const record of EVERY_TYPE) {
      const ours = encodeBatch([record]);
      const viaFromObject = t.encode(t.fromObject(t.toObject(t.decode(ours), { longs: Number, enums: String, oneofs: true }))).finish();
      expect(Buffer.from(ours).toString('hex'), record.type).to.equal(Buffer.from(viaFromObject).toString('hex'));
    }
  });

  it('round-trips an empty batch', () => {
    expect(decodeBatch(encodeBatch([]))).to.deep.equal([]);
  });

  it('refuses a record whose version is newer than this build reads', () => {
    const root = protobuf.loadSync(path.join(findProtoDir(), 'metadata.proto'));
    const Batch = root.lookupType('flotilla.metadata.MetadataRecordBatch');
    const bytes = Batch.encode(
      Batch.fromObject({ records: [{ version: RECORD_VERSION + 1, topic: { name: 'x', topicId: 'y' } }] }),
    ).finish();
    expect(() => decodeBatch(bytes)).to.throw(/version/);
  });

  it('refuses a record with no known type set (a newer writer or corruption)', () => {
    const root = protobuf.loadSync(path.join(findProtoDir(), 'metadata.proto'));
    const Batch = root.lookupType('flotilla.metadata.MetadataRecordBatch');
    const bytes = Batch.encode(Batch.fromObject({ records: [{ version: 1 }] })).finish();
    expect(() => decodeBatch(bytes)).to.throw(/known type/);
  });

  it('every message and field in proto/metadata.proto carries a comment (schema rule)', () => {
    const lines = fs.readFileSync(path.join(findProtoDir(), 'metadata.proto'), 'utf8').split('\n');
    const uncommented: string[] = [];
    lines.forEach((line, i) => {
      const t = line.trim();
      const isDecl = /^(message|enum|oneof)\s/.test(t) || /^(optional |repeated )?[\w.]+\s+\w+\s*=\s*\d+;/.test(t);
      if (isDecl && !lines[i - 1].trim().startsWith('//')) uncommented.push(`${i + 1}: ${t}`);
    });
    expect(uncommented).to.deep.equal([]);
  });
});

function findProtoDir(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(dir, 'proto', 'metadata.proto'))) return path.join(dir, 'proto');
    dir = path.dirname(dir);
  }
  throw new Error('proto dir not found');
}
