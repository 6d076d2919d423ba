import type * as grpc from '@grpc/grpc-js';
import { LEN, Reader, VARINT, Writer, lenSize, numSize, readFields, strSize } from './proto-wire';

// Hand-written codecs for flotilla.broker.Broker's Produce and ProduceStream messages
// (proto/broker.proto ProduceRequest, ProduceResponse), used by the client and the broker
// alike: record batches go from the producer's buffer into the message once and come out on
// the broker as a slice of the received buffer, without protobufjs's object conversion. The
// bytes are plain protobuf (tested both ways against protobufjs in
// test/broker-replica/replicate-codec.test.ts); the decoded objects have the shape
// @grpc/proto-loader gives (defaults filled in, absent messages null).

export interface WireError {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

export interface ProduceRequestMessage {
  correlationId: number;
  acks: number;
  timeoutMs: number;
  partitions: { topic: string; partition: number; records: Buffer }[];
  transactionalId: string;
}

export interface ProduceResultMessage {
  topic: string;
  partition: number;
  baseOffset: number;
  logAppendTimeMs: number;
  logStartOffset: number;
  error: WireError | null;
}

export interface ProduceResponseMessage {
  correlationId: number;
  results: ProduceResultMessage[];
  error: WireError | null;
}

const EMPTY = Buffer.alloc(0);

// ---- Error (shared by the response messages) ----

function errorSize(e: WireError): number {
  return numSize(1, e.code) + strSize(2, e.name ?? '') + strSize(3, e.message ?? '') + strSize(4, e.detailsJson ?? '');
}

function writeError(w: Writer, field: number, e: WireError): void {
  w.sub(field, errorSize(e));
  w.num(1, e.code);
  w.str(2, e.name ?? '');
  w.str(3, e.message ?? '');
  w.str(4, e.detailsJson ?? '');
}

export function decodeError(r: Reader): WireError {
  const e: WireError = { code: 0, name: '', message: '', detailsJson: '' };
  readFields(r, (field, wire) => {
    if (wire === VARINT && field === 1) e.code = r.int32();
    else if (wire !== LEN) return false;
    else if (field === 2) e.name = r.str();
    else if (field === 3) e.message = r.str();
    else if (field === 4) e.detailsJson = r.str();
    else return false;
    return true;
  });
  return e;
}

// ---- ProduceRequest ----

export function encodeProduceRequest(m: ProduceRequestMessage): Buffer {
  const parts = m.partitions ?? [];
  const sizes = parts.map((p) => strSize(1, p.topic) + numSize(2, p.partition) + (p.records.length > 0 ? lenSize(3, p.records.length) : 0));
  let size = numSize(1, m.correlationId ?? 0) + numSize(2, m.acks ?? 0) + numSize(3, m.timeoutMs ?? 0) + strSize(5, m.transactionalId ?? '');
  for (const s of sizes) size += lenSize(4, s);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.num(1, m.correlationId ?? 0);
  w.num(2, m.acks ?? 0);
  w.num(3, m.timeoutMs ?? 0);
  parts.forEach((p, i) => {
    w.sub(4, sizes[i]!);
    w.str(1, p.topic);
    w.num(2, p.partition);
    w.bytes(3, p.records);
  });
  w.str(5, m.transactionalId ?? '');
  if (w.pos !== size) throw new Error(`ProduceRequest encoded ${w.pos} bytes, sized ${size}`);
  return w.buf;
}

export function decodeProduceRequest(buf: Buffer): ProduceRequestMessage {
  const m: ProduceRequestMessage = { correlationId: 0, acks: 0, timeoutMs: 0, partitions: [], transactionalId: '' };
  const r = new Reader(buf, 0, buf.length);
  readFields(r, (field, wire) => {
    if (wire === VARINT) {
      if (field === 1) m.correlationId = r.varint();
      else if (field === 2) m.acks = r.int32();
      else if (field === 3) m.timeoutMs = r.varint() >>> 0;
      else return false;
    } else if (wire === LEN) {
      if (field === 4) m.partitions.push(decodePartitionRecords(r.sub()));
      else if (field === 5) m.transactionalId = r.str();
      else return false;
    } else return false;
    return true;
  });
  return m;
}

function decodePartitionRecords(r: Reader): { topic: string; partition: number; records: Buffer } {
  const p: { topic: string; partition: number; records: Buffer } = { topic: '', partition: 0, records: EMPTY };
  readFields(r, (field, wire) => {
    if (wire === LEN && field === 1) p.topic = r.str();
    else if (wire === LEN && field === 3) p.records = r.bytes();
    else if (wire === VARINT && field === 2) p.partition = r.int32();
    else return false;
    return true;
  });
  return p;
}

// ---- ProduceResponse ----

function resultSize(x: ProduceResultMessage): number {
  return (
    strSize(1, x.topic) +
    numSize(2, x.partition) +
    numSize(3, x.baseOffset) +
    numSize(4, x.logAppendTimeMs) +
    numSize(5, x.logStartOffset) +
    (x.error ? lenSize(6, errorSize(x.error)) : 0)
  );
}

export function encodeProduceResponse(m: ProduceResponseMessage): Buffer {
  const results = m.results ?? [];
  const sizes = results.map(resultSize);
  let size = numSize(1, m.correlationId ?? 0) + (m.error ? lenSize(3, errorSize(m.error)) : 0);
  for (const s of sizes) size += lenSize(2, s);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.num(1, m.correlationId ?? 0);
  results.forEach((x, i) => {
    w.sub(2, sizes[i]!);
    w.str(1, x.topic);
    w.num(2, x.partition);
    w.num(3, x.baseOffset);
    w.num(4, x.logAppendTimeMs);
    w.num(5, x.logStartOffset);
    if (x.error) writeError(w, 6, x.error);
  });
  if (m.error) writeError(w, 3, m.error);
  if (w.pos !== size) throw new Error(`ProduceResponse encoded ${w.pos} bytes, sized ${size}`);
  return w.buf;
}

export function decodeProduceResponse(buf: Buffer): ProduceResponseMessage {
  const m: ProduceResponseMessage = { correlationId: 0, results: [], error: null };
  const r = new Reader(buf, 0, buf.length);
  readFields(r, (field, wire) => {
    if (wire === VARINT && field === 1) m.correlationId = r.varint();
    else if (wire === LEN && field === 2) m.results.push(decodeResult(r.sub()));
    else if (wire === LEN && field === 3) m.error = decodeError(r.sub());
    else return false;
    return true;
  });
  return m;
}

function decodeResult(r: Reader): ProduceResultMessage {
  const x: ProduceResultMessage = { topic: '', partition: 0, baseOffset: 0, logAppendTimeMs: 0, logStartOffset: 0, error: null };
  readFields(r, (field, wire) => {
    if (wire === LEN) {
      if (field === 1) x.topic = r.str();
      else if (field === 6) x.error = decodeError(r.sub());
      else return false;
    } else if (wire === VARINT) {
      if (field === 2) x.partition = r.int32();
      else if (field === 3) x.baseOffset = r.varint();
      else if (field === 4) x.logAppendTimeMs = r.varint();
      else if (field === 5) x.logStartOffset = r.varint();
      else return false;
    } else return false;
    return true;
  });
  return x;
}

/** `base` (loaded from proto/broker.proto) with these codecs on Produce and ProduceStream. */
export function withProduceCodecs(base: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const codecs = {
    requestSerialize: (m: ProduceRequestMessage) => encodeProduceRequest(m),
    requestDeserialize: (b: Buffer) => decodeProduceRequest(b),
    responseSerialize: (m: ProduceResponseMessage) => encodeProduceResponse(m),
    responseDeserialize: (b: Buffer) => decodeProduceResponse(b),
  };
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = { ...base };
  for (const name of ['Produce', 'ProduceStream']) {
    const method = base[name];
    if (method === undefined) throw new Error(`proto/broker.proto has no ${name} method`);
    out[name] = { ...method, ...codecs } as grpc.MethodDefinition<unknown, unknown>;
  }
  return out;
}
