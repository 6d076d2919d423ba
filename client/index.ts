// The public surface of the Flotilla client library. Import from here, not from the files.
// client/ may import only shared/ and npm packages (.dependency-cruiser.js).
export { Flotilla } from './flotilla';
export type { FlotillaConfig } from './config';
export { Admin } from './admin-client';
export type { PartitionOffsets } from './admin-client';
export { Producer } from './producer';
export type { Message, ProducerRecord, RecordMetadata } from './producer';
export type { Acks, ProducerConfig, ProducerRetryOptions, Qos } from './producer-config';
export { Consumer } from './consumer';
export type { ConsumerConfig, ConsumedMessage, EachMessagePayload, OffsetReset, RunOptions, TopicPartition } from './consumer';
export { murmur2, toPositive, partitionForKey } from './partitioner';
export type { RetryOptions } from './retry-policy';
export type {
  BrokerDescription,
  ClusterDescription,
  ClusterEvent,
  CreateTopicOptions,
  ListEventsOptions,
  PartitionDescription,
  PartitionStatus,
  QuorumDescription,
  QuorumMember,
  TopicDescription,
} from './types';
export { FlotillaError, isFlotillaError, ErrorCode } from '../shared/errors/error-codes';
export type { ErrorName } from '../shared/errors/error-codes';
