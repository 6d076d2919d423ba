// One entry of a FetchMetadata response (proto/controller.proto), as @grpc/proto-loader
// exposes it (camelCase fields). Shared by the controller that streams it and the brokers
// (and tests) that read it, so the two sides cannot drift apart.
export interface FetchMetadataWireEntry {
  /** Raft index of the entry (metadata offset). */
  offset: number;
  term: number;
  /** One encoded MetadataRecordBatch. */
  batch: Uint8Array;
  /** Part of an image sent because the requested offset was compacted. */
  snapshot: boolean;
  /** The last chunk of such an image. */
  snapshotDone: boolean;
}
