// What the driver puts inside the opaque Raft payloads, so that controller addresses are
// replicated (and survive restarts and snapshots) without the state machine knowing.
//
// Normal entry data:   []                      the leader's no-op (written by the core)
//                      [0x01, ...app bytes]    application data, handed to StateMachine.apply
//                      [0x02, ...JSON]         a controller address {id, address}, proposed by
//                                              addController() before its AddLearner change
// Snapshot data:       [0x01][u32 BE n][n bytes JSON [[id, address], ...]][...app snapshot]
//
// Why not put the address into the ConfChange entry: the core's ConfChange encoding is a
// fixed five bytes (controller/raft/conf-change.ts) and the core decodes it itself.
// The one-byte tag costs one copy of each proposal; it buys that every node, including one
// restored from a snapshot or restarted from its log, knows every member's address.

export const PAYLOAD_APP = 0x01;
export const PAYLOAD_PEER_ADDRESS = 0x02;
const SNAPSHOT_FORMAT = 0x01;
const EMPTY = new Uint8Array(0);

export type DecodedPayload =
  | { kind: 'noop' }
  | { kind: 'app'; data: Uint8Array }
  | { kind: 'peerAddress'; id: number; address: string };

export function encodeAppPayload(data: Uint8Array): Uint8Array {
  const b = new Uint8Array(1 + data.length);
  b[0] = PAYLOAD_APP;
  b.set(data, 1);
  return b;
}

export function encodePeerAddressPayload(id: number, address: string): Uint8Array {
  const body = Buffer.from(JSON.stringify({ id, address }), 'utf8');
  const b = new Uint8Array(1 + body.length);
  b[0] = PAYLOAD_PEER_ADDRESS;
  b.set(body, 1);
  return b;
}

/** Decodes a Normal entry's data. An unknown tag is a bug or corruption: it throws. */
export function decodePayload(data: Uint8Array): DecodedPayload {
  if (data.length === 0) return { kind: 'noop' };
  if (data[0] === PAYLOAD_APP) return { kind: 'app', data: data.subarray(1) };
  if (data[0] === PAYLOAD_PEER_ADDRESS) {
    const v = JSON.parse(Buffer.from(data.buffer, data.byteOffset + 1, data.byteLength - 1).toString('utf8')) as { id: number; address: string };
    if (!Number.isInteger(v.id) || typeof v.address !== 'string') throw new Error('malformed peer address payload');
    return { kind: 'peerAddress', id: v.id, address: v.address };
  }
  throw new Error(`unknown raft payload tag ${data[0]}`);
}

export function encodeSnapshotData(addresses: ReadonlyMap<number, string>, appData: Uint8Array): Uint8Array {
  const meta = Buffer.from(JSON.stringify([...addresses.entries()]), 'utf8');
  const b = Buffer.allocUnsafe(5 + meta.length + appData.length);
  b[0] = SNAPSHOT_FORMAT;
  b.writeUInt32BE(meta.length, 1);
  meta.copy(b, 5);
  b.set(appData, 5 + meta.length);
  return b;
}

export function decodeSnapshotData(data: Uint8Array): { addresses: Map<number, string>; appData: Uint8Array } {
  if (data.length === 0) return { addresses: new Map(), appData: EMPTY };
  const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (b[0] !== SNAPSHOT_FORMAT || b.length < 5) throw new Error(`unknown raft snapshot format ${b[0]}`);
  const n = b.readUInt32BE(1);
  if (5 + n > b.length) throw new Error('truncated raft snapshot header');
  const pairs = JSON.parse(b.subarray(5, 5 + n).toString('utf8')) as [number, string][];
  return { addresses: new Map(pairs), appData: data.subarray(5 + n) };
}
