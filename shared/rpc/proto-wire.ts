import { FlotillaError } from '../errors/error-codes';

// Protobuf (proto3) wire primitives for the hand-written codecs of the hot data-plane messages
// (broker/replica/replicate-codec.ts, shared/rpc/produce-codec.ts): exact sizing, then one
// buffer written once; readers that take fields in any order, skip unknown ones, and hand
// `bytes` fields out as slices of the received buffer (no copy). What they write is plain
// protobuf that any decoder of the .proto reads.
//
// Numbers: int64/uint64 fields hold safe integers (offsets, epochs, ids); a value outside
// that range is refused as malformed (INVALID_REQUEST). Negative int32/int64 values are
// ten-byte varints, as proto3 encodes them. Fields equal to their default are not written.


export const VARINT = 0;
export const I64 = 1;
export const LEN = 2;
export const I32 = 5;
const TWO_32 = 0x1_0000_0000;

function varintSize(n: number): number {
  if (n < 0) return 10;
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

export const tagSize = (field: number): number => varintSize(field << 3);
/** A varint field; proto3 leaves zero out. */
export const numSize = (field: number, n: number): number => (n === 0 ? 0 : tagSize(field) + varintSize(n));
export const lenSize = (field: number, len: number): number => tagSize(field) + varintSize(len) + len;
export const strSize = (field: number, s: string): number => (s === '' ? 0 : lenSize(field, Buffer.byteLength(s)));

export class Writer {
  pos = 0;
  constructor(readonly buf: Buffer) {}

  varint(n: number): void {
    const buf = this.buf;
    if (n >= 0 && n < 128) {
      buf[this.pos++] = n;
      return;
    }
    let lo: number;
    let hi: number;
    if (n >= 0) {
      lo = n % TWO_32 >>> 0;
      hi = Math.floor(n / TWO_32) >>> 0;
    } else {
      // Two's complement over 64 bits, as a lo/hi pair of unsigned 32-bit words.
      const m = -n;
      lo = m % TWO_32 >>> 0;
      hi = Math.floor(m / TWO_32) >>> 0;
      hi = ~hi >>> 0;
      lo = ~lo >>> 0;
      lo = (lo + 1) >>> 0;
      if (lo === 0) hi = (hi + 1) >>> 0;
    }
    while (hi > 0 || lo >= 128) {
      buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    buf[this.pos++] = lo;
  }
  tag(field: number, wire: number): void {
    this.varint((field << 3) | wire);
  }
  num(field: number, n: number): void {
    if (n === 0) return;
    this.tag(field, VARINT);
    this.varint(n);
  }
  str(field: number, s: string): void {
    if (s === '') return;
    this.tag(field, LEN);
    this.varint(Buffer.byteLength(s));
    this.pos += this.buf.write(s, this.pos);
  }
  bytes(field: number, b: Buffer): void {
    if (b.length === 0) return;
    this.tag(field, LEN);
    this.varint(b.length);
    this.pos += b.copy(this.buf, this.pos);
  }
  /** Starts an embedded message of known size. */
  sub(field: number, size: number): void {
    this.tag(field, LEN);
    this.varint(size);
  }
}

export class Reader {
  pos: number;
  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  /** A varint as a safe integer (negative for ten-byte two's complement encodings). */
  varint(): number {
    const buf = this.buf;
    let lo = 0;
    let hi = 0;
    let shift = 0;
    let b: number;
    // Low 28 bits, then the rest into hi/lo as protobuf does.
    for (;;) {
      if (this.pos >= this.end) throw malformed('truncated varint');
      b = buf[this.pos++]!;
      if (shift < 28) {
        lo |= (b & 0x7f) << shift;
      } else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >>> 4;
      } else {
        if (shift >= 70) throw malformed('varint too long');
        hi |= (b & 0x7f) << (shift - 32);
      }
      shift += 7;
      if ((b & 0x80) === 0) break;
    }
    lo >>>= 0;
    hi >>>= 0;
    if (hi & 0x80000000) {
      const v = (hi | 0) * TWO_32 + lo;
      if (!Number.isSafeInteger(v)) throw malformed('integer out of range');
      return v;
    }
    if (hi >= 0x200000) throw malformed('integer out of range');
    return hi * TWO_32 + lo;
  }
  int32(): number {
    return this.varint() | 0;
  }
  len(): number {
    const n = this.varint();
    if (n < 0 || this.pos + n > this.end) throw malformed('length past the end');
    return n;
  }
  str(): string {
    const n = this.len();
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  bytes(): Buffer {
    const n = this.len();
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  sub(): Reader {
    const n = this.len();
    const r = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
  skip(wire: number): void {
    if (wire === VARINT) this.varint();
    else if (wire === I64) this.pos += 8;
    else if (wire === LEN) {
      const n = this.len(); // before `this.pos +=`: len() moves pos past the length itself
      this.pos += n;
    }
    else if (wire === I32) this.pos += 4;
    else throw malformed(`wire type ${wire}`);
    if (this.pos > this.end) throw malformed('field past the end');
  }
}

export function malformed(what: string): FlotillaError {
  return new FlotillaError('INVALID_REQUEST', `malformed protobuf message: ${what}`);
}

/** Reads fields until the end; `on` returns false for a field it does not know (skipped). */
export function readFields(r: Reader, on: (field: number, wire: number) => boolean): void {
  while (r.pos < r.end) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (!on(field, wire)) r.skip(wire);
  }
}

