import * as net from 'node:net';

// A fault-injecting HTTP CONNECT proxy for gRPC on loopback, to put between the real client
// and a real broker without changing either. grpc-js sends every new channel through the
// proxy named by the `grpc_proxy` environment variable (read when the channel is created:
// @grpc/grpc-js http_proxy.ts, mapProxyName), so a client built while `withGrpcProxy` holds
// the variable talks to brokers through tunnels of this proxy; everything else in the test
// process that opens channels in that window is tunnelled too (and passes through).
//
// Bytes from client to broker are forwarded as they come. Bytes from broker to client are
// cut into HTTP/2 frames (RFC 9113 §4.1: 9-byte header of length, type, flags, stream id;
// the connection is cleartext h2c), and the gRPC messages in DATA frames are reassembled per
// stream (a 5-byte prefix: compressed flag and length). When armed for a target, a frame
// that completes a ProduceResponse is not forwarded: the tunnel is cut instead, both ways.
// The broker sends a produce answer only after it appended (and, with acks=all, replicated)
// the batch, so what the client loses is the acknowledgement of an appended batch — the
// "dropped response" that makes a producer retry what the log already holds.
//
// A ProduceResponse is recognised by its first bytes (proto/broker.proto): field 1 varint
// (correlation_id, never 0 from the client) followed by field 2 (results) or 3 (error). No
// other Broker response starts with a varint field 1 followed by a length-delimited field
// (Metadata, Fetch, ListOffsets start with a length-delimited field 1; InitProducerId's
// field 2 is a varint).

/** Tunnels open at once; more are refused (the proxy is for one test client). */
const TUNNELS_MAX = 256;
/** Longest CONNECT request head accepted. */
const CONNECT_HEAD_MAX_BYTES = 8 * 1024;
/** A gRPC message longer than this is not reassembled (it is no produce answer). */
const MESSAGE_MAX_BYTES = 1024 * 1024;

const FRAME_HEADER_BYTES = 9;
const FRAME_DATA = 0x0;
const FLAG_PADDED = 0x8;

/** What the proxy saw in one produce answer it cut off. */
export interface CutProduceResult {
  readonly topic: string;
  readonly partition: number;
  /** The offset the broker gave the batch (-1 when the answer carried an error). */
  readonly baseOffset: number;
  /** Error code of the partition's result, 0 when none. */
  readonly errorCode: number;
}

export interface CutPlan {
  /** host:port of the broker whose produce answers are cut. */
  readonly target: string;
  /** Cut the tunnel at every `every`-th produce answer from the target (1 = each). */
  readonly every: number;
  /** Stop after this many cuts. */
  readonly maxCuts: number;
  /** Called at each cut, before the client can notice it (e.g. to kill -9 the broker then). */
  readonly onCut?: (answer: CutProduceResult[]) => void;
}

export class GrpcFaultProxy {
  /** Tunnels opened so far, by target. */
  readonly tunnelsByTarget = new Map<string, number>();
  /** The produce answers that were cut off, in order. */
  readonly cut: CutProduceResult[][] = [];
  private plan: CutPlan | undefined;
  private answersSeen = 0;
  private readonly sockets = new Set<net.Socket>();

  private constructor(
    private readonly server: net.Server,
    readonly address: string,
  ) {}

  static async start(): Promise<GrpcFaultProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new GrpcFaultProxy(server, `127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    server.on('connection', (s) => proxy.onConnection(s));
    return proxy;
  }

  /** Arms (or, with undefined, disarms) the cutting of produce answers. */
  cutProduceAnswers(plan: CutPlan | undefined): void {
    this.plan = plan;
    this.answersSeen = 0;
  }

  get cuts(): number {
    return this.cut.length;
  }

  async close(): Promise<void> {
    this.plan = undefined;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(client: net.Socket): void {
    if (this.sockets.size >= 2 * TUNNELS_MAX) return void client.destroy();
    this.track(client);
    let head = Buffer.alloc(0);
    const onHead = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > CONNECT_HEAD_MAX_BYTES) client.destroy();
        return;
      }
      client.off('data', onHead);
      client.pause();
      const m = /^CONNECT ([^\s:]+):(\d+) HTTP\/1\.[01]\r\n/.exec(head.subarray(0, end + 2).toString('latin1'));
      if (!m || m[1] !== '127.0.0.1') {
        // Loopback only.
        client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      const target = `${m[1]}:${m[2]}`;
      this.tunnelsByTarget.set(target, (this.tunnelsByTarget.get(target) ?? 0) + 1);
      this.tunnel(client, target, head.subarray(end + 4));
    };
    client.on('data', onHead);
    client.on('error', () => client.destroy());
  }

  private tunnel(client: net.Socket, target: string, early: Buffer): void {
    const [host, port] = target.split(':') as [string, string];
    const upstream = net.connect({ host, port: Number(port) });
    this.track(upstream);
    const cutBoth = (): void => {
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', cutBoth);
    client.on('error', cutBoth);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    upstream.once('connect', () => {
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (early.length > 0) upstream.write(early);
      client.on('data', (c: Buffer) => upstream.write(c));
      client.resume();
      const frames = new Http2FrameSplitter();
      upstream.on('data', (c: Buffer) => {
        for (const frame of frames.push(c)) {
          if (client.destroyed) return;
          const answer = frames.produceAnswerIn(frame);
          if (answer && this.plan?.target === target && this.cuts < this.plan.maxCuts && ++this.answersSeen % this.plan.every === 0) {
            this.cut.push(answer);
            this.plan.onCut?.(answer);
            cutBoth();
            return;
          }
          client.write(frame);
        }
      });
    });
  }

  private track(s: net.Socket): void {
    this.sockets.add(s);
    s.once('close', () => this.sockets.delete(s));
  }
}

/**
 * Runs `fn` with `grpc_proxy` naming `proxy`: gRPC channels created meanwhile go through it.
 * Child processes spawned meanwhile would inherit it too: spawn none inside.
 */
export async function withGrpcProxy<T>(proxy: GrpcFaultProxy, fn: () => Promise<T>): Promise<T> {
  const saved = { grpc_proxy: process.env.grpc_proxy, no_grpc_proxy: process.env.no_grpc_proxy };
  process.env.grpc_proxy = `http://${proxy.address}`;
  delete process.env.no_grpc_proxy;
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Cuts a byte stream from an HTTP/2 server into whole frames; reassembles gRPC messages of DATA frames. */
class Http2FrameSplitter {
  private pending: Buffer = Buffer.alloc(0);
  private readonly messages = new Map<number, Buffer>();

  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    while (this.pending.length >= FRAME_HEADER_BYTES) {
      const len = this.pending.readUIntBE(0, 3);
      if (this.pending.length < FRAME_HEADER_BYTES + len) break;
      out.push(this.pending.subarray(0, FRAME_HEADER_BYTES + len));
      this.pending = this.pending.subarray(FRAME_HEADER_BYTES + len);
    }
    return out;
  }

  /** The results of a ProduceResponse that `frame` completes, if any. */
  produceAnswerIn(frame: Buffer): CutProduceResult[] | undefined {
    if (frame[3] !== FRAME_DATA) return undefined;
    const streamId = frame.readUInt32BE(5) & 0x7fffffff;
    let payload = frame.subarray(FRAME_HEADER_BYTES);
    if ((frame[4]! & FLAG_PADDED) !== 0) payload = payload.subarray(1, payload.length - payload[0]!);
    let buf = Buffer.concat([this.messages.get(streamId) ?? Buffer.alloc(0), payload]);
    let found: CutProduceResult[] | undefined;
    while (buf.length >= 5) {
      const len = buf.readUInt32BE(1);
      if (len > MESSAGE_MAX_BYTES) {
        buf = Buffer.alloc(0); // not a message we look into; stop reassembling this stream
        break;
      }
      if (buf.length < 5 + len) break;
      const answer = parseProduceResponse(buf.subarray(5, 5 + len));
      if (answer) found = [...(found ?? []), ...answer];
      buf = buf.subarray(5 + len);
    }
    if (buf.length > 0) this.messages.set(streamId, Buffer.from(buf));
    else this.messages.delete(streamId);
    return found;
  }
}

// ---------------------------------------------------------------- a minimal protobuf reader

interface Field {
  readonly no: number;
  readonly varint?: bigint;
  readonly bytes?: Buffer;
}

function readVarint(b: Buffer, at: number): [bigint, number] {
  let v = 0n;
  for (let shift = 0n, i = at; i < b.length && shift < 70n; i++, shift += 7n) {
    v |= BigInt(b[i]! & 0x7f) << shift;
    if ((b[i]! & 0x80) === 0) return [v, i + 1];
  }
  throw new Error('bad varint');
}

function fields(b: Buffer): Field[] {
  const out: Field[] = [];
  let at = 0;
  while (at < b.length) {
    const [tag, next] = readVarint(b, at);
    at = next;
    const no = Number(tag >> 3n);
    switch (Number(tag & 7n)) {
      case 0: {
        const [v, n] = readVarint(b, at);
        out.push({ no, varint: v });
        at = n;
        break;
      }
      case 2: {
        const [len, n] = readVarint(b, at);
        out.push({ no, bytes: b.subarray(n, n + Number(len)) });
        at = n + Number(len);
        break;
      }
      case 1:
        at += 8;
        break;
      case 5:
        at += 4;
        break;
      default:
        throw new Error('unsupported wire type');
    }
  }
  return out;
}

function parseProduceResponse(msg: Buffer): CutProduceResult[] | undefined {
  try {
    const fs = fields(msg);
    if (fs[0]?.no !== 1 || fs[0].varint === undefined || fs[0].varint === 0n) return undefined;
    if (fs.length < 2 || (fs[1]!.no !== 2 && fs[1]!.no !== 3) || fs[1]!.bytes === undefined) return undefined;
    return fs
      .filter((f) => f.no === 2 && f.bytes)
      .map((f) => {
        const r = fields(f.bytes!);
        const error = r.find((x) => x.no === 6)?.bytes;
        const code = error ? Number(fields(error).find((x) => x.no === 1)?.varint ?? 0n) : 0;
        // int64 as a varint: -1 arrives as a ten-byte two's complement.
        const raw = r.find((x) => x.no === 3)?.varint ?? 0n;
        return {
          topic: r.find((x) => x.no === 1)?.bytes?.toString('utf8') ?? '',
          partition: Number(r.find((x) => x.no === 2)?.varint ?? 0n),
          baseOffset: Number(BigInt.asIntN(64, raw)),
          errorCode: code,
        };
      });
  } catch {
    return undefined;
  }
}
