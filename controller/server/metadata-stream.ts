import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../../shared/log';
import { LIMITS } from './request-limits';
import type { CommittedEntryView, DriverPort, ImageSnapshot } from './ports';
import type { FetchMetadataWireEntry as WireEntry } from '../../shared/rpc/metadata-wire';

// FetchMetadata: follow the committed metadata log for one reader (a broker, a tool).
// Committed entries never change, so any controller serves this from its own log; a follower
// lags the leader by at most one heartbeat, which a broker tolerates like any replica lag.


export interface MetadataStreamOptions {
  readonly driver: DriverPort;
  readonly imageSnapshot: () => ImageSnapshot;
  readonly logger: Logger;
  /** How often a reader that is caught up looks for newly committed entries. */
  readonly pollMs: number;
}

export interface FetchMetadataRequestWire {
  fromOffset: number;
  clientId: string;
  maxEntries: number;
}

/**
 * Streams entries to `call` until the client cancels or `stop()` is called. Writes respect
 * the stream's backpressure (a slow reader stalls only its own loop, and at most one
 * message is buffered for it).
 */
export class MetadataStream {
  private stopped = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly call: grpc.ServerWritableStream<FetchMetadataRequestWire, unknown>,
    private readonly opts: MetadataStreamOptions,
  ) {
    call.on('cancelled', () => this.stop());
    call.on('close', () => this.stop());
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  /** Runs the follow loop; resolves when the stream is over (never rejects: errors end the call). */
  async run(fromOffset: number, maxEntries: number): Promise<void> {
    // Offsets are Raft log indexes and the first index is 1.
    let next = Math.max(1, fromOffset);
    while (!this.stopped) {
      const read = await this.opts.driver.readCommitted(next, maxEntries);
      if ('compacted' in read) {
        const image = this.opts.imageSnapshot();
        this.opts.logger.info(
          { clientId: this.call.request.clientId, fromOffset: next, snapshotIndex: read.snapshotIndex, imageOffset: image.offset },
          'metadata fetch starts below the snapshot: sending the image first',
        );
        await this.sendSnapshot(image);
        // The image can be ahead of the driver's snapshot (it is the applied state), never behind.
        next = Math.max(image.offset, read.snapshotIndex) + 1;
        continue;
      }
      const entries = read.entries.filter((e) => e.index >= next);
      // The driver skips entries without metadata (no-ops, membership changes) and says
      // where to go on; without that hint, continue after the last entry returned.
      const after = Math.max(next, read.nextIndex ?? 0, entries.length > 0 ? entries[entries.length - 1]!.index + 1 : 0);
      if (entries.length > 0) await this.sendEntries(entries);
      if (after === next) await this.sleep(this.opts.pollMs);
      next = after;
    }
  }

  private async sendSnapshot(image: ImageSnapshot): Promise<void> {
    // An empty image is still one (empty) chunk, so the reader learns where to continue.
    const batches = image.batches.length > 0 ? image.batches : [new Uint8Array(0)];
    const wire = batches.map<WireEntry>((batch, i) => ({
      offset: image.offset,
      term: 0,
      batch,
      snapshot: true,
      snapshotDone: i === batches.length - 1,
    }));
    await this.writeChunked(wire);
  }

  private async sendEntries(entries: readonly CommittedEntryView[]): Promise<void> {
    const wire: WireEntry[] = [];
    for (const e of entries) {
      if (e.data.length === 0) continue;
      wire.push({ offset: e.index, term: e.term, batch: e.data, snapshot: false, snapshotDone: false });
    }
    await this.writeChunked(wire);
  }

  /** Groups entries into messages of at most fetchBytesPerMessageMax (one entry at least). */
  private async writeChunked(wire: readonly WireEntry[]): Promise<void> {
    let group: WireEntry[] = [];
    let bytes = 0;
    for (const entry of wire) {
      if (group.length > 0 && bytes + entry.batch.length > LIMITS.fetchBytesPerMessageMax) {
        await this.write(group);
        group = [];
        bytes = 0;
      }
      group.push(entry);
      bytes += entry.batch.length;
    }
    if (group.length > 0) await this.write(group);
  }

  private async write(entries: WireEntry[]): Promise<void> {
    if (this.stopped) return;
    const flushed = this.call.write({ entries });
    if (!flushed) await new Promise<void>((resolve) => {
      const done = (): void => {
        this.call.off('drain', done);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
      this.call.on('drain', done);
    });
  }

  private sleep(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => done(), ms);
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      this.wake = done;
    });
  }
}
