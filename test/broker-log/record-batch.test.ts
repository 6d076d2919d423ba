import { expect } from 'chai';
import {
  BATCH_HEADER_BYTES,
  crc32c,
  decodeRecordBatch,
  decodeRecordBatches,
  encodeRecordBatch,
  readBatchHeader,
  splitBatches,
  validateRecordBatch,
} from '../../broker/log';
import { ATTRIBUTE_TIMESTAMP_TYPE, setLogAppendTime, stampBatch } from '../../shared/records/record-batch';
import { expectThrowsFlotilla } from './helpers';

// The record batch codec: pure functions, no files. Properties: encode/decode round trip,
// the CRC32C catches any flipped byte it covers, the leader can stamp offset and epoch without
// breaking the CRC, and every rule of the log is enforced with a typed error.

/** A byte-for-byte reference CRC32C (bitwise, reflected 0x82F63B78) to cross-check the library. */
function referenceCrc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const b of bytes) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('broker/log: CRC32C', () => {
  it('computes the standard check value crc32c("123456789") = 0xE3069283', () => {
    expect(crc32c(Buffer.from('123456789'))).to.equal(0xe3069283);
  });

  it('agrees with a bitwise reference on random inputs of many lengths', () => {
    let seed = 7;
    const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) & 0xff;
    for (const n of [0, 1, 3, 7, 8, 15, 16, 63, 64, 1000, 4099]) {
      const buf = Buffer.from(Array.from({ length: n }, rand));
      expect(crc32c(buf), `length ${n}`).to.equal(referenceCrc32c(buf));
    }
  });
});

describe('broker/log: record batch codec', () => {
  const records = [
    { key: Buffer.from('a'), value: Buffer.from('first'), headers: [{ key: 'trace', value: Buffer.from('t1') }], timestampMs: 5_000 },
    { key: null, value: Buffer.from('no key'), timestampMs: 4_000 }, // older than the first: negative delta
    { value: null, headers: [{ key: 'ü-utf8', value: null }], timestampMs: 2 ** 45 }, // tombstone, big delta
    { key: Buffer.alloc(0), value: Buffer.alloc(0), timestampMs: 0 },
  ];

  it('round trip: every field of the batch and of each record survives encode/decode', () => {
    const buf = encodeRecordBatch({
      baseOffset: 1234,
      partitionLeaderEpoch: 7,
      producerId: 99,
      producerEpoch: 3,
      baseSequence: 42,
      transactional: true,
      records,
    });
    const b = decodeRecordBatch(buf);
    expect(b).to.include({
      baseOffset: 1234,
      lastOffset: 1237,
      lastOffsetDelta: 3,
      partitionLeaderEpoch: 7,
      magic: 2,
      producerId: 99,
      producerEpoch: 3,
      baseSequence: 42,
      recordCount: 4,
      baseTimestampMs: 5_000,
      maxTimestampMs: 2 ** 45,
      sizeBytes: buf.length,
      transactional: true,
      control: false,
    });
    expect(b.records.map((r) => r.offset)).to.deep.equal([1234, 1235, 1236, 1237]);
    expect(b.records.map((r) => r.timestampMs)).to.deep.equal([5_000, 4_000, 2 ** 45, 0]);
    expect(b.records[0]!.key!.toString()).to.equal('a');
    expect(b.records[0]!.headers).to.deep.equal([{ key: 'trace', value: Buffer.from('t1') }]);
    expect(b.records[1]!.key).to.equal(null);
    expect(b.records[2]!.value).to.equal(null);
    expect(b.records[2]!.headers).to.deep.equal([{ key: 'ü-utf8', value: null }]);
    expect(b.records[3]!.key!.length).to.equal(0);
    expect(b.records[3]!.value!.length).to.equal(0);
  });

  it('defaults: no producer, no epoch, base offset 0; validateRecordBatch gives the same header', () => {
    const buf = encodeRecordBatch({ records: [{ value: Buffer.from('x'), timestampMs: 1 }] });
    const h = validateRecordBatch(buf);
    expect(h).to.include({ baseOffset: 0, partitionLeaderEpoch: -1, producerId: -1, producerEpoch: -1, baseSequence: -1, recordCount: 1 });
    expect(readBatchHeader(buf)).to.include({ baseOffset: 0, sizeBytes: buf.length, crc: h.crc });
  });

  it('a record set of several batches splits and decodes batch by batch', () => {
    const a = encodeRecordBatch({ baseOffset: 0, records: records.slice(0, 2) });
    const b = encodeRecordBatch({ baseOffset: 2, records: records.slice(2) });
    expect(splitBatches(Buffer.concat([a, b])).map((s) => s.length)).to.deep.equal([a.length, b.length]);
    expect(decodeRecordBatches(Buffer.concat([a, b])).map((x) => x.baseOffset)).to.deep.equal([0, 2]);
  });

  it('stamping offset and epoch (what a leader does) keeps the CRC valid: neither is covered', () => {
    const buf = encodeRecordBatch({ records });
    stampBatch(buf, 0, 5_000_000_000, 12);
    const b = decodeRecordBatch(buf);
    expect(b.baseOffset).to.equal(5_000_000_000);
    expect(b.partitionLeaderEpoch).to.equal(12);
    expect(b.records[3]!.offset).to.equal(5_000_000_003);
  });

  it('log append time (what a leader of a LogAppendTime topic does): bit set, CRC valid, every record reads the append time', () => {
    const buf = encodeRecordBatch({ records });
    const before = decodeRecordBatch(buf);
    expect(before.logAppendTime).to.equal(false);
    const appendTimeMs = records[0]!.timestampMs + 123_456;
    setLogAppendTime(buf, 0, buf.length, appendTimeMs);
    const b = decodeRecordBatch(buf);
    expect(b.logAppendTime).to.equal(true);
    expect(b.attributes & ATTRIBUTE_TIMESTAMP_TYPE).to.equal(ATTRIBUTE_TIMESTAMP_TYPE);
    expect(b.maxTimestampMs).to.equal(appendTimeMs);
    expect(b.baseTimestampMs).to.equal(before.baseTimestampMs);
    expect(b.records.map((r) => r.timestampMs)).to.deep.equal(records.map(() => appendTimeMs));
    expect(b.records.map((r) => r.value)).to.deep.equal(before.records.map((r) => r.value));
    expect(validateRecordBatch(buf).maxTimestampMs).to.equal(appendTimeMs);
    // The append time is checked like any timestamp.
    expectThrowsFlotilla(() => decodeRecordBatch(withField(buf, (x) => x.writeBigInt64BE(-5n, 35))), 'INVALID_RECORD');
    expect(() => setLogAppendTime(Buffer.from(buf), 0, buf.length, -1)).to.throw(RangeError);
  });

  it('CRC: flipping any single byte after the CRC field is CORRUPT_RECORD', () => {
    const good = encodeRecordBatch({ records });
    for (let i = 21; i < good.length; i++) {
      const bad = Buffer.from(good);
      bad[i] ^= 0x01;
      const e = expectThrowsFlotilla(() => decodeRecordBatch(bad), 'CORRUPT_RECORD');
      expect(e.retriable).to.equal(true);
    }
    const badCrc = Buffer.from(good);
    badCrc.writeUInt32BE((badCrc.readUInt32BE(17) ^ 0x80000000) >>> 0, 17);
    expect(expectThrowsFlotilla(() => decodeRecordBatch(badCrc), 'CORRUPT_RECORD').message).to.match(/CRC32C mismatch/);
  });

  it('framing: a torn batch, a short header, a wrong magic or trailing bytes are CORRUPT_RECORD', () => {
    const good = encodeRecordBatch({ records });
    expectThrowsFlotilla(() => decodeRecordBatch(good.subarray(0, good.length - 1)), 'CORRUPT_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(good.subarray(0, BATCH_HEADER_BYTES - 1)), 'CORRUPT_RECORD');
    expectThrowsFlotilla(() => splitBatches(Buffer.concat([good, good.subarray(0, 30)])), 'CORRUPT_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(Buffer.concat([good, Buffer.from([0])])), 'CORRUPT_RECORD');
    const magic = Buffer.from(good);
    magic[16] = 1;
    expectThrowsFlotilla(() => decodeRecordBatch(magic), 'CORRUPT_RECORD');
    const negativeLength = Buffer.from(good);
    negativeLength.writeInt32BE(-5, 8);
    expectThrowsFlotilla(() => decodeRecordBatch(negativeLength), 'CORRUPT_RECORD');
  });

  /** Re-encodes a header field and fixes the CRC, to reach the rule checks behind it. */
  function withField(buf: Buffer, edit: (b: Buffer) => void): Buffer {
    const out = Buffer.from(buf);
    edit(out);
    out.writeUInt32BE(crc32c(out.subarray(21)), 17);
    return out;
  }

  it('rules: compression, unknown attributes, count/delta mismatch, wrong max timestamp are INVALID_RECORD', () => {
    const good = encodeRecordBatch({ records });
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeInt16BE(1, 21))), 'INVALID_RECORD'); // gzip
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeInt16BE(0x100, 21))), 'INVALID_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeInt32BE(2, 23))), 'INVALID_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeInt32BE(5, 57))), 'INVALID_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeBigInt64BE(7n, 35))), 'INVALID_RECORD');
    expectThrowsFlotilla(() => decodeRecordBatch(withField(good, (b) => b.writeInt32BE(2 ** 30, 57))), 'INVALID_RECORD');
  });

  it('validateRecordBatch (the append path, which skips fields without viewing them) refuses the malformed records decode refuses', () => {
    const one = encodeRecordBatch({ records: [{ key: Buffer.from('k'), value: Buffer.from('v'), headers: [{ key: 'h', value: Buffer.from('x') }], timestampMs: 1 }] });
    // Record fields from byte 61: length, attributes, timestamp delta, offset delta, key length
    // (65), key, value length (67), value, header count, header key length (70), ...
    expect(validateRecordBatch(one).recordCount).to.equal(1);
    const bad = {
      'key runs past its record': (b: Buffer) => b.writeUInt8(0x7e, 65),
      'value runs past its record': (b: Buffer) => b.writeUInt8(0x7e, 67),
      'null header key': (b: Buffer) => b.writeUInt8(0x01, 70),
      'negative key length': (b: Buffer) => b.writeUInt8(0x03, 65),
    };
    for (const edit of Object.values(bad)) {
      const buf = withField(one, edit);
      expectThrowsFlotilla(() => decodeRecordBatch(buf), 'INVALID_RECORD');
      expectThrowsFlotilla(() => validateRecordBatch(buf), 'INVALID_RECORD');
    }
  });

  it('encode refuses input the log would refuse: no records, bad timestamps, bad fields', () => {
    expectThrowsFlotilla(() => encodeRecordBatch({ records: [] }), 'INVALID_RECORD');
    expectThrowsFlotilla(() => encodeRecordBatch({ records: [{ value: null, timestampMs: -1 }] }), 'INVALID_RECORD');
    expectThrowsFlotilla(() => encodeRecordBatch({ records: [{ value: null, timestampMs: 1.5 }] }), 'INVALID_RECORD');
    expectThrowsFlotilla(() => encodeRecordBatch({ records: [{ value: null, timestampMs: 2 ** 51 }] }), 'INVALID_RECORD');
    expectThrowsFlotilla(() => encodeRecordBatch({ producerEpoch: 40_000, records: [{ value: null, timestampMs: 1 }] }), 'INVALID_RECORD');
    expectThrowsFlotilla(
      () => encodeRecordBatch({ records: [{ value: 'text' as unknown as Buffer, timestampMs: 1 }] }),
      'INVALID_RECORD',
    );
  });
});
