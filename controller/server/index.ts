// Public surface of controller/server: the gRPC handlers of flotilla.controller.Controller
// (proto/controller.proto), written against the narrow ports in ports.ts.
//
// May import: shared/errors, shared/rpc, shared/log (types), @grpc/grpc-js.
// Does not import the Raft driver or the QuorumController: controller-process.ts wires them.
export { ControllerService, controllerServiceClient } from './controller-service';
export type { ControllerServiceOptions } from './controller-service';
export { FORWARD_HOPS_KEY, FORWARD_HOPS_MAX } from './leader-forwarder';
export { LIMITS } from './request-limits';
export type * from './ports';
