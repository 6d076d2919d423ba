import { FlotillaError } from '../errors/error-codes';
import { crc32c } from './crc32c';

// The record batch: the unit a producer sends, the log stores and a fetch returns, byte for
// byte. The layout is Kafka's RecordBatch v2 (https://kafka.apache.org/documentation/#recordbatch)
// so that the leader can stamp offsets and its epoch without touching the CRC, with Flotilla's
// own, stricter rules (checked by decodeRecordBatch, listed in broker/log/README.md):
// no compression yet, at least one record, offset deltas exactly 0..n-1 (the log has no
// compaction gaps), timestamps in [0, 2^51) ms, maxTimestamp equal to the largest record
// timestamp — unless the timestamp-type bit says log append time: then the broker wrote its
// append time into maxTimestamp (topic config message.timestamp.type=LogAppendTime), and that
// is every record's timestamp. All integers are big-endian.
//
//   offset size field
//    0     8   baseOffset             int64  first offset of the batch (stamped by the leader)
//    8     4   batchLength            int32  bytes after this field (batch size - 12)
//   12     4   partitionLeaderEpoch   int32  epoch of the leader that appended it (stamped)
//   16     1   magic                  int8   = 2
//   17     4   crc                    uint32 CRC32C of every byte from offset 21 to the end
//   21     2   attributes             int16  bits 0-2 compression (0 = none), bit 3 timestamp
//                                            type (0 = create time, 1 = log append time:
//                                            set by the leader only), bit 4 transactional,
//                                            bit 5 control (4 and 5 reserved: carried, unused)
//   23     4   lastOffsetDelta        int32  recordCount - 1
//   27     8   baseTimestamp          int64  the first record's timestamp (ms)
//   35     8   maxTimestamp           int64  the largest record timestamp (ms)
//   43     8   producerId             int64  -1 = none (idempotence comes later)
//   51     2   producerEpoch          int16  -1 = none
//   53     4   baseSequence           int32  -1 = none
//   57     4   recordCount            int32
//   61     ... records
//
// A record (varints are zigzag, as protobuf sint32/sint64):
//   length varint (bytes after it) | attributes int8 (0) | timestampDelta varlong |
//   offsetDelta varint | keyLength varint (-1 = null) | key | valueLength varint (-1 = null) |
//   value | headerCount varint | headers: keyLength varint, key (UTF-8), valueLength varint
//   (-1 = null), value
//
// Errors: bytes that do not frame or fail the CRC are CORRUPT_RECORD (retriable: resend);
// a batch whose CRC holds but that breaks a rule above is INVALID_RECORD (a client bug).
// Everything here is pure: no I/O, no clock.

export const BATCH_HEADER_BYTES = 61;
/** Bytes before batchLength's count starts: baseOffset + batchLength. */
export const BATCH_LOG_OVERHEAD_BYTES = 12;
export const RECORD_BATCH_MAGIC = 2;
/** Timestamps are ms since the epoch in [0, 2^51): deltas then stay exact in a double. */
export const MAX_TIMESTAMP_MS = 2 ** 51 - 1;
export const NO_PRODUCER_ID = -1;
export const NO_PRODUCER_EPOCH = -1;
export const NO_SEQUENCE = -1;
export const NO_PARTITION_LEADER_EPOCH = -1;

const INT32_MAX = 0x7fffffff;
const CRC_OFFSET = 17;
const CRC_COVERS_FROM = 21;

export const ATTRIBUTE_COMPRESSION_MASK = 0x07;
export const ATTRIBUTE_TIMESTAMP_TYPE = 0x08;
export const ATTRIBUTE_TRANSACTIONAL = 0x10;
export const ATTRIBUTE_CONTROL = 0x20;
const KNOWN_ATTRIBUTES = ATTRIBUTE_COMPRESSION_MASK | ATTRIBUTE_TIMESTAMP_TYPE | ATTRIBUTE_TRANSACTIONAL | ATTRIBUTE_CONTROL;

export interface RecordHeader {
  readonly key: string;
  readonly value: Buffer | null;
}

/** A record to put in a batch. */
export interface RecordInput {
  readonly key?: Buffer | null;
  readonly value: Buffer | null;
  readonly headers?: readonly RecordHeader[];
  readonly timestampMs: number;
}

/** What a batch is built from; everything but the records has a "none" default. */
export interface RecordBatchInput {
  /** Default 0: a leader stamps the real offset on append. */
  readonly baseOffset?: number;
  /** Default -1: a leader stamps its epoch on append. */
  readonly partitionLeaderEpoch?: number;
  readonly producerId?: number;
  readonly producerEpoch?: number;
  readonly baseSequence?: number;
  /** Reserved for transactions: carried in the attributes, not interpreted yet. */
  readonly transactional?: boolean;
  /** Reserved for control batches (transaction markers): carried, not interpreted yet. */
  readonly control?: boolean;
  readonly records: readonly RecordInput[];
}

/** The fixed-size header of a batch, readable without checking the CRC. */
export interface RecordBatchHeader {
  readonly baseOffset: number;
  /** baseOffset + lastOffsetDelta. */
  readonly lastOffset: number;
  /** The whole batch on disk and on the wire: batchLength + 12. */
  readonly sizeBytes: number;
  readonly partitionLeaderEpoch: number;
  readonly magic: number;
  readonly crc: number;
  readonly attributes: number;
  readonly lastOffsetDelta: number;
  readonly baseTimestampMs: number;
  readonly maxTimestampMs: number;
  readonly producerId: number;
  readonly producerEpoch: number;
  readonly baseSequence: number;
  readonly recordCount: number;
}

export interface LogRecord {
  readonly offset: number;
  readonly timestampMs: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly headers: readonly RecordHeader[];
}

export interface RecordBatch extends RecordBatchHeader {
  /** maxTimestampMs is the leader's append time, and every record's timestamp is it. */
  readonly logAppendTime: boolean;
  readonly transactional: boolean;
  readonly control: boolean;
  readonly records: readonly LogRecord[];
}

// ---- varints (zigzag), exact for |v| <= 2^52 using double arithmetic ----

function zigzag(v: number): number {
  return v >= 0 ? v * 2 : -v * 2 - 1;
}

function varintBytes(v: number): number {
  let u = zigzag(v);
  let n = 1;
  while (u >= 128) {
    u = Math.floor(u / 128);
    n++;
  }
  return n;
}

function writeVarint(buf: Buffer, pos: number, v: number): number {
  let u = zigzag(v);
  while (u >= 128) {
    buf[pos++] = (u % 128) | 0x80;
    u = Math.floor(u / 128);
  }
  buf[pos++] = u;
  return pos;
}

/** A read position over one record region; throws INVALID_RECORD when it runs out. */
class Cursor {
  constructor(
    private readonly buf: Buffer,
    public pos: number,
    private readonly end: number,
    private readonly baseOffset: number,
  ) {}

  varint(what: string): number {
    let u = 0;
    let mult = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail(`${what} runs past the end of the batch`);
      const b = this.buf[this.pos++]!;
      u += (b & 0x7f) * mult;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(u)) this.fail(`${what} is out of range`);
        return u % 2 === 0 ? u / 2 : -(u + 1) / 2;
      }
      mult *= 128;
    }
    return this.fail(`${what} is a varint longer than 10 bytes`);
  }

  int8(what: string): number {
    if (this.pos >= this.end) this.fail(`${what} runs past the end of the batch`);
    return this.buf.readInt8(this.pos++);
  }

  bytes(length: number, what: string): Buffer {
    if (length < 0 || this.pos + length > this.end) this.fail(`${what} of ${length} bytes runs past the end of its record`);
    const out = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  /** bytes() without making the view (validation only). */
  skip(length: number, what: string): void {
    if (length < 0 || this.pos + length > this.end) this.fail(`${what} of ${length} bytes runs past the end of its record`);
    this.pos += length;
  }

  fail(why: string): never {
    throw new FlotillaError('INVALID_RECORD', `record batch at offset ${this.baseOffset}: ${why}`, { baseOffset: this.baseOffset });
  }
}

// ---- encode ----

function invalid(why: string): never {
  throw new FlotillaError('INVALID_RECORD', why);
}

function checkInt(v: number, min: number, max: number, what: string): number {
  if (!Number.isSafeInteger(v) || v < min || v > max) invalid(`${what} must be an integer in [${min}, ${max}], got ${v}`);
  return v;
}

function recordBodyBytes(r: RecordInput, tsDelta: number, offsetDelta: number): number {
  let n = 1 + varintBytes(tsDelta) + varintBytes(offsetDelta);
  const key = r.key ?? null;
  n += key === null ? varintBytes(-1) : varintBytes(key.length) + key.length;
  n += r.value === null ? varintBytes(-1) : varintBytes(r.value.length) + r.value.length;
  const headers = r.headers ?? [];
  n += varintBytes(headers.length);
  for (const h of headers) {
    const k = Buffer.byteLength(h.key, 'utf8');
    n += varintBytes(k) + k;
    n += h.value === null ? varintBytes(-1) : varintBytes(h.value.length) + h.value.length;
  }
  return n;
}

/**
 * Builds one batch (what a producer does). Throws INVALID_RECORD for input the log would
 * refuse, RECORD_TOO_LARGE when the batch cannot be framed in an int32.
 */
export function encodeRecordBatch(input: RecordBatchInput): Buffer {
  const records = input.records;
  if (records.length === 0) invalid('a record batch needs at least one record');
  if (records.length > INT32_MAX) invalid('too many records in one batch');
  const baseOffset = checkInt(input.baseOffset ?? 0, 0, Number.MAX_SAFE_INTEGER - records.length, 'baseOffset');
  const epoch = checkInt(input.partitionLeaderEpoch ?? NO_PARTITION_LEADER_EPOCH, -1, INT32_MAX, 'partitionLeaderEpoch');
  const producerId = checkInt(input.producerId ?? NO_PRODUCER_ID, -1, Number.MAX_SAFE_INTEGER, 'producerId');
  const producerEpoch = checkInt(input.producerEpoch ?? NO_PRODUCER_EPOCH, -1, 0x7fff, 'producerEpoch');
  const baseSequence = checkInt(input.baseSequence ?? NO_SEQUENCE, -1, INT32_MAX, 'baseSequence');
  const baseTimestampMs = records[0]!.timestampMs;
  let maxTimestampMs = -1;
  let size = BATCH_HEADER_BYTES;
  const bodies: number[] = [];
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    checkInt(r.timestampMs, 0, MAX_TIMESTAMP_MS, `record ${i} timestampMs`);
    if (r.value !== null && !Buffer.isBuffer(r.value)) invalid(`record ${i} value must be a Buffer or null`);
    if (r.key != null && !Buffer.isBuffer(r.key)) invalid(`record ${i} key must be a Buffer or null`);
    for (const h of r.headers ?? []) {
      if (typeof h.key !== 'string') invalid(`record ${i} has a header whose key is not a string`);
      if (h.value !== null && !Buffer.isBuffer(h.value)) invalid(`record ${i} header "${h.key}" value must be a Buffer or null`);
    }
    maxTimestampMs = Math.max(maxTimestampMs, r.timestampMs);
    const body = recordBodyBytes(r, r.timestampMs - baseTimestampMs, i);
    bodies.push(body);
    size += varintBytes(body) + body;
  }
  if (size - BATCH_LOG_OVERHEAD_BYTES > INT32_MAX) {
    throw new FlotillaError('RECORD_TOO_LARGE', `a record batch of ${size} bytes cannot be framed (int32 length)`, { sizeBytes: size });
  }
  let attributes = 0;
  if (input.transactional === true) attributes |= ATTRIBUTE_TRANSACTIONAL;
  if (input.control === true) attributes |= ATTRIBUTE_CONTROL;

  const buf = Buffer.allocUnsafe(size);
  buf.writeBigInt64BE(BigInt(baseOffset), 0);
  buf.writeInt32BE(size - BATCH_LOG_OVERHEAD_BYTES, 8);
  buf.writeInt32BE(epoch, 12);
  buf.writeInt8(RECORD_BATCH_MAGIC, 16);
  buf.writeInt16BE(attributes, 21);
  buf.writeInt32BE(records.length - 1, 23);
  buf.writeBigInt64BE(BigInt(baseTimestampMs), 27);
  buf.writeBigInt64BE(BigInt(maxTimestampMs), 35);
  buf.writeBigInt64BE(BigInt(producerId), 43);
  buf.writeInt16BE(producerEpoch, 51);
  buf.writeInt32BE(baseSequence, 53);
  buf.writeInt32BE(records.length, 57);
  let pos = BATCH_HEADER_BYTES;
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    pos = writeVarint(buf, pos, bodies[i]!);
    buf[pos++] = 0;
    pos = writeVarint(buf, pos, r.timestampMs - baseTimestampMs);
    pos = writeVarint(buf, pos, i);
    pos = writeBytes(buf, pos, r.key ?? null);
    pos = writeBytes(buf, pos, r.value);
    const headers = r.headers ?? [];
    pos = writeVarint(buf, pos, headers.length);
    for (const h of headers) {
      pos = writeBytes(buf, pos, Buffer.from(h.key, 'utf8'));
      pos = writeBytes(buf, pos, h.value);
    }
  }
  if (pos !== size) throw new Error(`record batch encoder wrote ${pos} of ${size} bytes`);
  buf.writeUInt32BE(crc32c(buf.subarray(CRC_COVERS_FROM)), CRC_OFFSET);
  return buf;
}

function writeBytes(buf: Buffer, pos: number, bytes: Buffer | null): number {
  if (bytes === null) return writeVarint(buf, pos, -1);
  pos = writeVarint(buf, pos, bytes.length);
  bytes.copy(buf, pos);
  return pos + bytes.length;
}

// ---- header, framing and CRC ----

function safeInt64(buf: Buffer, pos: number): number | undefined {
  const v = buf.readBigInt64BE(pos);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

/**
 * Reads the header of the batch starting at `pos` without trusting it: returns a string
 * saying why the bytes cannot be a batch header (fewer than 61 bytes before `end`, bad
 * length, unknown magic, nonsense offsets), or the header. Whether the rest of the batch
 * (header.sizeBytes from `pos`) is present is the caller's check: a file reader knows the
 * file size, not just the bytes it has read. Used where a bad tail is an expected case
 * (recovery) rather than an error.
 */
export function tryReadBatchHeader(buf: Buffer, pos: number, end = buf.length): RecordBatchHeader | string {
  if (end - pos < BATCH_HEADER_BYTES) return `${end - pos} bytes left, less than a batch header (${BATCH_HEADER_BYTES})`;
  const baseOffset = safeInt64(buf, pos);
  const batchLength = buf.readInt32BE(pos + 8);
  const magic = buf.readInt8(pos + 16);
  if (baseOffset === undefined || baseOffset < 0) return 'base offset is negative or beyond 2^53';
  if (batchLength < BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) return `batch length ${batchLength} is shorter than a header`;
  const sizeBytes = batchLength + BATCH_LOG_OVERHEAD_BYTES;
  if (magic !== RECORD_BATCH_MAGIC) return `magic ${magic} is not ${RECORD_BATCH_MAGIC}`;
  const lastOffsetDelta = buf.readInt32BE(pos + 23);
  const recordCount = buf.readInt32BE(pos + 57);
  const baseTimestampMs = safeInt64(buf, pos + 27);
  const maxTimestampMs = safeInt64(buf, pos + 35);
  const producerId = safeInt64(buf, pos + 43);
  if (lastOffsetDelta < 0 || baseOffset + lastOffsetDelta > Number.MAX_SAFE_INTEGER) return `last offset delta ${lastOffsetDelta} is out of range`;
  if (baseTimestampMs === undefined || maxTimestampMs === undefined || producerId === undefined) return 'a timestamp or the producer id is beyond 2^53';
  return {
    baseOffset,
    lastOffset: baseOffset + lastOffsetDelta,
    sizeBytes,
    partitionLeaderEpoch: buf.readInt32BE(pos + 12),
    magic,
    crc: buf.readUInt32BE(pos + CRC_OFFSET),
    attributes: buf.readInt16BE(pos + 21),
    lastOffsetDelta,
    baseTimestampMs,
    maxTimestampMs,
    producerId,
    producerEpoch: buf.readInt16BE(pos + 51),
    baseSequence: buf.readInt32BE(pos + 53),
    recordCount,
  };
}

/** The header of the whole batch at `pos`; CORRUPT_RECORD when it does not frame. */
export function readBatchHeader(buf: Buffer, pos = 0, end = buf.length): RecordBatchHeader {
  const h = tryReadBatchHeader(buf, pos, end);
  if (typeof h === 'string') throw new FlotillaError('CORRUPT_RECORD', `record batch at byte ${pos}: ${h}`, { position: pos });
  if (end - pos < h.sizeBytes) {
    throw new FlotillaError('CORRUPT_RECORD', `record batch at byte ${pos}: ${h.sizeBytes} bytes, only ${end - pos} present (torn)`, {
      position: pos,
    });
  }
  return h;
}

/** True when the CRC32C stored in the batch at `pos` matches its bytes. */
export function batchCrcMatches(buf: Buffer, pos: number, header: RecordBatchHeader): boolean {
  return crc32c(buf.subarray(pos + CRC_COVERS_FROM, pos + header.sizeBytes)) === header.crc;
}

/** Header + CRC check of the batch at `pos` (what a read does): CORRUPT_RECORD on failure. */
export function checkBatch(buf: Buffer, pos = 0, end = buf.length): RecordBatchHeader {
  const h = readBatchHeader(buf, pos, end);
  if (!batchCrcMatches(buf, pos, h)) {
    const actual = crc32c(buf.subarray(pos + CRC_COVERS_FROM, pos + h.sizeBytes));
    throw new FlotillaError(
      'CORRUPT_RECORD',
      `record batch at offset ${h.baseOffset}: CRC32C mismatch (stored ${hex(h.crc)}, computed ${hex(actual)})`,
      { baseOffset: h.baseOffset, storedCrc: h.crc, computedCrc: actual },
    );
  }
  return h;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}

/**
 * Splits a record set (batches back to back, as in a produce or fetch) into one slice per
 * batch, checking framing only. CORRUPT_RECORD when the bytes do not end on a batch boundary.
 */
export function splitBatches(buf: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const h = readBatchHeader(buf, pos);
    out.push(buf.subarray(pos, pos + h.sizeBytes));
    pos += h.sizeBytes;
  }
  return out;
}

// ---- decode (full validation) ----

/**
 * Decodes exactly one batch with every check: framing and CRC (CORRUPT_RECORD), then the
 * rules of the log (INVALID_RECORD). This is what the log runs on every batch it appends.
 */
export function decodeRecordBatch(buf: Buffer): RecordBatch {
  return walkBatch(buf, true);
}

/**
 * The same checks as decodeRecordBatch without building the records: what an append runs.
 * Returns the header.
 */
export function validateRecordBatch(buf: Buffer): RecordBatchHeader {
  return walkBatch(buf, false);
}

function walkBatch(buf: Buffer, materialize: boolean): RecordBatch {
  const h = checkBatch(buf, 0);
  if (h.sizeBytes !== buf.length) {
    throw new FlotillaError('CORRUPT_RECORD', `record batch of ${h.sizeBytes} bytes followed by ${buf.length - h.sizeBytes} more bytes`, {
      baseOffset: h.baseOffset,
    });
  }
  const c: Cursor = new Cursor(buf, BATCH_HEADER_BYTES, buf.length, h.baseOffset);
  if ((h.attributes & ~KNOWN_ATTRIBUTES) !== 0) c.fail(`unknown attribute bits 0x${h.attributes.toString(16)}`);
  const compression = h.attributes & ATTRIBUTE_COMPRESSION_MASK;
  if (compression !== 0) c.fail(`compression type ${compression} is not supported (only 0 = none)`);
  const logAppendTime = (h.attributes & ATTRIBUTE_TIMESTAMP_TYPE) !== 0;
  if (logAppendTime && (h.maxTimestampMs < 0 || h.maxTimestampMs > MAX_TIMESTAMP_MS)) c.fail(`log append time ${h.maxTimestampMs} is out of range`);
  if (h.recordCount < 1) c.fail(`record count ${h.recordCount}: a batch holds at least one record`);
  if (h.lastOffsetDelta !== h.recordCount - 1) c.fail(`last offset delta ${h.lastOffsetDelta} with ${h.recordCount} records`);
  // Each record takes at least 7 bytes: refuse a count the bytes cannot hold before allocating.
  if (h.recordCount > (buf.length - BATCH_HEADER_BYTES) / 7) c.fail(`record count ${h.recordCount} cannot fit in ${buf.length} bytes`);
  if (h.baseTimestampMs < 0 || h.baseTimestampMs > MAX_TIMESTAMP_MS) c.fail(`base timestamp ${h.baseTimestampMs} is out of range`);
  if (h.partitionLeaderEpoch < -1) c.fail(`partition leader epoch ${h.partitionLeaderEpoch} is negative`);

  const records: LogRecord[] = [];
  let maxTimestampMs = -1;
  for (let i = 0; i < h.recordCount; i++) {
    const length = c.varint('record length');
    if (length < 1) c.fail(`record ${i} has length ${length}`);
    const recordEnd = c.pos + length;
    if (recordEnd > buf.length) c.fail(`record ${i} of ${length} bytes runs past the end of the batch`);
    const rc: Cursor = new Cursor(buf, c.pos, recordEnd, h.baseOffset);
    rc.int8('record attributes');
    const timestampMs = h.baseTimestampMs + rc.varint('timestamp delta');
    const offsetDelta = rc.varint('offset delta');
    if (offsetDelta !== i) c.fail(`record ${i} has offset delta ${offsetDelta} (deltas must be 0..n-1)`);
    if (timestampMs < 0 || timestampMs > MAX_TIMESTAMP_MS) c.fail(`record ${i} timestamp ${timestampMs} is out of range`);
    // Validation only (an append): the same checks without a view per field.
    const key = materialize ? nullableBytes(rc, 'key') : skipNullableBytes(rc, 'key');
    const value = materialize ? nullableBytes(rc, 'value') : skipNullableBytes(rc, 'value');
    const headerCount = rc.varint('header count');
    if (headerCount < 0 || headerCount > length) c.fail(`record ${i} has ${headerCount} headers`);
    const headers: RecordHeader[] = [];
    for (let j = 0; j < headerCount; j++) {
      if (!materialize) {
        if (skipNullableBytes(rc, 'header key') === null) c.fail(`record ${i} header ${j} has a null key`);
        skipNullableBytes(rc, 'header value');
        continue;
      }
      const k = nullableBytes(rc, 'header key');
      if (k === null) c.fail(`record ${i} header ${j} has a null key`);
      const v = nullableBytes(rc, 'header value');
      headers.push({ key: k.toString('utf8'), value: v });
    }
    if (rc.pos !== recordEnd) c.fail(`record ${i} declares ${length} bytes but its fields take ${rc.pos - c.pos}`);
    c.pos = recordEnd;
    maxTimestampMs = Math.max(maxTimestampMs, timestampMs);
    if (materialize) records.push({ offset: h.baseOffset + i, timestampMs: logAppendTime ? h.maxTimestampMs : timestampMs, key: key ?? null, value: value ?? null, headers });
  }
  if (c.pos !== buf.length) c.fail(`${buf.length - c.pos} bytes after the last record`);
  if (!logAppendTime && maxTimestampMs !== h.maxTimestampMs) c.fail(`max timestamp ${h.maxTimestampMs} is not the largest record timestamp ${maxTimestampMs}`);
  return {
    ...h,
    logAppendTime,
    transactional: (h.attributes & ATTRIBUTE_TRANSACTIONAL) !== 0,
    control: (h.attributes & ATTRIBUTE_CONTROL) !== 0,
    records,
  };
}

function nullableBytes(c: Cursor, what: string): Buffer | null {
  const n = c.varint(`${what} length`);
  if (n === -1) return null;
  if (n < -1) c.fail(`${what} length ${n}`);
  return c.bytes(n, what);
}

/** nullableBytes for validation: null, or undefined for present bytes (skipped, not viewed). */
function skipNullableBytes(c: Cursor, what: string): null | undefined {
  const n = c.varint(`${what} length`);
  if (n === -1) return null;
  if (n < -1) c.fail(`${what} length ${n}`);
  c.skip(n, what);
  return undefined;
}

/** Decodes every batch of a record set (as returned by a log read), fully validated. */
export function decodeRecordBatches(buf: Buffer): RecordBatch[] {
  return splitBatches(buf).map(decodeRecordBatch);
}

/**
 * Writes a new base offset and leader epoch into the batch at `pos`, in place. Neither field
 * is covered by the CRC (that is why the CRC starts at byte 21), so the CRC stays valid.
 */
export function stampBatch(buf: Buffer, pos: number, baseOffset: number, partitionLeaderEpoch: number): void {
  buf.writeBigInt64BE(BigInt(baseOffset), pos);
  buf.writeInt32BE(partitionLeaderEpoch, pos + 12);
}

/**
 * Marks the batch at `pos` (of `sizeBytes`) as carrying log append time: sets the
 * timestamp-type bit, writes `appendTimeMs` as maxTimestamp, and recomputes the CRC (both
 * fields are covered by it). What a leader does to each batch it appends to a topic with
 * message.timestamp.type=LogAppendTime, as Kafka's leader does.
 */
export function setLogAppendTime(buf: Buffer, pos: number, sizeBytes: number, appendTimeMs: number): void {
  if (!Number.isSafeInteger(appendTimeMs) || appendTimeMs < 0 || appendTimeMs > MAX_TIMESTAMP_MS) throw new RangeError(`log append time ${appendTimeMs} is out of range`);
  buf.writeInt16BE(buf.readInt16BE(pos + 21) | ATTRIBUTE_TIMESTAMP_TYPE, pos + 21);
  buf.writeBigInt64BE(BigInt(appendTimeMs), pos + 35);
  buf.writeUInt32BE(crc32c(buf.subarray(pos + CRC_COVERS_FROM, pos + sizeBytes)), pos + 17);
}
