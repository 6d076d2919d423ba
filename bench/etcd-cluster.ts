import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protobuf from 'protobufjs';
import { freePort } from '../test/integration/controller-launcher';
import { sleep } from './bench-support';

// A 3-member etcd cluster on loopback (Debian's etcd-server) as the reference point for the
// metadata throughput benchmark, and a minimal client for it: etcd's gRPC KV.Put and
// Maintenance.Status, with the few protobuf fields we need encoded by hand (etcd's
// api/etcdserverpb/rpc.proto), so no etcd client package is needed.

const ETCD_BIN = 'etcd';

/** The etcd binary's version line, or undefined when it is not installed. */
export function etcdVersion(): string | undefined {
  try {
    const out = execFileSync(ETCD_BIN, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return /etcd Version:\s*(\S+)/.exec(out)?.[1] ?? out.split('\n')[0];
  } catch {
    return undefined;
  }
}

/**
 * Installs Debian's etcd-server with apt-get when etcd is absent and we are root. Returns the
 * version, or a reason why etcd is unavailable.
 */
export function ensureEtcd(opts: { install: boolean }): { version: string } | { unavailable: string } {
  const v = etcdVersion();
  if (v) return { version: v };
  if (!opts.install) return { unavailable: 'etcd is not installed (apt-get install -y etcd-server, or run with --install-etcd)' };
  if (process.getuid?.() !== 0) return { unavailable: 'etcd is not installed and we are not root to apt-get install etcd-server' };
  console.log('etcd not found: installing Debian etcd-server with apt-get ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]): boolean => {
    try {
      execFileSync('apt-get', args, { stdio: ['ignore', 'ignore', 'pipe'], env, timeout: 300_000 });
      return true;
    } catch {
      return false;
    }
  };
  // An install from a stale package list fails; update once and try again.
  if (!apt(['install', '-y', '-q', 'etcd-server'])) {
    apt(['update', '-q']);
    apt(['install', '-y', '-q', 'etcd-server']);
  }
  const after = etcdVersion();
  return after ? { version: after } : { unavailable: 'apt-get install etcd-server failed' };
}

interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly dataDir: string;
  proc?: ChildProcess;
}

export class EtcdCluster {
  private constructor(readonly rootDir: string, readonly members: EtcdMember[]) {}

  /** Starts `size` members on free loopback ports, data under a new temp folder. */
  static async start(size = 3): Promise<EtcdCluster> {
    const rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-bench-etcd-'));
    const members: EtcdMember[] = [];
    for (let i = 1; i <= size; i++) {
      members.push({
        name: `etcd-${i}`,
        clientUrl: `http://127.0.0.1:${await freePort()}`,
        peerUrl: `http://127.0.0.1:${await freePort()}`,
        dataDir: path.join(rootDir, `etcd-${i}`),
      });
    }
    const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
    const token = `flotilla-bench-${process.pid}-${Date.now()}`;
    const cluster = new EtcdCluster(rootDir, members);
    for (const m of members) {
      const logFd = fs.openSync(path.join(rootDir, `${m.name}.log`), 'a');
      m.proc = spawn(
        ETCD_BIN,
        [
          '--name', m.name,
          '--data-dir', m.dataDir,
          '--listen-client-urls', m.clientUrl,
          '--advertise-client-urls', m.clientUrl,
          '--listen-peer-urls', m.peerUrl,
          '--initial-advertise-peer-urls', m.peerUrl,
          '--initial-cluster', initialCluster,
          '--initial-cluster-token', token,
          '--initial-cluster-state', 'new',
          '--logger', 'zap',
          '--log-level', 'warn',
        ],
        { stdio: ['ignore', logFd, logFd] },
      );
      fs.closeSync(logFd);
    }
    return cluster;
  }

  pids(): (number | undefined)[] {
    return this.members.map((m) => (m.proc && m.proc.exitCode === null && m.proc.signalCode === null ? m.proc.pid : undefined));
  }

  /** Host:port of each member's client endpoint. */
  endpoints(): string[] {
    return this.members.map((m) => m.clientUrl.replace('http://', ''));
  }

  logOf(i: number): string {
    try {
      return fs.readFileSync(path.join(this.rootDir, `${this.members[i]!.name}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  /** SIGKILL every member, wait for them to exit, remove the data. */
  async shutdown(): Promise<void> {
    await Promise.all(
      this.members.map(async (m) => {
        const p = m.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise<void>((r) => p.once('exit', () => r()));
        p.kill('SIGKILL');
        await exited;
      }),
    );
    fs.rmSync(this.rootDir, { recursive: true, force: true });
  }
}

// ---- a minimal etcd v3 gRPC client ----

const identity = (b: Buffer): Buffer => b;

export interface EtcdStatus {
  readonly memberId: string;
  readonly leaderId: string;
  readonly raftTerm: number;
  readonly raftIndex: number;
  readonly dbSizeBytes: number;
}

export interface EtcdPutResult {
  readonly revision: number;
  readonly raftTerm: number;
}

/** One gRPC channel to one etcd member. */
export class EtcdKv {
  private readonly client: grpc.Client;

  constructor(readonly endpoint: string) {
    this.client = new grpc.Client(endpoint, grpc.credentials.createInsecure());
  }

  private unary(method: string, body: Uint8Array, deadlineMs: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<Buffer, Buffer>(method, identity, identity, Buffer.from(body), new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) =>
        err ? reject(Object.assign(err, { name: `grpc ${grpc.status[err.code] ?? err.code}` })) : resolve(res!),
      );
    });
  }

  /** etcdserverpb.KV/Put: PutRequest { bytes key = 1; bytes value = 2; }. */
  async put(key: Uint8Array, value: Uint8Array, deadlineMs = 10_000): Promise<EtcdPutResult> {
    const req = protobuf.Writer.create().uint32((1 << 3) | 2).bytes(key).uint32((2 << 3) | 2).bytes(value).finish();
    const res = await this.unary('/etcdserverpb.KV/Put', req, deadlineMs);
    // PutResponse { ResponseHeader header = 1; }
    const header = readFields(res)[1] as Uint8Array | undefined;
    const h = header ? readFields(header) : {};
    // ResponseHeader { uint64 cluster_id = 1; uint64 member_id = 2; int64 revision = 3; uint64 raft_term = 4; }
    return { revision: Number(h[3] ?? 0), raftTerm: Number(h[4] ?? 0) };
  }

  /** etcdserverpb.Maintenance/Status. */
  async status(deadlineMs = 2_000): Promise<EtcdStatus> {
    const res = await this.unary('/etcdserverpb.Maintenance/Status', new Uint8Array(0), deadlineMs);
    // StatusResponse { header = 1; version = 2; db_size = 3; leader = 4; raft_index = 5; raft_term = 6; }
    const f = readFields(res);
    const h = f[1] ? readFields(f[1] as Uint8Array) : {};
    return {
      memberId: String(h[2] ?? '0'),
      leaderId: String(f[4] ?? '0'),
      raftTerm: Number(f[6] ?? 0),
      raftIndex: Number(f[5] ?? 0),
      dbSizeBytes: Number(f[3] ?? 0),
    };
  }

  close(): void {
    this.client.close();
  }
}

/**
 * The top-level fields of a protobuf message: varints as decimal strings (64-bit ids stay
 * exact), length-delimited fields as bytes. Other wire types are skipped.
 */
function readFields(buf: Uint8Array): Record<number, string | Uint8Array> {
  const r = protobuf.Reader.create(buf);
  const out: Record<number, string | Uint8Array> = {};
  while (r.pos < r.len) {
    const tag = r.uint32();
    const field = tag >>> 3;
    const wireType = tag & 7;
    if (wireType === 0) out[field] = r.uint64().toString();
    else if (wireType === 2) out[field] = r.bytes();
    else r.skipType(wireType);
  }
  return out;
}

/** Waits until every member answers Status and all agree on one leader; returns that leader's endpoint. */
export async function waitForEtcdLeader(kvs: EtcdKv[], timeoutMs = 30_000): Promise<{ leader: EtcdKv; term: number }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const st = await Promise.all(kvs.map((k) => k.status()));
      const leaders = new Set(st.map((s) => s.leaderId));
      const leaderId = st[0]!.leaderId;
      const i = st.findIndex((s) => s.memberId === leaderId);
      if (leaders.size === 1 && leaderId !== '0' && i >= 0) return { leader: kvs[i]!, term: st[i]!.raftTerm };
      last = `leaders seen: ${[...leaders].join(',')}`;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(100);
  }
  throw new Error(`etcd elected no leader in ${timeoutMs} ms (${last})`);
}
