// The public surface of the Flotilla client library. Import from here, not from the files.
// client/ may import only shared/ and npm packages (.dependency-cruiser.js).
export { Flotilla, Admin } from './admin-client';
export type { FlotillaConfig } from './admin-client';
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
