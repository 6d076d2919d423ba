import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { EntryType, Message, MessageType } from '../../controller/raft';
import {
  FrameAssembler,
  SNAPSHOT_FRAME_BYTES,
  WireError,
  decodeAck,
  decodeFrame,
  encodeAck,
  encodeHello,
  messageToFrames,
} from '../../controller/raft-driver/raft-wire';
import { MAX_MESSAGE_BYTES, loadProto } from '../../shared/rpc/proto';

// raft-wire.ts encodes proto/raft.proto by hand. These tests hold it to that file: what it
// writes, protobufjs (loading proto/raft.proto) reads back as the same message, and what
// protobufjs writes, it reads.

function message(over: Partial<Message>): Message {
  return {
    type: MessageType.Append,
    from: 1,
    to: 2,
    term: 3,
    logTerm: 2,
    index: 9,
    entries: [],
    commit: 8,
    reject: false,
    rejectHint: 0,
    context: '',
    ...over,
  };
}

/** proto/raft.proto's Stream method as @grpc/proto-loader builds it: the reference codec. */
function reference(): grpc.MethodDefinition<unknown, unknown> {
  const pkg = loadProto('raft.proto') as unknown as { flotilla: { raft: { RaftTransport: grpc.ServiceClientConstructor } } };
  return pkg.flotilla.raft.RaftTransport.service.Stream;
}

/** Through the reference: decode our bytes with protobufjs, encode them again with it. */
function viaProtobufjs(frames: Buffer[]): Buffer[] {
  const def = reference();
  return frames.map((b) => {
    expect(b.length).to.be.below(MAX_MESSAGE_BYTES);
    return def.requestSerialize(def.requestDeserialize(b));
  });
}

function assemble(frames: Buffer[]): (Message | undefined)[] {
  const asm = new FrameAssembler();
  return frames.map((b) => asm.push(decodeFrame(b)));
}

const entries = [
  { index: 10, term: 3, type: EntryType.Normal, data: Buffer.from('a') },
  { index: 11, term: 3, type: EntryType.ConfChange, data: new Uint8Array([0, 0, 0, 0, 4]) },
  { index: 12, term: 3, type: EntryType.Normal, data: new Uint8Array(0) },
  { index: 2 ** 40 + 3, term: 2 ** 33, type: EntryType.Normal, data: Buffer.alloc(300, 7) },
];

function entryRows(m: Message): unknown[] {
  return m.entries.map((e) => [e.index, e.term, e.type, Buffer.from(e.data).toString('hex')]);
}

describe('raft-driver wire format (proto/raft.proto, encoded by hand)', () => {
  it('an append with entries reads back the same through protobufjs', () => {
    const m = message({ entries, reject: true, rejectHint: 7, context: 'ctx-é', term: 2 ** 45, commit: 2 ** 31 + 5 });
    const decoded = reference().requestDeserialize(messageToFrames(m)[0]) as { body: string; message: Record<string, unknown> };
    expect(decoded.body).to.equal('message');
    expect(decoded.message.type).to.equal('MSG_APPEND');
    expect(decoded.message.term).to.equal(2 ** 45);
    expect(decoded.message.commit).to.equal(2 ** 31 + 5);
    expect(decoded.message.rejectHint).to.equal(7);
    expect(decoded.message.context).to.equal('ctx-é');
    expect((decoded.message.entries as { type: string }[]).map((e) => e.type)).to.deep.equal(['ENTRY_NORMAL', 'ENTRY_CONF_CHANGE', 'ENTRY_NORMAL', 'ENTRY_NORMAL']);

    const [got] = assemble(viaProtobufjs(messageToFrames(m)));
    expect({ ...got!, entries: [] }).to.deep.equal({ ...m, entries: [], snapshot: undefined });
    expect(entryRows(got!)).to.deep.equal(entryRows(m));
  });

  it('every message type and the proto3 defaults (zero, false, empty) survive both ways', () => {
    for (const type of Object.values(MessageType)) {
      const m = message({ type, from: 4, to: 5, term: 0, logTerm: 0, index: 0, commit: 0 });
      const ours = messageToFrames(m);
      const [direct] = assemble(ours);
      const [viaRef] = assemble(viaProtobufjs(ours));
      expect(direct).to.deep.equal({ ...m, snapshot: undefined });
      expect(viaRef).to.deep.equal({ ...m, snapshot: undefined });
      // proto3 defaults are left out (protobufjs through proto-loader writes them explicitly;
      // readers treat both alike): only the type, from and to are on the wire here.
      expect(ours[0].length).to.equal(8);
    }
  });

  it('reads a frame protobufjs encoded from an object', () => {
    const bytes = reference().requestSerialize({
      message: {
        type: 'MSG_APPEND_RESP',
        from: 3,
        to: 1,
        term: 9,
        index: 77,
        reject: true,
        rejectHint: 70,
        logTerm: 8,
        entries: [{ term: 9, index: 78, type: 'ENTRY_CONF_CHANGE', data: Buffer.from([1, 2]) }],
      },
    });
    const [m] = assemble([bytes]);
    expect(m).to.deep.equal({
      type: MessageType.AppendResp,
      from: 3,
      to: 1,
      term: 9,
      logTerm: 8,
      index: 77,
      entries: m!.entries,
      commit: 0,
      reject: true,
      rejectHint: 70,
      snapshot: undefined,
      context: '',
    });
    expect(entryRows(m!)).to.deep.equal([[78, 9, EntryType.ConfChange, '0102']]);
  });

  it('the hello and the Ack match the reference', () => {
    const h = encodeHello({ from: 2, to: 3, fromAddress: '127.0.0.1:9093' });
    expect(reference().requestDeserialize(h)).to.deep.include({ body: 'hello', hello: { from: 2, to: 3, fromAddress: '127.0.0.1:9093' } });
    expect(decodeFrame(h)).to.deep.equal({ body: 'hello', hello: { from: 2, to: 3, fromAddress: '127.0.0.1:9093' } });
    expect(reference().responseDeserialize(encodeAck(12345))).to.deep.equal({ received: 12345 });
    expect(decodeAck(reference().responseSerialize({ received: 42 }))).to.equal(42);
    expect(decodeAck(encodeAck(0))).to.equal(0);
  });

  it('sends a snapshot larger than a frame in chunks and reassembles it, also through protobufjs', () => {
    const data = Buffer.alloc(2 * SNAPSHOT_FRAME_BYTES + 100);
    for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
    const m = message({
      type: MessageType.InstallSnapshot,
      snapshot: { metadata: { index: 50, term: 3, confState: { voters: [1, 2, 3], learners: [4] } }, data },
    });
    for (const frames of [messageToFrames(m), viaProtobufjs(messageToFrames(m))]) {
      expect(frames).to.have.length(4);
      const out = assemble(frames);
      expect(out.slice(0, 3)).to.deep.equal([undefined, undefined, undefined]);
      const got = out[3]!;
      expect(got.type).to.equal(MessageType.InstallSnapshot);
      expect(got.snapshot!.metadata).to.deep.equal(m.snapshot!.metadata);
      expect(Buffer.compare(Buffer.from(got.snapshot!.data), data)).to.equal(0);
    }
  });

  it('an empty snapshot needs no chunk', () => {
    const m = message({ type: MessageType.InstallSnapshot, snapshot: { metadata: { index: 5, term: 1, confState: { voters: [], learners: [] } }, data: new Uint8Array(0) } });
    const frames = messageToFrames(m);
    expect(frames).to.have.length(1);
    const [got] = assemble(viaProtobufjs(frames));
    expect(got!.snapshot).to.deep.equal(m.snapshot);
  });

  it('rejects a chunk that does not continue the snapshot', () => {
    const m = message({
      type: MessageType.InstallSnapshot,
      snapshot: { metadata: { index: 5, term: 1, confState: { voters: [1], learners: [] } }, data: Buffer.alloc(10) },
    });
    const [head] = messageToFrames(m);
    const asm = new FrameAssembler();
    asm.push(decodeFrame(head));
    expect(() => asm.push({ body: 'snapshotChunk', offset: 3, data: Buffer.alloc(2) })).to.throw(WireError);
  });

  it('refuses malformed bytes with a WireError, never another exception', () => {
    const good = messageToFrames(message({ entries, context: 'x' }))[0];
    for (let cut = 0; cut < good.length; cut++) {
      try {
        decodeFrame(good.subarray(0, cut));
      } catch (err) {
        expect(err).to.be.instanceOf(WireError);
      }
    }
    // Message type 0 (MSG_UNSPECIFIED) and 99 are not messages.
    expect(() => decodeFrame(Buffer.from([0x12, 0x02, 0x08, 0x00]))).to.throw(WireError, /unknown message type 0/);
    expect(() => decodeFrame(Buffer.from([0x12, 0x02, 0x08, 99]))).to.throw(WireError, /unknown message type 99/);
    // An eleven-byte varint.
    expect(() => decodeFrame(Buffer.from([0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]))).to.throw(WireError);
    // A length past the end.
    expect(() => decodeFrame(Buffer.from([0x12, 0x7f, 0x08]))).to.throw(WireError, /past the end/);
  });
});
