import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { EntryType, Message, MessageType } from '../../controller/raft';
import { FrameAssembler, SNAPSHOT_FRAME_BYTES, WireError, WireFrame, messageToFrames } from '../../controller/raft-driver/raft-wire';
import { MAX_MESSAGE_BYTES, loadProto } from '../../shared/rpc/proto';

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

/** Through the real protobuf encoding of proto/raft.proto, as gRPC would send it. */
function overTheWire(frames: WireFrame[]): WireFrame[] {
  const pkg = loadProto('raft.proto') as unknown as { flotilla: { raft: { RaftTransport: grpc.ServiceClientConstructor } } };
  const def = pkg.flotilla.raft.RaftTransport.service.Stream;
  return frames.map((f) => {
    const bytes = def.requestSerialize(f);
    expect(bytes.length).to.be.below(MAX_MESSAGE_BYTES);
    return def.requestDeserialize(bytes) as WireFrame;
  });
}

describe('raft-driver wire format', () => {
  it('round-trips an append with entries through proto/raft.proto', () => {
    const m = message({
      entries: [
        { index: 10, term: 3, type: EntryType.Normal, data: Buffer.from('a') },
        { index: 11, term: 3, type: EntryType.ConfChange, data: new Uint8Array([0, 0, 0, 0, 4]) },
      ],
      reject: true,
      rejectHint: 7,
      context: 'ctx',
    });
    const asm = new FrameAssembler();
    const [frame] = overTheWire(messageToFrames(m));
    const got = asm.push(frame)!;
    expect({ ...got, entries: [] }).to.deep.equal({ ...m, entries: [], snapshot: undefined });
    expect(got.entries.map((e) => [e.index, e.term, e.type, Buffer.from(e.data).toString('hex')])).to.deep.equal([
      [10, 3, EntryType.Normal, '61'],
      [11, 3, EntryType.ConfChange, '0000000004'],
    ]);
  });

  it('sends a snapshot larger than a frame in chunks and reassembles it', () => {
    const data = Buffer.alloc(2 * SNAPSHOT_FRAME_BYTES + 100);
    for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
    const m = message({
      type: MessageType.InstallSnapshot,
      snapshot: { metadata: { index: 50, term: 3, confState: { voters: [1, 2, 3], learners: [4] } }, data },
    });
    const frames = overTheWire(messageToFrames(m));
    expect(frames).to.have.length(4);
    const asm = new FrameAssembler();
    const out = frames.map((f) => asm.push(f));
    expect(out.slice(0, 3)).to.deep.equal([undefined, undefined, undefined]);
    const got = out[3]!;
    expect(got.type).to.equal(MessageType.InstallSnapshot);
    expect(got.snapshot!.metadata).to.deep.equal(m.snapshot!.metadata);
    expect(Buffer.compare(Buffer.from(got.snapshot!.data), data)).to.equal(0);
  });

  it('rejects a chunk that does not continue the snapshot', () => {
    const m = message({
      type: MessageType.InstallSnapshot,
      snapshot: { metadata: { index: 5, term: 1, confState: { voters: [1], learners: [] } }, data: Buffer.alloc(10) },
    });
    const [head] = messageToFrames(m);
    const asm = new FrameAssembler();
    asm.push(head);
    expect(() => asm.push({ body: 'snapshotChunk', snapshotChunk: { offset: 3, data: Buffer.alloc(2) } })).to.throw(WireError);
  });
});
