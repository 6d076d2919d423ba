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
export { DEFAULT_LOG_CONFIG, logConfigFromTopicConfig, checkLogConfig } from './log-config';
export type { LogConfig } from './log-config';
export { LeaderEpochCache, LEADER_EPOCH_CHECKPOINT_FILE, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET } from './leader-epoch-cache';
export type { EpochEntry, EpochEndOffset } from './leader-epoch-cache';
export { segmentFileStem, parseSegmentFileName } from './log-segment';
export {
  encodeRecordBatch,
  decodeRecordBatch,
  decodeRecordBatches,
  validateRecordBatch,
  readBatchHeader,
  checkBatch,
  splitBatches,
  BATCH_HEADER_BYTES,
  RECORD_BATCH_MAGIC,
  MAX_TIMESTAMP_MS,
  NO_PRODUCER_ID,
  NO_PRODUCER_EPOCH,
  NO_SEQUENCE,
  NO_PARTITION_LEADER_EPOCH,
} from '../../shared/records/record-batch';
export type { RecordBatch, RecordBatchHeader, RecordBatchInput, RecordInput, RecordHeader, LogRecord } from '../../shared/records/record-batch';
export { crc32c } from '../../shared/records/crc32c';
