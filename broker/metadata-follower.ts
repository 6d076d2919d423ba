import type * as grpc from '@grpc/grpc-js';
import type { Logger } from '../shared/log';
import {
  LocalReplicaChanges,
  MetadataDelta,
  MetadataImage,
  MetadataRecord,
  decodeBatch,
  imageFromRecords,
} from '../shared/metadata';
import type { ControllerChannel } from './controller-channel';
import { localChangesBetween } from './local-changes';
import type { FetchMetadataWireEntry as WireEntry } from '../shared/rpc/metadata-wire';

// Follows the committed metadata log (Kafka's BrokerMetadataListener + MetadataLoader): one
// FetchMetadata server stream to one controller, each streamed message replayed into the
// next immutable MetadataImage with shared/metadata, then published with what changed for
// this broker (localChanges). On any stream failure it reconnects, to the next controller,
// from the offset after the last one applied.
//
// Restart policy: nothing is persisted. A (re)started broker fetches from offset 0; the
// controller answers with its image as snapshot entries when 0 was compacted (see
// FetchMetadata in proto/controller.proto), so catching up costs one image, which is bounded
// (brokers, partitions and events are all capped in shared/metadata). Persisting the image
// would not let a broker unfence sooner: the controller unfences it only once it has applied
// its own new RegisterBroker record, which is newer than anything it could have stored.

/** What a publisher receives after each applied stream message. */
export interface MetadataUpdate {
  readonly previous: MetadataImage;
  readonly image: MetadataImage;
  /** What this broker must do (lead, follow, delete partitions). */
  readonly localChanges: LocalReplicaChanges;
  /** True when `image` replaced `previous` from a snapshot rather than by replaying records. */
  readonly fromSnapshot: boolean;
  /**
   * Ids of every topic that may differ between `previous` and `image` (created, changed,
   * deleted); undefined when unknown (a snapshot): then any topic may have.
   */
  readonly touchedTopicIds?: readonly string[];
}

export type MetadataPublisher = (update: MetadataUpdate) => void;

export interface MetadataFollowerOptions {
  readonly brokerId: number;
  readonly channel: ControllerChannel;
  readonly logger: Logger;
  /** Called in order after every applied message. A publisher that throws is a bug: onFatal. */
  readonly publishers: readonly MetadataPublisher[];
  /** The follower cannot go on (a record this build cannot read, a publisher bug). */
  readonly onFatal: (err: unknown) => void;
  /**
   * Reconnect to another controller when an offset known to be committed (noteCommitted) has
   * not been reached and nothing arrived for this long: the controller we follow may be
   * partitioned from the quorum and no longer learn commits. Default 5000.
   */
  readonly stallTimeoutMs?: number;
  /** Most entries per streamed message asked of the controller (0 = its default). */
  readonly maxEntriesPerMessage?: number;
}


/** The stream broke the FetchMetadata contract; reconnecting (elsewhere) is the remedy. */
class StreamProtocolError extends Error {}

/** Bound on records buffered for one incoming snapshot (the image's own caps are lower). */
const SNAPSHOT_RECORDS_MAX = 5_000_000;

export class MetadataFollower {
  private image: MetadataImage = MetadataImage.EMPTY;
  private stream: grpc.ClientReadableStream<unknown> | undefined;
  private address: string | undefined;
  /** Records of a snapshot being received, until its snapshot_done chunk. */
  private snapshotRecords: MetadataRecord[] | null = null;
  private failures = 0;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private stallTimer: NodeJS.Timeout | undefined;
  private lastDataMs = Date.now();
  /** An offset known to be committed that we should reach (e.g. our own registration). */
  private committedAtLeast = 0;
  private stopped = false;
  private readonly stallTimeoutMs: number;

  constructor(private readonly o: MetadataFollowerOptions) {
    this.stallTimeoutMs = o.stallTimeoutMs ?? 5_000;
  }

  /** The image as of the last applied offset. */
  currentImage(): MetadataImage {
    return this.image;
  }

  /** The last metadata offset applied (what heartbeats report). */
  appliedOffset(): number {
    return this.image.offset;
  }

  /** The controller the stream is (or was last) attached to. */
  currentController(): string | undefined {
    return this.address;
  }

  start(): void {
    this.connect();
    const checkMs = Math.max(100, Math.min(1_000, this.stallTimeoutMs / 2));
    this.stallTimer = setInterval(() => this.onStallCheck(), checkMs);
  }

  /** Tells the follower that `offset` is committed, e.g. the broker's own registration. */
  noteCommitted(offset: number): void {
    if (offset > this.committedAtLeast) this.committedAtLeast = offset;
  }

  /** Drops the current stream and reconnects to the next controller. */
  reconnect(why: string): void {
    if (this.stopped) return;
    this.o.logger.info({ controller: this.address, why, offset: this.image.offset }, 'metadata stream: reconnecting');
    this.endStream();
    this.scheduleReconnect(0);
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.stallTimer);
    clearTimeout(this.reconnectTimer);
    this.endStream();
  }

  private connect(): void {
    if (this.stopped) return;
    this.reconnectTimer = undefined;
    const address = this.o.channel.nextAddress();
    // Offsets are Raft indexes starting at 1; 0 asks for everything (or the image).
    const fromOffset = this.image.offset === 0 ? 0 : this.image.offset + 1;
    let call: grpc.ClientReadableStream<unknown>;
    try {
      call = this.o.channel.openStream(address, 'FetchMetadata', {
        fromOffset,
        clientId: `broker-${this.o.brokerId}`,
        maxEntries: this.o.maxEntriesPerMessage ?? 0,
      });
    } catch (err) {
      if (this.stopped) return;
      this.o.logger.warn({ err, controller: address }, 'metadata stream: cannot open');
      this.scheduleReconnect(this.o.channel.backoff(this.failures++));
      return;
    }
    this.stream = call;
    this.address = address;
    this.snapshotRecords = null;
    this.lastDataMs = Date.now();
    this.o.logger.debug({ controller: address, fromOffset }, 'metadata stream: opened');
    call.on('data', (msg: { entries?: WireEntry[] }) => {
      if (this.stream !== call) return;
      this.lastDataMs = Date.now();
      this.failures = 0;
      try {
        this.onFetchMetadataResponse(msg.entries ?? []);
      } catch (err) {
        if (err instanceof StreamProtocolError) {
          // The controller's fault, not ours: another controller may serve us correctly.
          this.o.logger.warn({ err: err.message, controller: address }, 'metadata stream: unexpected message');
          this.reconnect(err.message);
          return;
        }
        this.fail(err);
      }
    });
    call.on('error', (err: grpc.ServiceError) => this.onStreamEnd(call, err));
    call.on('end', () => this.onStreamEnd(call, undefined));
  }

  private onStreamEnd(call: grpc.ClientReadableStream<unknown>, err: grpc.ServiceError | undefined): void {
    if (this.stream !== call || this.stopped) return;
    this.stream = undefined;
    this.snapshotRecords = null;
    const delayMs = this.o.channel.backoff(this.failures++);
    // The first failure is news; a controller down for a while would otherwise log every backoff.
    const level = this.failures === 1 ? 'info' : 'debug';
    this.o.logger[level](
      { controller: this.address, code: err?.code, details: err?.details, offset: this.image.offset, retryInMs: Math.round(delayMs) },
      'metadata stream ended; reconnecting to the next controller',
    );
    this.scheduleReconnect(delayMs);
  }

  private scheduleReconnect(delayMs: number): void {
    if (this.stopped || this.reconnectTimer !== undefined) return;
    this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
  }

  private endStream(): void {
    const s = this.stream;
    this.stream = undefined;
    this.snapshotRecords = null;
    s?.cancel();
  }

  private onStallCheck(): void {
    if (this.stopped || this.stream === undefined) return;
    if (this.image.offset >= this.committedAtLeast) return;
    if (Date.now() - this.lastDataMs < this.stallTimeoutMs) return;
    this.reconnect(`offset ${this.committedAtLeast} is committed but nothing arrived for ${this.stallTimeoutMs} ms (applied: ${this.image.offset})`);
  }

  /**
   * Applies one streamed message. Consecutive log entries share one delta (one image per
   * message); a snapshot replaces the image when its last chunk arrives.
   */
  private onFetchMetadataResponse(entries: readonly WireEntry[]): void {
    let delta: MetadataDelta | null = null;
    let deltaOffset = this.image.offset;
    const flush = (): void => {
      if (delta === null) return;
      const previous = this.image;
      this.image = delta.apply();
      if (delta.ignoredRecords > 0) this.o.logger.debug({ ignored: delta.ignoredRecords, offset: this.image.offset }, 'metadata: records that no longer applied were skipped');
      this.publish({ previous, image: this.image, localChanges: delta.localChanges(this.o.brokerId), fromSnapshot: false, touchedTopicIds: delta.touchedTopicIds() });
      delta = null;
    };
    for (const e of entries) {
      if (e.snapshot) {
        flush();
        this.onSnapshotChunk(e);
        deltaOffset = this.image.offset;
        continue;
      }
      if (this.snapshotRecords !== null) {
        // Log entries never interleave with an unfinished snapshot: the controller sends the
        // whole image first. Start over rather than build on half an image.
        throw new StreamProtocolError(`entry ${e.offset} arrived inside an unfinished snapshot`);
      }
      if (e.offset <= deltaOffset) continue; // already applied (a reconnect can resend)
      delta ??= new MetadataDelta(this.image);
      delta.replayBatch(decodeBatch(e.batch), e.offset);
      deltaOffset = e.offset;
    }
    flush();
  }

  private onSnapshotChunk(e: WireEntry): void {
    this.snapshotRecords ??= [];
    const records = e.batch.length > 0 ? decodeBatch(e.batch) : [];
    if (this.snapshotRecords.length + records.length > SNAPSHOT_RECORDS_MAX) {
      throw new StreamProtocolError(`a snapshot of more than ${SNAPSHOT_RECORDS_MAX} records`);
    }
    for (const r of records) this.snapshotRecords.push(r);
    if (!e.snapshotDone) return;
    const all = this.snapshotRecords;
    this.snapshotRecords = null;
    if (e.offset <= this.image.offset) {
      this.o.logger.debug({ snapshotOffset: e.offset, offset: this.image.offset }, 'metadata: snapshot older than the image skipped');
      return;
    }
    const previous = this.image;
    this.image = imageFromRecords(all, e.offset);
    this.o.logger.info(
      { controller: this.address, offset: e.offset, records: all.length, brokers: this.image.brokers.size, topics: this.image.topics.size },
      'metadata: image loaded from a controller snapshot',
    );
    this.publish({ previous, image: this.image, localChanges: localChangesBetween(previous, this.image, this.o.brokerId), fromSnapshot: true });
  }

  private publish(update: MetadataUpdate): void {
    this.o.logger.debug({ offset: update.image.offset, topics: update.image.topics.size }, 'metadata applied');
    for (const p of this.o.publishers) p(update);
  }

  private fail(err: unknown): void {
    if (this.stopped) return;
    this.o.logger.error({ err, controller: this.address, offset: this.image.offset }, 'metadata follower cannot go on');
    this.stop();
    this.o.onFatal(err);
  }
}
