import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from '../test/integration/controller-launcher';
import { sleep } from './bench-support';

// A 3-node NATS JetStream cluster on loopback (Debian's nats-server) as the reference point
// for the data-plane benchmark (issue 3 §8), in the same way bench/etcd-cluster.ts is for the
// metadata benchmark. Driven by the `nats` npm client (nats.js v2, a devDependency used only
// here). File storage, replicas=3: JetStream's equivalent of acks=all with RF=3.

const NATS_BIN = 'nats-server';

/** nats-server's version, or undefined when it is not installed. */
export function natsVersion(): string | undefined {
  try {
    const out = execFileSync(NATS_BIN, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return /v?(\d+\.\d+\.\d+)/.exec(out)?.[1] ?? out.trim();
  } catch {
    return undefined;
  }
}

/** Installs Debian's nats-server with apt-get when absent and we are root. */
export function ensureNats(opts: { install: boolean }): { version: string } | { unavailable: string } {
  const v = natsVersion();
  if (v) return { version: v };
  if (!opts.install) return { unavailable: 'nats-server is not installed (apt-get install -y nats-server, or run with --install-nats)' };
  if (process.getuid?.() !== 0) return { unavailable: 'nats-server is not installed and we are not root to apt-get install it' };
  console.log('nats-server not found: installing Debian nats-server with apt-get ...');
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (args: string[]): boolean => {
    try {
      execFileSync('apt-get', ['-o', 'DPkg::Lock::Timeout=300', ...args], { stdio: ['ignore', 'ignore', 'pipe'], env, timeout: 600_000 });
      return true;
    } catch {
      return false;
    }
  };
  if (!apt(['install', '-y', '-q', 'nats-server'])) {
    apt(['update', '-q']);
    apt(['install', '-y', '-q', 'nats-server']);
  }
  const after = natsVersion();
  return after ? { version: after } : { unavailable: 'apt-get install nats-server failed' };
}

export interface NatsNode {
  readonly name: string;
  readonly clientPort: number;
  readonly clusterPort: number;
  readonly storeDir: string;
  proc?: ChildProcess;
}

export class NatsCluster {
  private constructor(readonly rootDir: string, readonly nodes: NatsNode[]) {}

  static async start(size = 3): Promise<NatsCluster> {
    const rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-bench-nats-'));
    const nodes: NatsNode[] = [];
    for (let i = 1; i <= size; i++) {
      nodes.push({ name: `nats-${i}`, clientPort: await freePort(), clusterPort: await freePort(), storeDir: path.join(rootDir, `nats-${i}`) });
    }
    const cluster = new NatsCluster(rootDir, nodes);
    for (const n of nodes) cluster.spawn(n);
    return cluster;
  }

  spawn(n: NatsNode): void {
    fs.mkdirSync(n.storeDir, { recursive: true });
    const routes = this.nodes.filter((o) => o !== n).map((o) => `nats://127.0.0.1:${o.clusterPort}`).join(',');
    const log = fs.openSync(path.join(this.rootDir, `${n.name}.log`), 'a');
    n.proc = spawn(
      NATS_BIN,
      ['--name', n.name, '--addr', '127.0.0.1', '--port', String(n.clientPort), '--jetstream', '--store_dir', n.storeDir,
        '--cluster_name', 'flotilla-bench', '--cluster', `nats://127.0.0.1:${n.clusterPort}`, '--routes', routes],
      { stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
  }

  servers(): string[] {
    return this.nodes.map((n) => `127.0.0.1:${n.clientPort}`);
  }

  node(name: string): NatsNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no NATS node ${name}`);
    return n;
  }

  pids(): (number | undefined)[] {
    return this.nodes.map((n) => n.proc?.pid);
  }

  async kill(name: string): Promise<void> {
    const p = this.node(name).proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }

  async restart(name: string): Promise<void> {
    await this.kill(name);
    this.spawn(this.node(name));
  }

  async stop(): Promise<void> {
    for (const n of this.nodes) {
      const p = n.proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) continue;
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGKILL');
      await Promise.race([exited, sleep(5_000)]);
    }
    fs.rmSync(this.rootDir, { recursive: true, force: true });
  }
}
