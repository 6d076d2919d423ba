import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../log/file-io';

// The high-watermark checkpoint (Kafka's replication-offset-checkpoint): one file per broker
// data dir, rewritten atomically (temp file, fsync, rename, directory fsync) every few seconds
// and on clean shutdown. It only spares consumers a wait after a restart: a high watermark
// read back too low is raised again by replication; one can never be too high, because the
// value written was committed (the log clamps it to its end after recovery anyway).
//
//   0                      version
//   2                      entry count
//   <topicId> <partition> <highWatermark>   one line per hosted partition

export const HW_CHECKPOINT_FILE = 'replication-offset-checkpoint';
const VERSION = 0;

/** "topicId:partition" -> high watermark. A missing or unreadable file gives an empty map. */
export async function readHwCheckpoint(dataDir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let text: string;
  try {
    text = await fs.readFile(path.join(dataDir, HW_CHECKPOINT_FILE), 'utf8');
  } catch {
    return out;
  }
  const lines = text.split('\n').filter((l) => l.length > 0);
  if (lines[0] !== String(VERSION)) return out;
  const count = Number(lines[1]);
  if (!Number.isSafeInteger(count) || count !== lines.length - 2) return out;
  for (const line of lines.slice(2)) {
    const m = /^(\S+) (\d+) (\d+)$/.exec(line);
    if (m === null) return new Map();
    out.set(`${m[1]}:${m[2]}`, Number(m[3]));
  }
  return out;
}

export async function writeHwCheckpoint(dataDir: string, entries: ReadonlyMap<string, number>): Promise<void> {
  const lines = [String(VERSION), String(entries.size)];
  for (const [key, hw] of entries) {
    const i = key.lastIndexOf(':');
    lines.push(`${key.slice(0, i)} ${key.slice(i + 1)} ${hw}`);
  }
  await writeFileAtomic(path.join(dataDir, HW_CHECKPOINT_FILE), dataDir, `${lines.join('\n')}\n`);
}
