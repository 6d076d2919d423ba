// Public surface of shared/metadata: the cluster metadata model shared by the controller and
// the brokers (Kafka KRaft's metadata/ module: records, MetadataImage, MetadataDelta).
//
// State changes only by replaying committed records: MetadataDelta.replay() then apply().
// Everything here is pure (no clock, no network, no randomness unless injected); the only
// I/O is record-codec.ts reading proto/metadata.proto once.
//
// May import: shared/errors, protobufjs, node:assert, node:fs/node:path (codec only).
// Must not import: controller/, broker/, client/, cli/.

export * from './records';
export { encodeBatch, decodeBatch } from './record-codec';
export {
  MetadataImage,
  EVENTS_CAPACITY,
  configResourceKey,
  partitionKey,
  partitionLabel,
} from './image';
export type { BrokerRegistration, PartitionState, TopicImage, MetadataEvent, MetadataImageFields, OffPreferredPartition } from './image';
export { PersistentMap } from './persistent-map';
export { MetadataDelta, applyPartitionChange, replayOnto } from './delta';
export type { LocalReplicaChanges, LocalPartitionChange, LocalPartitionRemoval } from './delta';
export { imageToRecords, imageFromRecords, imageToBatches, encodeImageInSlices } from './snapshot';
export {
  validateTopicName,
  validatePartitionCount,
  validateReplicationFactor,
  validateTopicConfigs,
  parseTopicConfig,
  topicCollisionKey,
  TOPIC_CONFIGS,
  DEFAULT_TOPIC_CONFIG,
  MAX_TOPIC_NAME_LENGTH,
  MAX_PARTITIONS_PER_TOPIC,
  MAX_REPLICATION_FACTOR,
  MAX_CLUSTER_PARTITIONS,
  MAX_CONFIG_VALUE_LENGTH,
} from './validation';
export type { TopicConfig, CleanupPolicy, TimestampType } from './validation';
export { assignReplicas, rackAlternatedBrokers } from './placement';
export type { PlacementBroker, PlacementOptions } from './placement';
export { electLeader, preferredLeader, preferredLeaderChange } from './partition-election';
export type { ElectionResult, ElectionOptions, LiveBrokers } from './partition-election';
export { partitionHealth } from './partition-health';
export type { PartitionHealth, PartitionStatus } from './partition-health';
