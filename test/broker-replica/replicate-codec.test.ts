import { expect } from 'chai';
import type * as grpc from '@grpc/grpc-js';
import { brokerClientConstructor } from '../../broker/replica/replica-fetcher';
import { decodeReplicaPush, decodeReplicaReport, encodeReplicaPush, encodeReplicaReport } from '../../broker/replica/replicate-codec';
import type { ReplicaPush, ReplicaReport } from '../../broker/replica/replicate-codec';
import { decodeProduceRequest, decodeProduceResponse, encodeProduceRequest, encodeProduceResponse } from '../../shared/rpc/produce-codec';

// The hand-written codecs of Replicate and Produce/ProduceStream speak proto/broker.proto: what they write,
// proto-loader (protobufjs) reads back as the same message, and what protobufjs writes, they
// read — including negative numbers (ten-byte varints), 2^53-1, absent (default) fields and
// empty records.

const protoMethod = (name = 'Replicate'): grpc.MethodDefinition<unknown, unknown> => brokerClientConstructor().service[name]!;

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

  it('ProduceRequest and ProduceResponse written by the codec are read by protobufjs as the same messages, and back', () => {
    const req = {
      correlationId: 2 ** 40,
      acks: -1,
      timeoutMs: 30_000,
      partitions: [
        { topic: 'orders', partition: 3, records: Buffer.from('a record batch, as bytes') },
        { topic: 'x', partition: 0, records: Buffer.alloc(0) },
      ],
      transactionalId: '',
    };
    const res = {
      correlationId: 7,
      results: [
        { topic: 'orders', partition: 3, baseOffset: 2 ** 50, logAppendTimeMs: -1, logStartOffset: 0, error: null },
        { topic: 'orders', partition: 4, baseOffset: -1, logAppendTimeMs: -1, logStartOffset: -1, error: { code: 9, name: 'REQUEST_TIMED_OUT', message: 'slow', detailsJson: '{}' } },
      ],
      error: { code: 6, name: 'NOT_LEADER_FOR_PARTITION', message: 'é', detailsJson: '' },
    };
    for (const name of ['Produce', 'ProduceStream']) {
      const m = protoMethod(name);
      expect(normalize(m.requestDeserialize(encodeProduceRequest(req)))).to.deep.equal(normalize(req));
      expect(normalize(decodeProduceRequest(m.requestSerialize(req) as Buffer))).to.deep.equal(normalize(req));
      expect(normalize(m.responseDeserialize(encodeProduceResponse(res)))).to.deep.equal(normalize(res));
      expect(normalize(decodeProduceResponse(m.responseSerialize(res) as Buffer))).to.deep.equal(normalize(res));
    }
  });
});
