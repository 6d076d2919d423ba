// Public surface of shared/records: the record batch (Kafka's RecordBatch v2 layout, see
// record-batch.ts) and its CRC32C. Shared because three parties handle the same bytes: the
// client encodes batches and decodes fetched ones, the broker's log validates, stamps and
// stores them, and followers copy them byte for byte.
//
// May import: shared/errors and @chainsafe/fast-crc32c. Pure: no I/O, no clock.
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
} from './record-batch';
export type { RecordBatch, RecordBatchHeader, RecordBatchInput, RecordInput, RecordHeader, LogRecord } from './record-batch';
export { crc32c } from './crc32c';
