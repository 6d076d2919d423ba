import type * as grpc from '@grpc/grpc-js';
import { decodeError, withProduceCodecs } from '../../shared/rpc/produce-codec';
import { LEN, Reader, VARINT, Writer, lenSize, numSize, readFields, strSize } from '../../shared/rpc/proto-wire';

// Hand-written protobuf codecs for the Replicate stream's messages (proto/broker.proto:
// ReplicaReport, ReplicaPush). The bytes on the wire are plain proto3 — any protobuf decoder
// reads them, and these decoders read any valid encoding (fields in any order, unknown fields
// skipped, defaults for absent ones) — but record batches go from the log straight into the
// message buffer and come out as a slice of the received buffer, without protobufjs's object
// conversion (fromObject/toObject) and its extra copy of every payload byte. Replication moves
// every record twice per write (RF 3), so this is on the hot path.
//
// The protobuf primitives are shared/rpc/proto-wire.ts.

export interface ReplicaPosition {
  topic: string;
  partition: number;
  topicId: string;
  currentLeaderEpoch: number;
  fetchOffset: number;
  lastFetchedEpoch: number;
  partitionMaxBytes: number;
  reportId: number;
}

export interface ReplicaPartitionRef {
  topic: string;
  partition: number;
  topicId: string;
}

export interface ReplicaReport {
  replicaId: number;
  replicaEpoch: number;
  positions: ReplicaPosition[];
  stopped: ReplicaPartitionRef[];
}

export interface WireError {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

export interface ReplicaPushEntry {
  reportId: number;
  topic: string;
  partition: number;
  error: WireError | null;
  highWatermark: number;
  logStartOffset: number;
  records: Buffer;
  divergingEpoch: { epoch: number; endOffset: number } | null;
  leaderEpoch: number;
}

export interface ReplicaPush {
  partitions: ReplicaPushEntry[];
}

// ---- ReplicaReport ----

function positionSize(p: ReplicaPosition): number {
  return (
    strSize(1, p.topic) +
    numSize(2, p.partition) +
    strSize(3, p.topicId) +
    numSize(4, p.currentLeaderEpoch) +
    numSize(5, p.fetchOffset) +
    numSize(6, p.lastFetchedEpoch) +
    numSize(7, p.partitionMaxBytes) +
    numSize(8, p.reportId)
  );
}

function refSize(s: ReplicaPartitionRef): number {
  return strSize(1, s.topic) + numSize(2, s.partition) + strSize(3, s.topicId);
}

export function encodeReplicaReport(m: ReplicaReport): Buffer {
  const positionSizes = m.positions.map(positionSize);
  const refSizes = m.stopped.map(refSize);
  let size = numSize(1, m.replicaId) + numSize(2, m.replicaEpoch);
  for (const s of positionSizes) size += lenSize(3, s);
  for (const s of refSizes) size += lenSize(4, s);
  const w = new Writer(Buffer.allocUnsafe(size));
  w.num(1, m.replicaId);
  w.num(2, m.replicaEpoch);
  m.positions.forEach((p, i) => {
    w.sub(3, positionSizes[i]!);
    w.str(1, p.topic);
    w.num(2, p.partition);
    w.str(3, p.topicId);
    w.num(4, p.currentLeaderEpoch);
    w.num(5, p.fetchOffset);
    w.num(6, p.lastFetchedEpoch);
    w.num(7, p.partitionMaxBytes);
    w.num(8, p.reportId);
  });
  m.stopped.forEach((s, i) => {
    w.sub(4, refSizes[i]!);
    w.str(1, s.topic);
    w.num(2, s.partition);
    w.str(3, s.topicId);
  });
  if (w.pos !== size) throw new Error(`ReplicaReport encoded ${w.pos} bytes, sized ${size}`);
  return w.buf;
}

export function decodeReplicaReport(buf: Buffer): ReplicaReport {
  const m: ReplicaReport = { replicaId: 0, replicaEpoch: 0, positions: [], stopped: [] };
  const r = new Reader(buf, 0, buf.length);
  readFields(r, (field, wire) => {
    if (field === 1 && wire === VARINT) m.replicaId = r.int32();
    else if (field === 2 && wire === VARINT) m.replicaEpoch = r.varint();
    else if (field === 3 && wire === LEN) m.positions.push(decodePosition(r.sub()));
    else if (field === 4 && wire === LEN) m.stopped.push(decodeRef(r.sub()));
    else return false;
    return true;
  });
  return m;
}

function decodePosition(r: Reader): ReplicaPosition {
  const p: ReplicaPosition = { topic: '', partition: 0, topicId: '', currentLeaderEpoch: 0, fetchOffset: 0, lastFetchedEpoch: 0, partitionMaxBytes: 0, reportId: 0 };
  readFields(r, (field, wire) => {
    if (wire === LEN && field === 1) p.topic = r.str();
    else if (wire === LEN && field === 3) p.topicId = r.str();
    else if (wire !== VARINT) return false;
    else if (field === 2) p.partition = r.int32();
    else if (field === 4) p.currentLeaderEpoch = r.int32();
    else if (field === 5) p.fetchOffset = r.varint();
    else if (field === 6) p.lastFetchedEpoch = r.int32();
    else if (field === 7) p.partitionMaxBytes = r.varint() >>> 0;
    else if (field === 8) p.reportId = r.varint();
    else return false;
    return true;
  });
  return p;
}

function decodeRef(r: Reader): ReplicaPartitionRef {
  const s: ReplicaPartitionRef = { topic: '', partition: 0, topicId: '' };
  readFields(r, (field, wire) => {
    if (wire === LEN && field === 1) s.topic = r.str();
    else if (wire === LEN && field === 3) s.topicId = r.str();
    else if (wire === VARINT && field === 2) s.partition = r.int32();
    else return false;
    return true;
  });
  return s;
}

// ---- ReplicaPush ----

function errorSize(e: WireError): number {
  return numSize(1, e.code) + strSize(2, e.name) + strSize(3, e.message) + strSize(4, e.detailsJson);
}

function divergenceSize(d: { epoch: number; endOffset: number }): number {
  return numSize(1, d.epoch) + numSize(2, d.endOffset);
}

function entrySize(e: ReplicaPushEntry): number {
  return (
    numSize(1, e.reportId) +
    strSize(2, e.topic) +
    numSize(3, e.partition) +
    (e.error ? lenSize(4, errorSize(e.error)) : 0) +
    numSize(5, e.highWatermark) +
    numSize(6, e.logStartOffset) +
    (e.records.length > 0 ? lenSize(7, e.records.length) : 0) +
    (e.divergingEpoch ? lenSize(8, divergenceSize(e.divergingEpoch)) : 0) +
    numSize(9, e.leaderEpoch)
  );
}

export function encodeReplicaPush(m: ReplicaPush): Buffer {
  const sizes = m.partitions.map(entrySize);
  let size = 0;
  for (const s of sizes) size += lenSize(1, s);
  const w = new Writer(Buffer.allocUnsafe(size));
  m.partitions.forEach((e, i) => {
    w.sub(1, sizes[i]!);
    w.num(1, e.reportId);
    w.str(2, e.topic);
    w.num(3, e.partition);
    if (e.error) {
      w.sub(4, errorSize(e.error));
      w.num(1, e.error.code);
      w.str(2, e.error.name);
      w.str(3, e.error.message);
      w.str(4, e.error.detailsJson);
    }
    w.num(5, e.highWatermark);
    w.num(6, e.logStartOffset);
    w.bytes(7, e.records);
    if (e.divergingEpoch) {
      w.sub(8, divergenceSize(e.divergingEpoch));
      w.num(1, e.divergingEpoch.epoch);
      w.num(2, e.divergingEpoch.endOffset);
    }
    w.num(9, e.leaderEpoch);
  });
  if (w.pos !== size) throw new Error(`ReplicaPush encoded ${w.pos} bytes, sized ${size}`);
  return w.buf;
}

const EMPTY = Buffer.alloc(0);

export function decodeReplicaPush(buf: Buffer): ReplicaPush {
  const m: ReplicaPush = { partitions: [] };
  const r = new Reader(buf, 0, buf.length);
  readFields(r, (field, wire) => {
    if (field !== 1 || wire !== LEN) return false;
    m.partitions.push(decodeEntry(r.sub()));
    return true;
  });
  return m;
}

function decodeEntry(r: Reader): ReplicaPushEntry {
  const e: ReplicaPushEntry = { reportId: 0, topic: '', partition: 0, error: null, highWatermark: 0, logStartOffset: 0, records: EMPTY, divergingEpoch: null, leaderEpoch: 0 };
  readFields(r, (field, wire) => {
    if (wire === LEN) {
      if (field === 2) e.topic = r.str();
      else if (field === 4) e.error = decodeError(r.sub());
      else if (field === 7) e.records = r.bytes();
      else if (field === 8) e.divergingEpoch = decodeDivergence(r.sub());
      else return false;
    } else if (wire === VARINT) {
      if (field === 1) e.reportId = r.varint();
      else if (field === 3) e.partition = r.int32();
      else if (field === 5) e.highWatermark = r.varint();
      else if (field === 6) e.logStartOffset = r.varint();
      else if (field === 9) e.leaderEpoch = r.int32();
      else return false;
    } else return false;
    return true;
  });
  return e;
}

function decodeDivergence(r: Reader): { epoch: number; endOffset: number } {
  const d = { epoch: 0, endOffset: 0 };
  readFields(r, (field, wire) => {
    if (wire !== VARINT) return false;
    if (field === 1) d.epoch = r.int32();
    else if (field === 2) d.endOffset = r.varint();
    else return false;
    return true;
  });
  return d;
}

/**
 * The Broker service definition with the hand-written codecs on Replicate, Produce and
 * ProduceStream (the other methods keep proto-loader's). `base` is the definition loaded from proto/broker.proto.
 */
export function withReplicateCodecs(base: grpc.ServiceDefinition): grpc.ServiceDefinition {
  base = withProduceCodecs(base);
  const replicate = base.Replicate;
  if (replicate === undefined) throw new Error('proto/broker.proto has no Replicate method');
  return {
    ...base,
    Replicate: {
      ...replicate,
      requestSerialize: (m: ReplicaReport) => encodeReplicaReport(m),
      requestDeserialize: (b: Buffer) => decodeReplicaReport(b),
      responseSerialize: (m: ReplicaPush) => encodeReplicaPush(m),
      responseDeserialize: (b: Buffer) => decodeReplicaPush(b),
    },
  };
}
