import { ConfChange, ConfChangeType } from './types';

// Two bytes of type and four of node id: small, fixed, and no TextEncoder needed.
export function encodeConfChange(cc: ConfChange): Uint8Array {
  const b = new Uint8Array(5);
  b[0] = cc.type;
  b[1] = (cc.nodeId >>> 24) & 0xff;
  b[2] = (cc.nodeId >>> 16) & 0xff;
  b[3] = (cc.nodeId >>> 8) & 0xff;
  b[4] = cc.nodeId & 0xff;
  return b;
}

export function decodeConfChange(b: Uint8Array): ConfChange {
  if (b.length !== 5 || b[0] > ConfChangeType.RemoveNode) throw new Error(`malformed conf change (${b.length} bytes)`);
  const nodeId = ((b[1] << 24) | (b[2] << 16) | (b[3] << 8) | b[4]) >>> 0;
  return { type: b[0] as ConfChangeType, nodeId };
}
