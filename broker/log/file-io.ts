import { promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

// Small file helpers shared by the segment, the indexes and the epoch checkpoint.

/** Writes all of `buf` at `position` (a write may be partial; loop until done). */
export async function writeFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, position + done);
    done += bytesWritten;
  }
}

/** Reads exactly `buf.length` bytes at `position`; a short file is an error (the caller sized it). */
export async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, position + done);
    if (bytesRead === 0) throw new Error(`short read: wanted ${buf.length} bytes at ${position}, the file ended after ${done}`);
    done += bytesRead;
  }
}

/**
 * fsync a directory, so that files created, renamed or unlinked in it survive a power loss
 * (on Linux a file's fsync does not persist its directory entry).
 */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a small file and fsyncs it (the caller fsyncs the directory). */
export async function writeFileDurably(path: string, contents: string): Promise<void> {
  const fh = await fs.open(path, 'w');
  try {
    await fh.writeFile(contents, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Writes a small file atomically: temp file, fsync, rename over the target, fsync the dir. */
export async function writeFileAtomic(path: string, dir: string, contents: string): Promise<void> {
  const tmp = `${path}.tmp`;
  await writeFileDurably(tmp, contents);
  await fs.rename(tmp, path);
  await fsyncDir(dir);
}

/** Deletes a file, ignoring one that is already gone. */
export async function unlinkIfPresent(path: string): Promise<void> {
  try {
    await fs.unlink(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** True for errors from the operating system (disk full, I/O error), as opposed to bugs. */
export function isIoError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string';
}

/**
 * Sequential reads over a file through a window of at least `chunkBytes`, so that walking
 * batch headers costs one read per chunk rather than one per batch.
 */
export class FileWindow {
  private window = Buffer.alloc(0);
  private windowStart = 0;

  constructor(
    private readonly fh: FileHandle,
    /** Bytes past this position are not part of the source (the segment's valid size). */
    readonly end: number,
    private readonly chunkBytes = 64 * 1024,
  ) {}

  /** Bytes [pos, pos + length), clipped to `end`: a view that is valid until the next call. */
  async view(pos: number, length: number): Promise<Buffer> {
    const want = Math.max(0, Math.min(length, this.end - pos));
    const at = pos - this.windowStart;
    if (at >= 0 && at + want <= this.window.length) return this.window.subarray(at, at + want);
    const n = Math.min(Math.max(want, this.chunkBytes), this.end - pos);
    const buf = Buffer.allocUnsafe(Math.max(n, 0));
    await readFully(this.fh, buf, pos);
    this.window = buf;
    this.windowStart = pos;
    return buf.subarray(0, want);
  }
}
