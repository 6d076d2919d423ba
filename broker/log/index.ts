// Public surface of broker/log: the partition log (issue 3 §2), used by the replica manager.
// It does no networking and no replication: it stores record batches durably, serves them
// back validated, and keeps what replication needs (leader epochs, truncation, the high
// watermark it is given). On-disk format, flush default and recovery: README.md here.
//
// May import: shared/ (errors, log, metadata for the topic config defaults), node:*, and
// @chainsafe/fast-crc32c.
export { PartitionLog, CLEAN_SHUTDOWN_FILE } from './partition-log';
export type {
  PartitionLogOptions,
  AppendOptions,
  AppendResult,
  ReadIsolation,
  LogReadResult,
  TimestampOffset,
  RetentionResult,
} from './partition-log';
export { DEFAULT_LOG_CONFIG, DEFAULT_TAIL_CACHE_BYTES, logConfigFromTopicConfig, checkLogConfig } from './log-config';
export type { LogConfig } from './log-config';
export { LeaderEpochCache, LEADER_EPOCH_CHECKPOINT_FILE, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET } from './leader-epoch-cache';
export type { EpochEntry, EpochEndOffset } from './leader-epoch-cache';
export { segmentFileStem, parseSegmentFileName } from './log-segment';
// The record batch format itself lives in shared/records (the client encodes the same bytes).
export * from '../../shared/records';
