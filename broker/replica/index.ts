// Public surface of broker/replica: the hosted partition replicas (issue 3 §1, §3, §4):
// ReplicaManager (acts on metadata, owns logs, fetchers and periodic work), Partition (one
// replica: leader append, HW, ISR, follower append and truncation), the follower fetchers,
// and the ProducerGuard seam for idempotent producers.
//
// May import: broker/log, broker/metadata-follower (types), shared/, npm, node:*.
export { ReplicaManager, OPEN_CONCURRENCY_MAX_DEFAULT, REPLICA_LAG_TIME_MAX_MS_DEFAULT, HW_CHECKPOINT_INTERVAL_MS_DEFAULT, RETENTION_CHECK_INTERVAL_MS_DEFAULT, LOGS_DIR } from './replica-manager';
export type { ReplicaManagerOptions, HostedReplica } from './replica-manager';
export { Partition } from './partition';
export type { Role, FollowerState, IsrChangeRequest, PartitionDeps, LeaderAppendResult, Divergence } from './partition';
export { NoopProducerGuard, noopProducerGuardFactory } from './producer-guard';
export type { ProducerGuard, ProducerGuardContext, ProducerGuardFactory, GuardLogReader } from './producer-guard';
export { ReplicaFetcherManager, FETCH_MAX_WAIT_MS, brokerClientConstructor } from './replica-fetcher';
export { readHwCheckpoint, writeHwCheckpoint, HW_CHECKPOINT_FILE } from './hw-checkpoint';
export * from './limits';
