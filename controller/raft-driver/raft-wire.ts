// The bytes of proto/raft.proto's RaftFrame and Ack, encoded and decoded by hand, straight
// from and to the core's Message (controller/raft/types.ts). Pure: no sockets here.
//
// Why by hand: through @grpc/proto-loader every Raft message was converted twice on each side
// (core Message -> proto-loader object -> protobufjs message -> bytes, and back), and that
// conversion was a visible part of a controller's CPU per metadata write. This file writes
// the same protobuf wire format (proto3: field tags, varints, length-delimited submessages,
// default values omitted, packed repeated ids) in one pass, and reads any valid encoding of
// it (fields in any order, unknown fields skipped, packed or unpacked ids), so proto/raft.proto
// stays the true description of what is on the wire; test/raft-driver/raft-wire.test.ts
// checks both directions against protobufjs loading that file.
import { ConfState, Entry, EntryType, Message, MessageType } from '../raft';

/** Snapshot data is cut into chunks of this size, far below MAX_MESSAGE_BYTES (16 MiB). */
export const SNAPSHOT_FRAME_BYTES = 1024 * 1024;
/** A received snapshot larger than this is refused: it bounds the memory one stream can pin. */
export const SNAPSHOT_BYTES_MAX = 1024 * 1024 * 1024;
/** Limit on the entries one received Append may carry (the core sends at most maxEntriesPerMsg = 512). */
export const ENTRIES_PER_MESSAGE_MAX = 100_000;

/** Enum numbers of proto/raft.proto MessageType: part of the wire format. */
const MESSAGE_TYPE_NUMBER: Record<MessageType, number> = {
  [MessageType.PreVote]: 1,
  [MessageType.PreVoteResp]: 2,
  [MessageType.Vote]: 3,
  [MessageType.VoteResp]: 4,
  [MessageType.Append]: 5,
  [MessageType.AppendResp]: 6,
  [MessageType.Heartbeat]: 7,
  [MessageType.HeartbeatResp]: 8,
  [MessageType.InstallSnapshot]: 9,
  [MessageType.TimeoutNow]: 10,
  [MessageType.ReadIndex]: 11,
  [MessageType.ReadIndexResp]: 12,
};
const MESSAGE_TYPE_OF_NUMBER: (MessageType | undefined)[] = [];
for (const [t, n] of Object.entries(MESSAGE_TYPE_NUMBER)) MESSAGE_TYPE_OF_NUMBER[n] = t as MessageType;

// Wire types (protobuf encoding spec).
const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

/** A malformed frame from a peer: an operating condition (bad peer), not a local bug. */
export class WireError extends Error {}

export interface WireHello {
  from: number;
  to: number;
  fromAddress: string;
}

/** InstallSnapshot header: what the snapshot covers and how many data bytes follow in chunks. */
interface WireSnapshotHeader {
  index: number;
  term: number;
  confState: ConfState;
  dataBytes: number;
}

/** A decoded RaftFrame: exactly one body. */
export type WireFrame =
  | { body: 'hello'; hello: WireHello }
  | { body: 'message'; message: Message; snapshot: WireSnapshotHeader | undefined }
  | { body: 'snapshotChunk'; offset: number; data: Uint8Array };

// ------------------------------------------------------------------ encoding

function varintBytes(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Bytes of a field (tag + value) holding varint `n`; 0 for the proto3 default 0. */
function varintField(n: number): number {
  return n === 0 ? 0 : 1 + varintBytes(n);
}

/** Bytes of a length-delimited field (tag + length + body), tag numbers below 16. */
function lenField(bodyBytes: number): number {
  return 1 + varintBytes(bodyBytes) + bodyBytes;
}

class Writer {
  readonly buf: Buffer;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  varint(n: number): void {
    const b = this.buf;
    while (n >= 128) {
      b[this.pos++] = (n % 128) | 128;
      n = Math.floor(n / 128);
    }
    b[this.pos++] = n;
  }

  /** A varint field, omitted when 0 (proto3). */
  varintField(field: number, n: number): void {
    if (n === 0) return;
    this.buf[this.pos++] = (field << 3) | VARINT;
    this.varint(n);
  }

  lenHeader(field: number, bodyBytes: number): void {
    this.buf[this.pos++] = (field << 3) | LEN;
    this.varint(bodyBytes);
  }

  bytes(b: Uint8Array): void {
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  done(): Buffer {
    if (this.pos !== this.buf.length) throw new Error(`raft-wire: encoded ${this.pos} bytes, sized ${this.buf.length}`);
    return this.buf;
  }
}

/**
 * The Entry submessage body of each entry, encoded once: the leader sends the same Entry
 * objects to every follower (and again on a retry), so each is encoded once per process, not
 * once per Append. Weak: an entry dropped from the log takes its encoding with it.
 */
const entryBodies = new WeakMap<Entry, Buffer>();

function entryBody(e: Entry): Buffer {
  let b = entryBodies.get(e);
  if (b === undefined) {
    const type = e.type === EntryType.ConfChange ? 1 : 0;
    const size = varintField(e.term) + varintField(e.index) + varintField(type) + (e.data.length > 0 ? lenField(e.data.length) : 0);
    const w = new Writer(size);
    w.varintField(1, e.term);
    w.varintField(2, e.index);
    w.varintField(3, type);
    if (e.data.length > 0) {
      w.lenHeader(4, e.data.length);
      w.bytes(e.data);
    }
    b = w.done();
    entryBodies.set(e, b);
  }
  return b;
}

function confStateBody(cs: ConfState): number {
  let n = 0;
  for (const list of [cs.voters, cs.learners]) {
    if (list.length === 0) continue;
    let body = 0;
    for (const id of list) body += varintBytes(id);
    n += lenField(body);
  }
  return n;
}

function writeConfState(w: Writer, cs: ConfState): void {
  const lists: [number, readonly number[]][] = [
    [1, cs.voters],
    [2, cs.learners],
  ];
  for (const [field, list] of lists) {
    if (list.length === 0) continue;
    let body = 0;
    for (const id of list) body += varintBytes(id);
    w.lenHeader(field, body);
    for (const id of list) w.varint(id);
  }
}

/** RaftFrame{hello}. */
export function encodeHello(h: WireHello): Buffer {
  const addrBytes = Buffer.byteLength(h.fromAddress, 'utf8');
  const body = varintField(h.from) + varintField(h.to) + (addrBytes > 0 ? lenField(addrBytes) : 0);
  const w = new Writer(lenField(body));
  w.lenHeader(1, body);
  w.varintField(1, h.from);
  w.varintField(2, h.to);
  if (addrBytes > 0) {
    w.lenHeader(3, addrBytes);
    w.pos += w.buf.write(h.fromAddress, w.pos, 'utf8');
  }
  return w.done();
}

/**
 * The RaftFrames that carry `m`: the message itself, then (for InstallSnapshot) its data in
 * SnapshotChunk frames of SNAPSHOT_FRAME_BYTES.
 */
export function messageToFrames(m: Message): Buffer[] {
  const snap = m.snapshot;
  const bodies = m.entries.map(entryBody);
  const contextBytes = m.context.length > 0 ? Buffer.byteLength(m.context, 'utf8') : 0;
  let snapBody = 0;
  if (snap) {
    const md = snap.metadata;
    snapBody = varintField(md.index) + varintField(md.term) + lenField(confStateBody(md.confState)) + varintField(snap.data.length);
  }
  let body =
    varintField(MESSAGE_TYPE_NUMBER[m.type]) +
    varintField(m.from) +
    varintField(m.to) +
    varintField(m.term) +
    varintField(m.logTerm) +
    varintField(m.index) +
    varintField(m.commit) +
    (m.reject ? 2 : 0) +
    varintField(m.rejectHint) +
    (snap ? lenField(snapBody) : 0) +
    (contextBytes > 0 ? lenField(contextBytes) : 0);
  for (const b of bodies) body += lenField(b.length);

  const w = new Writer(lenField(body));
  w.lenHeader(2, body);
  w.varintField(1, MESSAGE_TYPE_NUMBER[m.type]);
  w.varintField(2, m.from);
  w.varintField(3, m.to);
  w.varintField(4, m.term);
  w.varintField(5, m.logTerm);
  w.varintField(6, m.index);
  for (const b of bodies) {
    w.lenHeader(7, b.length);
    w.bytes(b);
  }
  w.varintField(8, m.commit);
  w.varintField(9, m.reject ? 1 : 0);
  w.varintField(10, m.rejectHint);
  if (snap) {
    const md = snap.metadata;
    w.lenHeader(11, snapBody);
    w.varintField(1, md.index);
    w.varintField(2, md.term);
    w.lenHeader(3, confStateBody(md.confState));
    writeConfState(w, md.confState);
    w.varintField(4, snap.data.length);
  }
  if (contextBytes > 0) {
    w.lenHeader(12, contextBytes);
    w.pos += w.buf.write(m.context, w.pos, 'utf8');
  }
  const frames = [w.done()];
  if (snap) {
    for (let offset = 0; offset < snap.data.length; offset += SNAPSHOT_FRAME_BYTES) {
      const data = snap.data.subarray(offset, offset + SNAPSHOT_FRAME_BYTES);
      const chunkBody = varintField(offset) + lenField(data.length);
      const c = new Writer(lenField(chunkBody));
      c.lenHeader(3, chunkBody);
      c.varintField(1, offset);
      c.lenHeader(2, data.length);
      c.bytes(data);
      frames.push(c.done());
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

/** Ack{received}. */
export function encodeAck(received: number): Buffer {
  const w = new Writer(varintField(received));
  w.varintField(1, received);
  return w.done();
}

// ------------------------------------------------------------------ decoding

class Reader {
  pos: number;

  constructor(
    readonly buf: Buffer,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }

  more(): boolean {
    return this.pos < this.end;
  }

  varint(): number {
    const b0 = this.pos < this.end ? this.buf[this.pos] : -1;
    if (b0 >= 0 && b0 < 128) {
      this.pos++;
      return b0;
    }
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new WireError('truncated varint');
      const b = this.buf[this.pos++];
      result += (b & 127) * mul;
      if (b < 128) {
        if (result > Number.MAX_SAFE_INTEGER) throw new WireError(`varint ${result} exceeds 2^53`);
        return result;
      }
      mul *= 128;
    }
    throw new WireError('varint longer than 10 bytes');
  }

  /** The [start, end) of a length-delimited value; advances past it. */
  len(): [number, number] {
    const n = this.varint();
    const start = this.pos;
    if (n > this.end - start) throw new WireError(`length ${n} runs past the end of the frame`);
    this.pos = start + n;
    return [start, start + n];
  }

  skip(wireType: number): void {
    switch (wireType) {
      case VARINT:
        this.varint();
        return;
      case FIXED64:
        this.advance(8);
        return;
      case LEN:
        this.len();
        return;
      case FIXED32:
        this.advance(4);
        return;
      default:
        throw new WireError(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.end - this.pos) throw new WireError('truncated field');
    this.pos += n;
  }
}

/** The next field's number and wire type. */
function tag(r: Reader): [number, number] {
  const t = r.varint();
  return [Math.floor(t / 8), t & 7];
}

function expectWireType(field: string, got: number, want: number): void {
  if (got !== want) throw new WireError(`${field}: wire type ${got}, expected ${want}`);
}

function uint32(field: string, n: number): number {
  if (n > 0xffffffff) throw new WireError(`${field}: ${n} does not fit uint32`);
  return n;
}

function readUtf8(r: Reader): string {
  const [s, e] = r.len();
  return r.buf.toString('utf8', s, e);
}

/** A packed (or, as proto3 allows, unpacked) repeated uint32 into `out`. */
function readIds(r: Reader, wireType: number, out: number[], field: string): void {
  if (wireType === VARINT) {
    out.push(uint32(field, r.varint()));
    return;
  }
  expectWireType(field, wireType, LEN);
  const [s, e] = r.len();
  const sub = new Reader(r.buf, s, e);
  while (sub.more()) {
    if (out.length >= 100_000) throw new WireError(`${field}: too many ids`);
    out.push(uint32(field, sub.varint()));
  }
}

function readHello(r: Reader, s: number, e: number): WireHello {
  const sub = new Reader(r.buf, s, e);
  const h: WireHello = { from: 0, to: 0, fromAddress: '' };
  while (sub.more()) {
    const [f, wt] = tag(sub);
    if (f === 1 && wt === VARINT) h.from = uint32('hello.from', sub.varint());
    else if (f === 2 && wt === VARINT) h.to = uint32('hello.to', sub.varint());
    else if (f === 3 && wt === LEN) h.fromAddress = readUtf8(sub);
    else sub.skip(wt);
  }
  return h;
}

function readEntry(buf: Buffer, s: number, e: number): Entry {
  const r = new Reader(buf, s, e);
  let term = 0;
  let index = 0;
  let type = EntryType.Normal;
  let data: Uint8Array = EMPTY;
  while (r.more()) {
    const [f, wt] = tag(r);
    if (f === 1 && wt === VARINT) term = r.varint();
    else if (f === 2 && wt === VARINT) index = r.varint();
    else if (f === 3 && wt === VARINT) {
      const t = r.varint();
      if (t === 0) type = EntryType.Normal;
      else if (t === 1) type = EntryType.ConfChange;
      else throw new WireError(`unknown entry type ${t}`);
    } else if (f === 4 && wt === LEN) {
      const [ds, de] = r.len();
      // A view of the received frame, not a copy (grpc-js hands each frame its own buffer).
      data = buf.subarray(ds, de);
    } else r.skip(wt);
  }
  return { term, index, type, data };
}

function readConfState(r: Reader, s: number, e: number): ConfState {
  const sub = new Reader(r.buf, s, e);
  const voters: number[] = [];
  const learners: number[] = [];
  while (sub.more()) {
    const [f, wt] = tag(sub);
    if (f === 1) readIds(sub, wt, voters, 'conf_state.voters');
    else if (f === 2) readIds(sub, wt, learners, 'conf_state.learners');
    else sub.skip(wt);
  }
  return { voters, learners };
}

function readSnapshotHeader(r: Reader, s: number, e: number): WireSnapshotHeader {
  const sub = new Reader(r.buf, s, e);
  const h: WireSnapshotHeader = { index: 0, term: 0, confState: { voters: [], learners: [] }, dataBytes: 0 };
  while (sub.more()) {
    const [f, wt] = tag(sub);
    if (f === 1 && wt === VARINT) h.index = sub.varint();
    else if (f === 2 && wt === VARINT) h.term = sub.varint();
    else if (f === 3 && wt === LEN) {
      const [cs, ce] = sub.len();
      h.confState = readConfState(sub, cs, ce);
    } else if (f === 4 && wt === VARINT) h.dataBytes = sub.varint();
    else sub.skip(wt);
  }
  return h;
}

const EMPTY = new Uint8Array(0);

function readMessage(r: Reader, s: number, e: number): { message: Message; snapshot: WireSnapshotHeader | undefined } {
  const sub = new Reader(r.buf, s, e);
  let type: MessageType | undefined;
  let typeNumber = 0;
  let from = 0;
  let to = 0;
  let term = 0;
  let logTerm = 0;
  let index = 0;
  const entries: Entry[] = [];
  let commit = 0;
  let reject = false;
  let rejectHint = 0;
  let snapshot: WireSnapshotHeader | undefined;
  let context = '';
  while (sub.more()) {
    const [f, wt] = tag(sub);
    switch (f) {
      case 1:
        expectWireType('message.type', wt, VARINT);
        typeNumber = sub.varint();
        type = MESSAGE_TYPE_OF_NUMBER[typeNumber];
        break;
      case 2:
        expectWireType('message.from', wt, VARINT);
        from = uint32('message.from', sub.varint());
        break;
      case 3:
        expectWireType('message.to', wt, VARINT);
        to = uint32('message.to', sub.varint());
        break;
      case 4:
        expectWireType('message.term', wt, VARINT);
        term = sub.varint();
        break;
      case 5:
        expectWireType('message.log_term', wt, VARINT);
        logTerm = sub.varint();
        break;
      case 6:
        expectWireType('message.index', wt, VARINT);
        index = sub.varint();
        break;
      case 7: {
        expectWireType('message.entries', wt, LEN);
        if (entries.length >= ENTRIES_PER_MESSAGE_MAX) throw new WireError(`more than ${ENTRIES_PER_MESSAGE_MAX} entries in one message`);
        const [es, ee] = sub.len();
        entries.push(readEntry(sub.buf, es, ee));
        break;
      }
      case 8:
        expectWireType('message.commit', wt, VARINT);
        commit = sub.varint();
        break;
      case 9:
        expectWireType('message.reject', wt, VARINT);
        reject = sub.varint() !== 0;
        break;
      case 10:
        expectWireType('message.reject_hint', wt, VARINT);
        rejectHint = sub.varint();
        break;
      case 11: {
        expectWireType('message.snapshot', wt, LEN);
        const [ss, se] = sub.len();
        snapshot = readSnapshotHeader(sub, ss, se);
        break;
      }
      case 12:
        expectWireType('message.context', wt, LEN);
        context = readUtf8(sub);
        break;
      default:
        sub.skip(wt);
    }
  }
  if (type === undefined) throw new WireError(`unknown message type ${typeNumber}`);
  return { message: { type, from, to, term, logTerm, index, entries, commit, reject, rejectHint, snapshot: undefined, context }, snapshot };
}

/** Decodes one RaftFrame. Throws WireError on malformed input. */
export function decodeFrame(buf: Buffer): WireFrame {
  const r = new Reader(buf, 0, buf.length);
  let frame: WireFrame | undefined;
  // A oneof set more than once on the wire: the last one wins (protobuf merge rules).
  while (r.more()) {
    const [f, wt] = tag(r);
    if (wt !== LEN || f < 1 || f > 3) {
      r.skip(wt);
      continue;
    }
    const [s, e] = r.len();
    if (f === 1) frame = { body: 'hello', hello: readHello(r, s, e) };
    else if (f === 2) frame = { body: 'message', ...readMessage(r, s, e) };
    else {
      const sub = new Reader(buf, s, e);
      let offset = 0;
      let data: Uint8Array = EMPTY;
      while (sub.more()) {
        const [cf, cwt] = tag(sub);
        if (cf === 1 && cwt === VARINT) offset = sub.varint();
        else if (cf === 2 && cwt === LEN) {
          const [ds, de] = sub.len();
          data = buf.subarray(ds, de);
        } else sub.skip(cwt);
      }
      frame = { body: 'snapshotChunk', offset, data };
    }
  }
  if (!frame) throw new WireError('empty frame');
  return frame;
}

/** Ack.received. */
export function decodeAck(buf: Buffer): number {
  const r = new Reader(buf, 0, buf.length);
  let received = 0;
  while (r.more()) {
    const [f, wt] = tag(r);
    if (f === 1 && wt === VARINT) received = r.varint();
    else r.skip(wt);
  }
  return received;
}

/**
 * Rebuilds messages from the frames of one stream, in order. An InstallSnapshot message is
 * held until all of its data has arrived.
 */
export class FrameAssembler {
  private pending?: { message: Message; header: WireSnapshotHeader; data: Uint8Array; received: number };

  /** Returns the completed message, if this frame completed one. Throws WireError on malformed input. */
  push(frame: WireFrame): Message | undefined {
    if (frame.body === 'message') {
      if (this.pending) throw new WireError('message frame inside an unfinished snapshot');
      const h = frame.snapshot;
      if (!h) return frame.message;
      if (h.dataBytes > SNAPSHOT_BYTES_MAX) throw new WireError(`snapshot of ${h.dataBytes} bytes exceeds ${SNAPSHOT_BYTES_MAX}`);
      if (h.dataBytes > 0) {
        this.pending = { message: frame.message, header: h, data: new Uint8Array(h.dataBytes), received: 0 };
        return undefined;
      }
      return withSnapshot(frame.message, h, new Uint8Array(0));
    }
    if (frame.body === 'snapshotChunk') {
      const p = this.pending;
      if (!p) throw new WireError('snapshot chunk without a snapshot message');
      if (frame.offset !== p.received) throw new WireError(`snapshot chunk at ${frame.offset}, expected ${p.received}`);
      if (p.received + frame.data.length > p.data.length) throw new WireError('snapshot chunk past the announced size');
      p.data.set(frame.data, p.received);
      p.received += frame.data.length;
      if (p.received < p.data.length) return undefined;
      this.pending = undefined;
      return withSnapshot(p.message, p.header, p.data);
    }
    throw new WireError(`unexpected frame ${frame.body}`);
  }
}

function withSnapshot(m: Message, h: WireSnapshotHeader, data: Uint8Array): Message {
  return { ...m, snapshot: { metadata: { index: h.index, term: h.term, confState: h.confState }, data } };
}
