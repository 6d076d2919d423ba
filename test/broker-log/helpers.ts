import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import { PartitionLog, PartitionLogOptions, decodeRecordBatches, encodeRecordBatch } from '../../broker/log';
import type { LogConfig, LogRecord, RecordInput } from '../../broker/log';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import type { ErrorName } from '../../shared/errors/error-codes';

/** A fresh directory under the OS temp dir; removed by cleanupDirs(). */
const dirs: string[] = [];
export async function tempDir(label = 'log'): Promise<string> {
  const d = await fs.mkdtemp(path.join(os.tmpdir(), `flotilla-${label}-`));
  dirs.push(d);
  return d;
}

export async function cleanupDirs(): Promise<void> {
  while (dirs.length > 0) await fs.rm(dirs.pop()!, { recursive: true, force: true });
}

/** A manual clock for segment.ms, retention.ms and flush.ms. */
export class ManualClock {
  constructor(public ms = 1_700_000_000_000) {}
  readonly nowMs = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

/** A batch of `count` records "k<i>"/"v<i>-<pad>", timestamps from `timestampMs` (step 1). */
export function batch(count: number, opts: { timestampMs?: number; timestamps?: number[]; valueBytes?: number; tag?: string } = {}): Buffer {
  const records: RecordInput[] = [];
  for (let i = 0; i < count; i++) {
    const ts = opts.timestamps?.[i] ?? (opts.timestampMs ?? 1_000) + i;
    const value = Buffer.alloc(opts.valueBytes ?? 16, `${opts.tag ?? 'v'}${i}-`);
    records.push({ key: Buffer.from(`k${i}`), value, headers: [{ key: 'h', value: Buffer.from(String(i)) }], timestampMs: ts });
  }
  return encodeRecordBatch({ records });
}

/** Small segments and a small index interval so tests cross many segment boundaries. */
export const SMALL: Partial<LogConfig> = { segmentBytes: 4096, indexIntervalBytes: 256 };

export async function openLog(dir: string, config: Partial<LogConfig> = SMALL, extra: Partial<PartitionLogOptions> = {}): Promise<PartitionLog> {
  return PartitionLog.open({ dir, config, ...extra });
}

/** Every record from `from` to the end, via repeated reads (asserting offsets are contiguous). */
export async function readAll(log: PartitionLog, from = log.logStartOffset, maxBytes = 1000): Promise<LogRecord[]> {
  const out: LogRecord[] = [];
  let next = from;
  while (next < log.logEndOffset) {
    const r = await log.read(next, maxBytes);
    expect(r.records.length, `read at ${next} returned nothing`).to.be.greaterThan(0);
    for (const b of decodeRecordBatches(r.records)) {
      for (const rec of b.records) if (rec.offset >= next) out.push(rec);
    }
    next = r.nextOffset;
  }
  const offsets = out.map((r) => r.offset);
  for (let i = 0; i < offsets.length; i++) expect(offsets[i], 'offsets contiguous').to.equal(from + i);
  return out;
}

/** Asserts that `p` rejects with a FlotillaError named `name`; returns it. */
export async function expectFlotillaError(p: Promise<unknown>, name: ErrorName): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    if (!isFlotillaError(e)) throw e;
    expect(e.name, e.message).to.equal(name);
    return e;
  }
  expect.fail(`expected ${name}, but it resolved`);
}

export function expectThrowsFlotilla(fn: () => unknown, name: ErrorName): FlotillaError {
  try {
    fn();
  } catch (e) {
    if (!isFlotillaError(e)) throw e;
    expect(e.name, e.message).to.equal(name);
    return e;
  }
  expect.fail(`expected ${name}, but it returned`);
}

/** File name -> contents of every file in `dir`: to prove a refused operation wrote nothing. */
export async function snapshotDir(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of (await fs.readdir(dir)).sort()) out.set(name, (await fs.readFile(path.join(dir, name))).toString('hex'));
  return out;
}

/** The path of the segment .log file with this base offset. */
export function segmentLogPath(dir: string, baseOffset: number): string {
  return path.join(dir, `${String(baseOffset).padStart(20, '0')}.log`);
}
