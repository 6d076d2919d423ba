// Public surface of the Raft driver: the one place that owns disks, gRPC and wall-clock
// time for the pure core in controller/raft/. Imports: controller/raft, shared/rpc,
// shared/errors, level, @grpc/grpc-js, pino (types), node:*.
export { RaftDriver } from './raft-driver';
export type { StateMachine, RaftDriverOptions, QuorumStatus, QuorumMember, CommittedEntry, CommittedRead } from './raft-driver';
export { RaftStorage } from './raft-storage';
