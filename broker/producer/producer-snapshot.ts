import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { crc32c } from '../../shared/records/crc32c';
import { BATCHES_RETAINED_PER_PRODUCER, PRODUCER_EPOCH_MAX } from './producer-state';
import type { LastBatch, ProducerBatchEntry, ProducerEntry } from './producer-state';

// Producer-state snapshots (Kafka's ProducerStateManager snapshot files, `<offset>.snapshot`):
// the state of one partition at a log offset, in a small file next to the partition's
// segments, named by that offset. Why files and not `level`: a snapshot belongs to one
// partition directory, so it is created, listed, truncated and deleted with that directory
// (topic deletion, a replica moving away) without a second store to keep in step; it is
// written once and never updated (temp file + fsync + rename + directory fsync); and opening
// a partition needs no shared database handle. Kafka made the same choice.
//
// Layout (big-endian):
//
//   offset size field
//    0     4   magic           "FPSS"
//    4     2   version         1
//    6     4   crc             CRC32C of every byte from offset 10 to the end
//   10     8   endOffset       the state covers the log below this offset (= the file name)
//   18     8   lastBatchOffset the last offset of the last batch applied (-1: none)
//   26     4   lastBatchCrc    that batch's CRC32C: the snapshot is trusted only if the log
//                              still holds that very batch there
//   30     4   entryCount
//   34     ... entries, least recently written first:
//                producerId int64 | epoch int16 | lastTimestampMs int64 | batchCount int8 (1..5)
//                | batchCount x (firstSeq int32 | lastSeq int32 | firstOffset int64 | lastOffset int64)
//
// A file that fails any check (magic, version, CRC, length, a field out of range, offsets not
// below endOffset, a producer twice) is corrupt: decodeSnapshot says why and the caller
// ignores the file; it is never partly trusted.

export const SNAPSHOT_SUFFIX = '.snapshot';
const MAGIC = 0x46505353; // "FPSS"
const VERSION = 1;
const HEADER_BYTES = 34;
const CRC_COVERS_FROM = 10;
const ENTRY_FIXED_BYTES = 8 + 2 + 8 + 1;
const BATCH_BYTES = 4 + 4 + 8 + 8;

export interface ProducerSnapshot {
  readonly endOffset: number;
  readonly lastBatch: LastBatch | null;
  /** Least recently written first. */
  readonly entries: readonly ProducerEntry[];
}

export function snapshotFileName(endOffset: number): string {
  return `${String(endOffset).padStart(20, '0')}${SNAPSHOT_SUFFIX}`;
}

export function parseSnapshotFileName(name: string): number | undefined {
  const m = /^(\d{20})\.snapshot$/.exec(name);
  if (m === null) return undefined;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) ? n : undefined;
}

export function encodeSnapshot(s: ProducerSnapshot): Buffer {
  let size = HEADER_BYTES;
  for (const e of s.entries) size += ENTRY_FIXED_BYTES + e.batches.length * BATCH_BYTES;
  const buf = Buffer.alloc(size);
  buf.writeUInt32BE(MAGIC, 0);
  buf.writeUInt16BE(VERSION, 4);
  buf.writeBigInt64BE(BigInt(s.endOffset), 10);
  buf.writeBigInt64BE(BigInt(s.lastBatch?.lastOffset ?? -1), 18);
  buf.writeUInt32BE(s.lastBatch?.crc ?? 0, 26);
  buf.writeUInt32BE(s.entries.length, 30);
  let pos = HEADER_BYTES;
  for (const e of s.entries) {
    buf.writeBigInt64BE(BigInt(e.producerId), pos);
    buf.writeInt16BE(e.epoch, pos + 8);
    buf.writeBigInt64BE(BigInt(e.lastTimestampMs), pos + 10);
    buf.writeInt8(e.batches.length, pos + 18);
    pos += ENTRY_FIXED_BYTES;
    for (const b of e.batches) {
      buf.writeInt32BE(b.firstSeq, pos);
      buf.writeInt32BE(b.lastSeq, pos + 4);
      buf.writeBigInt64BE(BigInt(b.firstOffset), pos + 8);
      buf.writeBigInt64BE(BigInt(b.lastOffset), pos + 16);
      pos += BATCH_BYTES;
    }
  }
  buf.writeUInt32BE(crc32c(buf.subarray(CRC_COVERS_FROM)), 6);
  return buf;
}

/** The snapshot in `buf`, or a string saying why it cannot be trusted. */
export function decodeSnapshot(buf: Buffer): ProducerSnapshot | string {
  if (buf.length < HEADER_BYTES) return `${buf.length} bytes, shorter than the ${HEADER_BYTES}-byte header`;
  if (buf.readUInt32BE(0) !== MAGIC) return 'bad magic';
  const version = buf.readUInt16BE(4);
  if (version !== VERSION) return `unknown version ${version}`;
  const stored = buf.readUInt32BE(6);
  const actual = crc32c(buf.subarray(CRC_COVERS_FROM));
  if (stored !== actual) return `CRC32C mismatch (stored ${stored}, computed ${actual})`;
  const endOffset = safeInt64(buf, 10);
  const lastBatchOffset = safeInt64(buf, 18);
  if (endOffset === undefined || endOffset < 0) return 'end offset out of range';
  if (lastBatchOffset === undefined || lastBatchOffset < -1 || lastBatchOffset >= endOffset) return `last batch offset ${lastBatchOffset} out of range`;
  const lastBatch = lastBatchOffset === -1 ? null : { lastOffset: lastBatchOffset, crc: buf.readUInt32BE(26) };
  const count = buf.readUInt32BE(30);
  if (count > (buf.length - HEADER_BYTES) / (ENTRY_FIXED_BYTES + BATCH_BYTES)) return `${count} entries cannot fit in ${buf.length} bytes`;
  const entries: ProducerEntry[] = [];
  const seen = new Set<number>();
  let pos = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (pos + ENTRY_FIXED_BYTES > buf.length) return `entry ${i} runs past the end`;
    const producerId = safeInt64(buf, pos);
    const epoch = buf.readInt16BE(pos + 8);
    const lastTimestampMs = safeInt64(buf, pos + 10);
    const batchCount = buf.readInt8(pos + 18);
    if (producerId === undefined || producerId < 0 || seen.has(producerId)) return `entry ${i}: bad or repeated producer id`;
    if (epoch < 0 || epoch > PRODUCER_EPOCH_MAX) return `entry ${i}: epoch ${epoch}`;
    if (lastTimestampMs === undefined) return `entry ${i}: timestamp out of range`;
    if (batchCount < 1 || batchCount > BATCHES_RETAINED_PER_PRODUCER) return `entry ${i}: ${batchCount} batches`;
    pos += ENTRY_FIXED_BYTES;
    if (pos + batchCount * BATCH_BYTES > buf.length) return `entry ${i}: batches run past the end`;
    const batches: ProducerBatchEntry[] = [];
    for (let j = 0; j < batchCount; j++) {
      const firstSeq = buf.readInt32BE(pos);
      const lastSeq = buf.readInt32BE(pos + 4);
      const firstOffset = safeInt64(buf, pos + 8);
      const lastOffset = safeInt64(buf, pos + 16);
      pos += BATCH_BYTES;
      if (firstSeq < 0 || lastSeq < 0) return `entry ${i} batch ${j}: negative sequence`;
      if (firstOffset === undefined || lastOffset === undefined || firstOffset < 0 || lastOffset < firstOffset || lastOffset >= endOffset) {
        return `entry ${i} batch ${j}: offsets ${firstOffset}..${lastOffset} outside [0, ${endOffset})`;
      }
      const prev = batches[batches.length - 1];
      if (prev !== undefined && firstOffset <= prev.lastOffset) return `entry ${i} batch ${j}: offsets not increasing`;
      batches.push({ firstSeq, lastSeq, firstOffset, lastOffset });
    }
    seen.add(producerId);
    entries.push({ producerId, epoch, lastTimestampMs, batches });
  }
  if (pos !== buf.length) return `${buf.length - pos} bytes after the last entry`;
  return { endOffset, lastBatch, entries };
}

function safeInt64(buf: Buffer, pos: number): number | undefined {
  const v = buf.readBigInt64BE(pos);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
}

// ---- files ----

/** End offsets of the snapshot files in `dir`, ascending. */
export async function listSnapshots(dir: string): Promise<number[]> {
  const names = await fs.readdir(dir);
  return names
    .map(parseSnapshotFileName)
    .filter((o): o is number => o !== undefined)
    .sort((a, b) => a - b);
}

/** Writes a snapshot durably and atomically: temp file, fsync, rename, directory fsync. */
export async function writeSnapshotFile(dir: string, s: ProducerSnapshot): Promise<void> {
  const target = path.join(dir, snapshotFileName(s.endOffset));
  const tmp = `${target}.tmp`;
  const fh = await fs.open(tmp, 'w');
  try {
    await fh.writeFile(encodeSnapshot(s));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, target);
  await fsyncDir(dir);
}

/** The snapshot at `endOffset`, or why it cannot be used (unreadable counts as corrupt). */
export async function readSnapshotFile(dir: string, endOffset: number): Promise<ProducerSnapshot | string> {
  let buf: Buffer;
  try {
    buf = await fs.readFile(path.join(dir, snapshotFileName(endOffset)));
  } catch (e) {
    return `unreadable: ${(e as Error).message}`;
  }
  const s = decodeSnapshot(buf);
  if (typeof s !== 'string' && s.endOffset !== endOffset) return `holds end offset ${s.endOffset}, its name says ${endOffset}`;
  return s;
}

export async function deleteSnapshotFile(dir: string, endOffset: number): Promise<void> {
  try {
    await fs.unlink(path.join(dir, snapshotFileName(endOffset)));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** Removes leftovers of an interrupted write (`*.snapshot.tmp`). */
export async function deleteSnapshotTempFiles(dir: string): Promise<void> {
  for (const name of await fs.readdir(dir)) {
    if (name.endsWith(`${SNAPSHOT_SUFFIX}.tmp`)) await fs.rm(path.join(dir, name), { force: true });
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
