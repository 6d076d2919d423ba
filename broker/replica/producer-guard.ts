import type { RecordBatchHeader } from '../../shared/records/record-batch';

// The seam for idempotent producers (issue 3 §5; Kafka's ProducerStateManager as seen from
// Partition.appendRecordsToLeader). The replica layer calls it at fixed points of the append
// path and knows nothing else about producers; the real implementation lives in
// broker/producer/ and is plugged in through ReplicaManagerOptions.producerGuardFactory.
//
// Ordering guarantee given by the caller (broker/replica/partition.ts): for one partition,
// check -> log append -> onAppended of one request runs inside the partition's serialized
// append section, so two pipelined requests see each other's state; truncation and the
// follower's appends run in the same section.

export interface ProducerGuard {
  /** Leader only, inside the partition's serialized append section, before the log append of one request's batches for this partition: 'append', or the original offsets of an identical batch already in the log (an idempotent retry, answered without appending). Throws FlotillaError OUT_OF_ORDER_SEQUENCE / INVALID_PRODUCER_EPOCH / UNKNOWN_PRODUCER_ID. Does not change state. */
  check(headers: readonly RecordBatchHeader[]): { kind: 'append' } | { kind: 'duplicate'; baseOffset: number; lastOffset: number };
  /** Leader and follower, after batches were appended, with their final base offsets. */
  onAppended(headers: readonly RecordBatchHeader[]): void;
  /** After the log was truncated to endOffset (exclusive). */
  onTruncated(endOffset: number): Promise<void>;
  close(): Promise<void>;
}

/** What a factory learns about the partition replica whose guard it makes. */
export interface ProducerGuardContext {
  readonly topicId: string;
  readonly topicName: string;
  readonly partition: number;
  /** The partition's log directory (a guard may keep its snapshots there). */
  readonly dir: string;
  /** The log's range when the guard is made (after recovery): a guard rebuilds from it. */
  readonly logStartOffset: number;
  readonly logEndOffset: number;
  /** The replica's log, to read batch headers from when rebuilding (read-only use). */
  readonly log: GuardLogReader;
}

/** The part of the partition log a guard may use: its range and validated reads. */
export interface GuardLogReader {
  readonly logStartOffset: number;
  readonly logEndOffset: number;
  read(fromOffset: number, maxBytes: number, isolation: 'logEnd'): Promise<{ readonly records: Buffer; readonly nextOffset: number }>;
}

/** Made once per hosted replica, after its log is opened; closed when the replica goes away. */
export type ProducerGuardFactory = (ctx: ProducerGuardContext) => Promise<ProducerGuard> | ProducerGuard;

/** The default until broker/producer/ is wired: every batch is appended, nothing is tracked. */
export class NoopProducerGuard implements ProducerGuard {
  check(): { kind: 'append' } {
    return { kind: 'append' };
  }
  onAppended(): void {}
  async onTruncated(): Promise<void> {}
  async close(): Promise<void> {}
}

export const noopProducerGuardFactory: ProducerGuardFactory = () => new NoopProducerGuard();
