// Public surface of broker/producer: the idempotent producer's broker side (issue 3 §5) —
// per-partition producer state (sequence/epoch checks, duplicate answers) kept across
// restarts and leader changes, and producer ids from controller-allocated blocks.
// README.md here: files, Kafka analogues, decisions.
//
// May import: shared/, node:*, and (types only) broker/log. Nothing else of broker/.
export {
  ProducerStateTable,
  BATCHES_RETAINED_PER_PRODUCER,
  DEFAULT_PRODUCER_STATE_LIMITS,
  lastSequenceOf,
  isNextSequence,
} from './producer-state';
export type { ProducerStateLimits, ProducerEntry, ProducerBatchEntry, CheckResult, LastBatch } from './producer-state';
export { ProducerStateManager, PRODUCER_STATE_DEFAULTS } from './producer-state-manager';
export type { ProducerGuard, ProducerLogReader, ProducerStateManagerOptions, RebuildInfo } from './producer-state-manager';
export { encodeSnapshot, decodeSnapshot, snapshotFileName, listSnapshots, SNAPSHOT_SUFFIX } from './producer-snapshot';
export type { ProducerSnapshot } from './producer-snapshot';
export { ProducerIdManager } from './producer-id-manager';
export type { ProducerIdBlock, ProducerIdAndEpoch, ProducerIdManagerOptions } from './producer-id-manager';
