// gRPC transport for Raft messages (proto/raft.proto, service RaftTransport).
//
// Outgoing: one PeerSender per peer holding ONE long-lived client stream, fed from a
// bounded queue. send() never blocks and never throws: when the queue is full the oldest
// message is dropped (and counted). Raft tolerates loss — a lost append is re-sent after
// the next probe, a lost heartbeat is replaced by the next one — while a stale message
// is worth less than a fresh one. A broken stream is reopened with exponential backoff.
//
// Incoming: a stream must start with a StreamHello addressed to this node; each message
// must be addressed to this node and come from the hello's sender. Accepted messages are
// handed to `onMessage` (the driver's inbox), synchronously and in stream order.
//
// Frames cross gRPC as raw bytes: raft-wire.ts encodes and decodes proto/raft.proto's
// RaftFrame itself (grpc-js takes the serialize/deserialize functions of a method as given).
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { Message } from '../raft';
import { CHANNEL_OPTIONS } from '../../shared/rpc/proto';
import { FrameAssembler, WireError, decodeAck, decodeFrame, encodeAck, encodeHello, messageBytes, messageToFrames } from './raft-wire';

/** Limits of one peer's send queue. */
export const SEND_QUEUE_MESSAGES_MAX = 1024;
export const SEND_QUEUE_BYTES_MAX = 64 * 1024 * 1024;
const RECONNECT_BACKOFF_MIN_MS = 50;
const RECONNECT_BACKOFF_MAX_MS = 2_000;
/** A stream that lived at least this long counts as a success: the next failure starts the backoff over. */
const STREAM_HEALTHY_MS = 1_000;

export interface TransportHooks {
  readonly nodeId: number;
  readonly logger: Logger;
  /** Current address of a node, or undefined if unknown. */
  addressOf(id: number): string | undefined;
  /** An accepted incoming message. Must not throw. */
  onMessage(m: Message): void;
  /** A peer announced its address in its StreamHello. */
  onPeerHello(id: number, address: string): void;
}

export interface TransportStats {
  sent: number;
  /** Dropped because a send queue was full, or the peer's address is unknown. */
  dropped: number;
  received: number;
  /** Incoming messages refused: wrong `to`/`from`, or malformed. */
  refused: number;
}

const identity = (b: Buffer): Buffer => b;

/** proto/raft.proto `service RaftTransport`, with raft-wire.ts as its codec. */
export const RAFT_TRANSPORT_SERVICE = {
  Stream: {
    path: '/flotilla.raft.RaftTransport/Stream',
    requestStream: true,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: encodeAck,
    responseDeserialize: decodeAck,
    originalName: 'stream',
  },
} satisfies grpc.ServiceDefinition;
const STREAM = RAFT_TRANSPORT_SERVICE.Stream;

export class RaftTransport {
  readonly stats: TransportStats = { sent: 0, dropped: 0, received: 0, refused: 0 };
  private readonly peers = new Map<number, PeerSender>();
  private readonly incoming = new Set<IncomingStream>();
  private stopped = false;
  private server?: grpc.Server;

  constructor(private readonly hooks: TransportHooks) {}

  /** Queue `m` for its receiver. Never blocks, never throws. */
  send(m: Message): void {
    if (this.stopped) return;
    const address = this.hooks.addressOf(m.to);
    if (!address) {
      this.stats.dropped++;
      this.hooks.logger.debug({ to: m.to, type: m.type }, 'raft message dropped: no address for peer');
      return;
    }
    let peer = this.peers.get(m.to);
    if (peer && peer.address !== address) {
      peer.close();
      peer = undefined;
    }
    if (!peer) {
      peer = new PeerSender(m.to, address, this.hooks, this.stats);
      this.peers.set(m.to, peer);
    }
    peer.enqueue(m);
  }

  /** Open the stream to `id` ahead of the first message (start-up). */
  connect(id: number): void {
    if (this.stopped || id === this.hooks.nodeId || this.peers.has(id)) return;
    const address = this.hooks.addressOf(id);
    if (!address) return;
    const peer = new PeerSender(id, address, this.hooks, this.stats);
    this.peers.set(id, peer);
    peer.open();
  }

  /** Forget a peer (removed from the configuration). */
  closePeer(id: number): void {
    this.peers.get(id)?.close();
    this.peers.delete(id);
  }

  queuedMessages(id: number): number {
    return this.peers.get(id)?.queueLength() ?? 0;
  }

  addTo(server: grpc.Server): void {
    this.server = server;
    server.addService(RAFT_TRANSPORT_SERVICE, {
      Stream: (call: grpc.ServerReadableStream<Buffer, number>, callback: grpc.sendUnaryData<number>) => this.onStream(call, callback),
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const p of this.peers.values()) p.close();
    this.peers.clear();
    for (const s of [...this.incoming]) s.finish({ code: grpc.status.UNAVAILABLE, details: 'raft transport stopped' });
    // The server outlives the driver (it also serves the controller API); unregistering lets
    // a new driver in the same process register again.
    this.server?.removeService(RAFT_TRANSPORT_SERVICE);
    this.server = undefined;
  }

  private onStream(call: grpc.ServerReadableStream<Buffer, number>, callback: grpc.sendUnaryData<number>): void {
    if (this.stopped) {
      callback({ code: grpc.status.UNAVAILABLE, details: 'raft transport stopped' });
      return;
    }
    const s = new IncomingStream(call, callback, this.hooks, this.stats, () => this.incoming.delete(s));
    this.incoming.add(s);
  }
}

class IncomingStream {
  private from = 0;
  private accepted = 0;
  private done = false;
  private readonly assembler = new FrameAssembler();

  constructor(
    call: grpc.ServerReadableStream<Buffer, number>,
    private readonly callback: grpc.sendUnaryData<number>,
    private readonly hooks: TransportHooks,
    private readonly stats: TransportStats,
    private readonly onDone: () => void,
  ) {
    call.on('data', (b: Buffer) => this.onFrame(b));
    call.on('end', () => this.finish(null));
    call.on('error', () => this.finish(null));
    call.on('cancelled', () => this.finish(null));
  }

  finish(err: grpc.ServerErrorResponse | Partial<grpc.StatusObject> | null): void {
    if (this.done) return;
    this.done = true;
    this.onDone();
    try {
      if (err) this.callback(err);
      else this.callback(null, this.accepted);
    } catch {
      // The call may already be gone (client cancelled); nothing to report to.
    }
  }

  private onFrame(b: Buffer): void {
    if (this.done) return;
    try {
      const f = decodeFrame(b);
      if (f.body === 'hello') {
        const to = Number(f.hello.to);
        if (to !== this.hooks.nodeId) {
          this.stats.refused++;
          this.hooks.logger.warn({ from: f.hello.from, to, self: this.hooks.nodeId }, 'raft stream for another node refused (stale address?)');
          this.finish({ code: grpc.status.FAILED_PRECONDITION, details: `this is node ${this.hooks.nodeId}, not ${to}` });
          return;
        }
        this.from = Number(f.hello.from);
        if (f.hello.fromAddress) this.hooks.onPeerHello(this.from, f.hello.fromAddress);
        return;
      }
      if (this.from === 0) throw new WireError('frame before hello');
      const m = this.assembler.push(f);
      if (!m) return;
      if (m.to !== this.hooks.nodeId || m.from !== this.from) {
        this.stats.refused++;
        this.hooks.logger.debug({ from: m.from, to: m.to, stream: this.from }, 'raft message with wrong from/to dropped');
        return;
      }
      this.accepted++;
      this.stats.received++;
      this.hooks.onMessage(m);
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      this.stats.refused++;
      this.hooks.logger.warn({ from: this.from, err: err.message }, 'malformed raft stream closed');
      this.finish({ code: grpc.status.INVALID_ARGUMENT, details: err.message });
    }
  }
}

class PeerSender {
  private readonly queue: Message[] = [];
  private head = 0;
  private queuedBytes = 0;
  private client?: grpc.Client;
  private call?: grpc.ClientWritableStream<Buffer>;
  private blocked = false;
  private openedAtMs = 0;
  private backoffMs = RECONNECT_BACKOFF_MIN_MS;
  private reconnectTimer?: NodeJS.Timeout;
  private closed = false;
  private failures = 0;

  constructor(
    readonly id: number,
    readonly address: string,
    private readonly hooks: TransportHooks,
    private readonly stats: TransportStats,
  ) {}

  queueLength(): number {
    return this.queue.length - this.head;
  }

  enqueue(m: Message): void {
    if (this.closed) return;
    this.queue.push(m);
    this.queuedBytes += messageBytes(m);
    while (this.queueLength() > SEND_QUEUE_MESSAGES_MAX || (this.queuedBytes > SEND_QUEUE_BYTES_MAX && this.queueLength() > 1)) {
      this.queuedBytes -= messageBytes(this.shift());
      this.stats.dropped++;
    }
    if (this.call) this.pump();
    else if (!this.reconnectTimer) this.open();
  }

  open(): void {
    if (this.closed || this.call) return;
    if (!this.client) this.client = new grpc.Client(this.address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
    const call = this.client.makeClientStreamRequest<Buffer, number>(
      STREAM.path,
      STREAM.requestSerialize,
      STREAM.responseDeserialize,
      new grpc.Metadata(),
      {},
      (err) => this.onStreamClosed(call, err),
    );
    call.on('error', () => undefined); // errors are reported to the callback above
    this.call = call;
    this.blocked = false;
    this.openedAtMs = Date.now();
    call.write(encodeHello({ from: this.hooks.nodeId, to: this.id, fromAddress: this.hooks.addressOf(this.hooks.nodeId) ?? '' }));
    this.pump();
  }

  close(): void {
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    const call = this.call;
    this.call = undefined;
    call?.cancel();
    this.client?.close();
    this.client = undefined;
  }

  private shift(): Message {
    const m = this.queue[this.head];
    (this.queue as (Message | undefined)[])[this.head] = undefined;
    this.head++;
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
    return m;
  }

  private pump(): void {
    const call = this.call;
    while (call && !this.blocked && this.queueLength() > 0) {
      const m = this.shift();
      this.queuedBytes -= messageBytes(m);
      let ok = true;
      // All frames of one message go out back to back: a snapshot's chunks must follow its header.
      for (const f of messageToFrames(m)) ok = call.write(f);
      this.stats.sent++;
      if (!ok) {
        this.blocked = true;
        call.once('drain', () => {
          if (this.call !== call) return;
          this.blocked = false;
          this.pump();
        });
      }
    }
  }

  private onStreamClosed(call: grpc.ClientWritableStream<Buffer>, err: grpc.ServiceError | null): void {
    if (this.call !== call) return;
    this.call = undefined;
    this.blocked = false;
    if (this.closed) return;
    const livedMs = Date.now() - this.openedAtMs;
    if (livedMs >= STREAM_HEALTHY_MS) {
      this.backoffMs = RECONNECT_BACKOFF_MIN_MS;
      this.failures = 0;
    } else {
      this.backoffMs = Math.min(this.backoffMs * 2, RECONNECT_BACKOFF_MAX_MS);
    }
    this.failures++;
    const log = { peer: this.id, address: this.address, code: err?.code, details: err?.details };
    if (this.failures === 1) this.hooks.logger.info(log, 'raft stream to peer closed; reconnecting');
    else this.hooks.logger.debug(log, 'raft stream to peer closed again');
    // Jitter keeps peers that lost each other at the same moment from reconnecting in lockstep.
    const delayMs = this.backoffMs * (0.5 + Math.random() / 2);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.queueLength() > 0) this.open();
    }, delayMs);
  }
}
