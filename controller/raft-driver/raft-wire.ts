// Conversion between the core's Message (controller/raft/types.ts) and the frames of
// proto/raft.proto as @grpc/proto-loader represents them (camelCase fields, enums as
// strings, uint64 as number, bytes as Buffer). Pure: no sockets here.
import { ConfState, Entry, EntryType, Message, MessageType } from '../raft';

/** Snapshot data is cut into chunks of this size, far below MAX_MESSAGE_BYTES (16 MiB). */
export const SNAPSHOT_FRAME_BYTES = 1024 * 1024;
/** A received snapshot larger than this is refused: it bounds the memory one stream can pin. */
export const SNAPSHOT_BYTES_MAX = 1024 * 1024 * 1024;

const TO_WIRE_TYPE: Record<MessageType, string> = {
  [MessageType.PreVote]: 'MSG_PRE_VOTE',
  [MessageType.PreVoteResp]: 'MSG_PRE_VOTE_RESP',
  [MessageType.Vote]: 'MSG_VOTE',
  [MessageType.VoteResp]: 'MSG_VOTE_RESP',
  [MessageType.Append]: 'MSG_APPEND',
  [MessageType.AppendResp]: 'MSG_APPEND_RESP',
  [MessageType.Heartbeat]: 'MSG_HEARTBEAT',
  [MessageType.HeartbeatResp]: 'MSG_HEARTBEAT_RESP',
  [MessageType.InstallSnapshot]: 'MSG_INSTALL_SNAPSHOT',
  [MessageType.TimeoutNow]: 'MSG_TIMEOUT_NOW',
  [MessageType.ReadIndex]: 'MSG_READ_INDEX',
  [MessageType.ReadIndexResp]: 'MSG_READ_INDEX_RESP',
};
const FROM_WIRE_TYPE = new Map<string, MessageType>(Object.entries(TO_WIRE_TYPE).map(([k, v]) => [v, k as MessageType]));

export interface WireEntry {
  term: number;
  index: number;
  type: string;
  data: Uint8Array;
}
export interface WireSnapshotMetadata {
  index: number;
  term: number;
  confState: { voters: number[]; learners: number[] } | null;
  dataBytes: number;
}
export interface WireMessage {
  type: string;
  from: number;
  to: number;
  term: number;
  logTerm: number;
  index: number;
  entries: WireEntry[];
  commit: number;
  reject: boolean;
  rejectHint: number;
  snapshot: WireSnapshotMetadata | null;
  context: string;
}
export interface WireHello {
  from: number;
  to: number;
  fromAddress: string;
}
export interface WireChunk {
  offset: number;
  data: Uint8Array;
}
/** A decoded RaftFrame: `body` names the one field that is set (proto-loader `oneofs: true`). */
export interface WireFrame {
  body?: 'hello' | 'message' | 'snapshotChunk';
  hello?: WireHello | null;
  message?: WireMessage | null;
  snapshotChunk?: WireChunk | null;
}

function entryToWire(e: Entry): WireEntry {
  return { term: e.term, index: e.index, type: e.type === EntryType.ConfChange ? 'ENTRY_CONF_CHANGE' : 'ENTRY_NORMAL', data: e.data };
}

function entryFromWire(w: WireEntry): Entry {
  let type: EntryType;
  if (w.type === 'ENTRY_NORMAL') type = EntryType.Normal;
  else if (w.type === 'ENTRY_CONF_CHANGE') type = EntryType.ConfChange;
  else throw new WireError(`unknown entry type ${w.type}`);
  return { term: Number(w.term), index: Number(w.index), type, data: new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength) };
}

/** A malformed frame from a peer: an operating condition (bad peer), not a local bug. */
export class WireError extends Error {}

/**
 * The frames that carry `m`: the message itself, then (for InstallSnapshot) its data in
 * chunks. Chunks are views of the snapshot data, not copies.
 */
export function messageToFrames(m: Message): WireFrame[] {
  const snap = m.snapshot;
  const msg: WireMessage = {
    type: TO_WIRE_TYPE[m.type],
    from: m.from,
    to: m.to,
    term: m.term,
    logTerm: m.logTerm,
    index: m.index,
    entries: m.entries.map(entryToWire),
    commit: m.commit,
    reject: m.reject,
    rejectHint: m.rejectHint,
    snapshot: snap
      ? {
          index: snap.metadata.index,
          term: snap.metadata.term,
          confState: { voters: [...snap.metadata.confState.voters], learners: [...snap.metadata.confState.learners] },
          dataBytes: snap.data.length,
        }
      : null,
    context: m.context,
  };
  const frames: WireFrame[] = [{ body: 'message', message: msg }];
  if (snap) {
    for (let offset = 0; offset < snap.data.length; offset += SNAPSHOT_FRAME_BYTES) {
      frames.push({ body: 'snapshotChunk', snapshotChunk: { offset, data: snap.data.subarray(offset, offset + SNAPSHOT_FRAME_BYTES) } });
    }
  }
  return frames;
}

/** Approximate wire size of a message, for queue byte limits. */
export function messageBytes(m: Message): number {
  let n = 64;
  for (const e of m.entries) n += 24 + e.data.length;
  if (m.snapshot) n += m.snapshot.data.length;
  return n;
}

/**
 * Rebuilds messages from the frames of one stream, in order. An InstallSnapshot message is
 * held until all of its data has arrived.
 */
export class FrameAssembler {
  private pending?: { msg: WireMessage; data: Uint8Array; received: number };

  /** Returns the completed message, if this frame completed one. Throws WireError on malformed input. */
  push(frame: WireFrame): Message | undefined {
    if (frame.body === 'message' && frame.message) {
      if (this.pending) throw new WireError('message frame inside an unfinished snapshot');
      const w = frame.message;
      if (w.snapshot) {
        const size = Number(w.snapshot.dataBytes);
        if (size > SNAPSHOT_BYTES_MAX) throw new WireError(`snapshot of ${size} bytes exceeds ${SNAPSHOT_BYTES_MAX}`);
        if (size > 0) {
          this.pending = { msg: w, data: new Uint8Array(size), received: 0 };
          return undefined;
        }
        return messageFromWire(w, new Uint8Array(0));
      }
      return messageFromWire(w, undefined);
    }
    if (frame.body === 'snapshotChunk' && frame.snapshotChunk) {
      const p = this.pending;
      if (!p) throw new WireError('snapshot chunk without a snapshot message');
      const c = frame.snapshotChunk;
      if (Number(c.offset) !== p.received) throw new WireError(`snapshot chunk at ${c.offset}, expected ${p.received}`);
      if (p.received + c.data.length > p.data.length) throw new WireError('snapshot chunk past the announced size');
      p.data.set(c.data, p.received);
      p.received += c.data.length;
      if (p.received < p.data.length) return undefined;
      this.pending = undefined;
      return messageFromWire(p.msg, p.data);
    }
    throw new WireError(`unexpected frame ${frame.body ?? '(empty)'}`);
  }
}

function messageFromWire(w: WireMessage, snapshotData: Uint8Array | undefined): Message {
  const type = FROM_WIRE_TYPE.get(w.type);
  if (type === undefined) throw new WireError(`unknown message type ${w.type}`);
  let snapshot: Message['snapshot'];
  if (w.snapshot && snapshotData) {
    const cs: ConfState = { voters: (w.snapshot.confState?.voters ?? []).map(Number), learners: (w.snapshot.confState?.learners ?? []).map(Number) };
    snapshot = { metadata: { index: Number(w.snapshot.index), term: Number(w.snapshot.term), confState: cs }, data: snapshotData };
  }
  return {
    type,
    from: Number(w.from),
    to: Number(w.to),
    term: Number(w.term),
    logTerm: Number(w.logTerm),
    index: Number(w.index),
    entries: (w.entries ?? []).map(entryFromWire),
    commit: Number(w.commit),
    reject: Boolean(w.reject),
    rejectHint: Number(w.rejectHint),
    snapshot,
    context: w.context ?? '',
  };
}
