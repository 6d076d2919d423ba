import * as grpc from '@grpc/grpc-js';
import { expect } from 'chai';
import { ControllerChannel, MetadataFollower, MetadataUpdate, controllerClientConstructor } from '../../broker';
import { FlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import { MetadataImage, MetadataRecord, encodeBatch, imageToBatches, replayOnto } from '../../shared/metadata';
import { toGrpcError } from '../../shared/rpc/grpc-errors';
import { SERVER_OPTIONS } from '../../shared/rpc/proto';
import { waitFor } from './in-process-cluster';
import type { FetchMetadataWireEntry as WireEntry } from '../../shared/rpc/metadata-wire';

// The broker's metadata follower against scripted FetchMetadata streams: it replays log
// entries into its own image and publishes what changed for this broker; it reconnects to
// the next controller from the offset after the last applied one and skips entries it
// already has; it replaces its image only when a snapshot's last chunk arrives; it stops on
// a record it cannot read.


type Script = (req: { fromOffset: number; clientId: string }, call: grpc.ServerWritableStream<unknown, unknown>) => void;

/** A controller that serves only FetchMetadata, as scripted. */
class StreamServer {
  readonly requests: { fromOffset: number; clientId: string }[] = [];
  script: Script = () => undefined;
  private constructor(private readonly server: grpc.Server, readonly address: string) {}

  static async start(): Promise<StreamServer> {
    const server = new grpc.Server(SERVER_OPTIONS);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    const s = new StreamServer(server, `127.0.0.1:${port}`);
    server.addService(controllerClientConstructor().service, {
      FetchMetadata: (call: grpc.ServerWritableStream<{ fromOffset: number; clientId: string }, unknown>) => {
        s.requests.push({ fromOffset: Number(call.request.fromOffset), clientId: call.request.clientId });
        s.script(call.request, call);
      },
    });
    return s;
  }

  stop(): void {
    this.server.forceShutdown();
  }
}

const entry = (offset: number, records: MetadataRecord[]): WireEntry => ({ offset, term: 1, batch: encodeBatch(records), snapshot: false, snapshotDone: false });

const broker = (id: number): MetadataRecord => ({
  type: 'RegisterBroker', brokerId: id, incarnationId: `inc-${id}`, brokerEpoch: 0, host: '127.0.0.1', port: 9000 + id, rack: null, fenced: false, reason: `broker ${id} registered`, timestampMs: 1,
});
const topic = (name: string, id: string): MetadataRecord => ({ type: 'Topic', name, topicId: id, reason: `topic ${name} created`, timestampMs: 1 });
const partition = (topicId: string, p: number, replicas: number[]): MetadataRecord => ({
  type: 'Partition', topicId, partition: p, replicas, isr: replicas, leader: replicas[0]!, leaderEpoch: 0, partitionEpoch: 0,
});

describe('broker: MetadataFollower', function () {
  this.timeout(20_000);
  const servers: StreamServer[] = [];
  let channel: ControllerChannel;
  let follower: MetadataFollower;
  let updates: MetadataUpdate[];
  let fatal: unknown;

  async function servers2(): Promise<[StreamServer, StreamServer]> {
    const a = await StreamServer.start();
    const b = await StreamServer.start();
    servers.push(a, b);
    return [a, b];
  }

  function follow(addresses: string[], brokerId = 2): MetadataFollower {
    // random() = 0: the first stream goes to addresses[0].
    channel = new ControllerChannel({ controllers: addresses, logger: silentLogger(), backoffInitialMs: 10, backoffMaxMs: 20, random: () => 0 });
    updates = [];
    fatal = undefined;
    follower = new MetadataFollower({
      brokerId,
      channel,
      logger: silentLogger(),
      publishers: [(u) => updates.push(u)],
      onFatal: (err) => (fatal = err),
    });
    follower.start();
    return follower;
  }

  afterEach(() => {
    follower?.stop();
    channel?.close();
    for (const s of servers.splice(0)) s.stop();
  });

  it('replays entries into its image and publishes local changes, one image per message', async () => {
    const [a, b] = await servers2();
    a.script = (_req, call) => {
      call.write({ entries: [entry(2, [broker(1)]), entry(3, [broker(2)])] });
      call.write({ entries: [entry(5, [topic('t', 'id-t'), partition('id-t', 0, [1, 2]), partition('id-t', 1, [2, 1]), partition('id-t', 2, [1])])] });
    };
    const f = follow([a.address, b.address]);
    await waitFor('offset 5', () => f.appliedOffset() === 5);
    expect(a.requests[0]).to.deep.equal({ fromOffset: 0, clientId: 'broker-2' });
    expect(updates.map((u) => u.image.offset)).to.deep.equal([3, 5]);
    const image = f.currentImage();
    expect([...image.brokers.keys()].sort()).to.deep.equal([1, 2]);
    expect(image.brokers.get(1)!.epoch).to.equal(2); // the epoch is the record's offset
    const last = updates[1]!.localChanges;
    expect(last.leaders.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['t-1']);
    expect(last.followers.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['t-0']);
    expect(last.deletes).to.deep.equal([]);
    expect(updates[1]!.fromSnapshot).to.equal(false);
  });

  it('reconnects to the next controller after an error, from the offset after the last applied, skipping what it has', async () => {
    const [a, b] = await servers2();
    a.script = (_req, call) => {
      call.write({ entries: [entry(4, [broker(1)])] });
      setTimeout(() => call.emit('error', toGrpcError(new FlotillaError('CONTROLLER_UNAVAILABLE', 'shutting down'))), 50);
    };
    b.script = (_req, call) => {
      // Resends 4 (already applied) and continues.
      call.write({ entries: [entry(4, [broker(1)]), entry(6, [broker(2)])] });
    };
    const f = follow([a.address, b.address]);
    await waitFor('offset 6', () => f.appliedOffset() === 6);
    expect(b.requests[0]!.fromOffset).to.equal(5);
    expect(f.currentImage().brokers.get(1)!.epoch).to.equal(4);
    expect(f.currentController()).to.equal(b.address);
  });

  it('loads a snapshot only when its last chunk arrives, and reports partitions it no longer hosts', async () => {
    const [a, b] = await servers2();
    // First a log with topic "old" hosted on broker 2; then the stream breaks and the next
    // controller only has a snapshot in which "old" is gone and "new" exists.
    a.script = (_req, call) => {
      call.write({ entries: [entry(2, [broker(2)]), entry(3, [topic('old', 'id-old'), partition('id-old', 0, [2])])] });
      setTimeout(() => call.emit('error', toGrpcError(new FlotillaError('CONTROLLER_UNAVAILABLE', 'gone'))), 50);
    };
    let snapshot = replayOnto(MetadataImage.EMPTY, [broker(2)], 2);
    snapshot = replayOnto(snapshot, [topic('new', 'id-new'), partition('id-new', 0, [2]), partition('id-new', 1, [1, 2])], 9);
    const chunks = imageToBatches(snapshot, 2);
    expect(chunks.length).to.be.greaterThan(1);
    b.script = (_req, call) => {
      const snap = chunks.map((batch, i) => ({ offset: 9, term: 0, batch, snapshot: true, snapshotDone: i === chunks.length - 1 }));
      call.write({ entries: snap.slice(0, 1) });
      setTimeout(() => call.write({ entries: [...snap.slice(1), entry(10, [topic('later', 'id-later')])] }), 400);
    };
    const f = follow([a.address, b.address]);
    await waitFor('offset 3', () => f.appliedOffset() >= 3);
    // Half a snapshot changes nothing (the rest comes 400 ms after the first chunk).
    await waitFor('the second stream', () => b.requests.length === 1);
    await new Promise((r) => setTimeout(r, 100));
    expect(f.appliedOffset()).to.equal(3);
    expect(f.currentImage().topics.has('old')).to.equal(true);
    await waitFor('offset 10', () => f.appliedOffset() === 10);
    const fromSnapshot = updates.find((u) => u.fromSnapshot)!;
    expect(fromSnapshot.image.offset).to.equal(9);
    expect(fromSnapshot.localChanges.deletes.map((d) => `${d.topicName}-${d.partition}`)).to.deep.equal(['old-0']);
    expect(fromSnapshot.localChanges.leaders.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['new-0']);
    expect(fromSnapshot.localChanges.followers.map((c) => `${c.topicName}-${c.partition}`)).to.deep.equal(['new-1']);
    expect([...f.currentImage().topics.keys()].sort()).to.deep.equal(['later', 'new']);
  });

  it('stops and reports a record it cannot read instead of skipping it', async () => {
    const [a, b] = await servers2();
    a.script = (_req, call) => call.write({ entries: [{ offset: 3, term: 1, batch: Uint8Array.from([0x0a, 0x02, 0x08, 0x63]), snapshot: false, snapshotDone: false }] });
    const f = follow([a.address, b.address]);
    await waitFor('a fatal error', () => fatal !== undefined);
    expect(String((fatal as Error).message)).to.match(/metadata record/);
    expect(f.appliedOffset()).to.equal(0);
  });

  it('reconnects elsewhere when an offset known to be committed does not arrive', async () => {
    const [a, b] = await servers2();
    a.script = (_req, call) => call.write({ entries: [entry(2, [broker(2)])] }); // then silence
    b.script = (_req, call) => call.write({ entries: [entry(7, [broker(1)])] });
    channel = new ControllerChannel({ controllers: [a.address, b.address], logger: silentLogger(), backoffInitialMs: 10, backoffMaxMs: 20, random: () => 0 });
    updates = [];
    follower = new MetadataFollower({ brokerId: 2, channel, logger: silentLogger(), publishers: [(u) => updates.push(u)], onFatal: () => undefined, stallTimeoutMs: 300 });
    follower.start();
    await waitFor('offset 2', () => follower.appliedOffset() === 2);
    follower.noteCommitted(7); // e.g. the broker's own registration
    await waitFor('offset 7 from the other controller', () => follower.appliedOffset() === 7, { timeoutMs: 5_000 });
    expect(b.requests[0]!.fromOffset).to.equal(3);
  });
});
