// Public surface of controller/quorum: the QuorumController (Kafka KRaft's QuorumController),
// the metadata state machine of the controller quorum, and its contracts with the Raft
// driver (MetadataLog, StateMachine).
//
// May import: shared/errors, shared/metadata, node:assert, node:crypto.
// Must not import: controller/raft (the driver connects the two), broker/, client/, cli/.
export { QuorumController, describeTopic, MAX_BROKERS, MAX_BATCH_BYTES, DEFAULT_LIST_EVENTS } from './quorum-controller';
export { changesForDepartingBrokers, changesForReturningBroker, changesForLeaderBalance } from './partition-changes';
export type * from './types';
