import { expect } from 'chai';
import type * as grpc from '@grpc/grpc-js';
import { brokerClientConstructor } from '../../broker/replica/replica-fetcher';
import { decodeReplicaPush, decodeReplicaReport, encodeReplicaPush, encodeReplicaReport } from '../../broker/replica/replicate-codec';
import type { ReplicaPush, ReplicaReport } from '../../broker/replica/replicate-codec';

// The Replicate stream's hand-written codecs speak proto/broker.proto: what they write,
// proto-loader (protobufjs) reads back as the same message, and what protobufjs writes, they
// read — including negative numbers (ten-byte varints), 2^53-1, absent (default) fields and
// empty records.

const protoMethod = (): grpc.MethodDefinition<unknown, unknown> => brokerClientConstructor().service.Replicate!;

function report(): ReplicaReport {
  return {
    replicaId: 3,
    replicaEpoch: 2 ** 40 + 7,
    positions: [
      { topic: 'orders', partition: 5, topicId: 'tid-ÿ-1', currentLeaderEpoch: 12, fetchOffset: Number.MAX_SAFE_INTEGER, lastFetchedEpoch: -1, partitionMaxBytes: 1 << 20, reportId: 2 ** 33 + 1 },
      { topic: '', partition: 0, topicId: '', currentLeaderEpoch: -1, fetchOffset: 0, lastFetchedEpoch: 0, partitionMaxBytes: 0, reportId: 1 },
    ],
    stopped: [{ topic: 'gone', partition: 2, topicId: 'tid-2' }],
  };
}

function push(): ReplicaPush {
  return {
    partitions: [
      {
        reportId: 9,
        topic: 'orders',
        partition: 5,
        error: null,
        highWatermark: 123_456_789_012,
        logStartOffset: 0,
        records: Buffer.from([...Array(300).keys()].map((i) => i & 0xff)),
        divergingEpoch: null,
        leaderEpoch: 12,
      },
      {
        reportId: 10,
        topic: 'orders',
        partition: 6,
        error: { code: 6, name: 'NOT_LEADER_FOR_PARTITION', message: 'moved', detailsJson: '{"leaderId":-1}' },
        highWatermark: -1,
        logStartOffset: -1,
        records: Buffer.alloc(0),
        divergingEpoch: { epoch: -1, endOffset: 77 },
        leaderEpoch: -1,
      },
    ],
  };
}

/** proto-loader's object for comparison: Buffers as Buffers, absent messages null. */
function normalize(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && (x as { type?: string }).type === 'Buffer' ? Buffer.from((x as { data: number[] }).data).toString('hex') : x)));
}

describe('broker/replica Replicate codecs (wire-compatible with proto/broker.proto)', () => {
  it('a ReplicaReport written by the codec is read by protobufjs as the same message, and back', () => {
    const m = report();
    const fromProto = protoMethod().requestDeserialize(encodeReplicaReport(m));
    expect(normalize(fromProto)).to.deep.equal(normalize(m));
    const back = decodeReplicaReport(protoMethod().requestSerialize(m) as Buffer);
    expect(normalize(back)).to.deep.equal(normalize(m));
  });

  it('a ReplicaPush written by the codec is read by protobufjs as the same message, and back; records come out byte-identical', () => {
    const m = push();
    const fromProto = protoMethod().responseDeserialize(encodeReplicaPush(m));
    expect(normalize(fromProto)).to.deep.equal(normalize(m));
    const back = decodeReplicaPush(protoMethod().responseSerialize(m) as Buffer);
    expect(normalize(back)).to.deep.equal(normalize(m));
    expect(back.partitions[0]!.records.equals(m.partitions[0]!.records)).to.equal(true);
  });

  it('unknown fields are skipped and truncated input is refused with INVALID_REQUEST', () => {
    const m = report();
    // Field 15 (varint 1) and field 14 (bytes "zz") appended: a newer sender's extra fields.
    const extended = Buffer.concat([encodeReplicaReport(m), Buffer.from([15 << 3, 1, (14 << 3) | 2, 2, 0x7a, 0x7a])]);
    expect(normalize(decodeReplicaReport(extended))).to.deep.equal(normalize(m));
    const whole = encodeReplicaPush(push());
    expect(() => decodeReplicaPush(whole.subarray(0, whole.length - 5))).to.throw(/malformed/);
  });
});
