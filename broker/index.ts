// Public surface of broker/: the broker process and its parts. cli/ starts a broker through
// startBroker/runBroker; tests may use the parts directly.
//
// May import: shared/ and npm packages (and node:*). Never controller/, client/, cli/
// (.dependency-cruiser.js): a broker knows the controllers only through proto/controller.proto
// and the metadata log it replays with shared/metadata.
export { startBroker, runBroker } from './broker-process';
export type { BrokerOptions, RunningBroker } from './broker-process';
export { BrokerLifecycleManager } from './broker-lifecycle';
export type { BrokerState, BrokerStatus, BrokerLifecycleOptions } from './broker-lifecycle';
export { ControllerChannel, controllerClientConstructor } from './controller-channel';
export type { ControllerChannelOptions, CallOptions } from './controller-channel';
export { MetadataFollower } from './metadata-follower';
export type { MetadataUpdate, MetadataPublisher, MetadataFollowerOptions } from './metadata-follower';
export { ReplicaManager, Partition, NoopProducerGuard } from './replica';
export type { HostedReplica, Role, ProducerGuard, ProducerGuardFactory, ProducerGuardContext } from './replica';
export { BrokerService } from './server/broker-service';
export { AdminProxy } from './admin-proxy';
export type { AdminProxyOptions } from './admin-proxy';
export { localChangesBetween, isEmptyChange } from './local-changes';
