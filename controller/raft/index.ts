// Public surface of the pure Raft core. It imports nothing from node:*, gRPC or disk.
export * from './types';
export { RaftNode, RaftRefusedError, RaftRefusal } from './raft-node';
export { encodeConfChange, decodeConfChange } from './conf-change';
