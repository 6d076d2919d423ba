import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

// Real controller processes for integration tests and benchmarks (in the manner of
// nats.js's launcher): start, kill -9, SIGSTOP/SIGCONT, restart (optionally with an
// empty data dir), stop. Each process logs JSON lines to <dataDir>/controller-N.log.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export interface LaunchedController {
  readonly id: number;
  readonly address: string;
  readonly dataDir: string;
  proc?: ChildProcess;
  paused: boolean;
}

export class ControllerCluster {
  readonly nodes = new Map<number, LaunchedController>();

  private constructor(readonly rootDir: string, private readonly extraArgs: string[]) {}

  static async start(opts: { size?: number; extraArgs?: string[] } = {}): Promise<ControllerCluster> {
    const size = opts.size ?? 3;
    const rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-it-'));
    const cluster = new ControllerCluster(rootDir, opts.extraArgs ?? []);
    for (let id = 1; id <= size; id++) {
      const port = await freePort();
      const dataDir = path.join(rootDir, `controller-${id}`);
      cluster.nodes.set(id, { id, address: `127.0.0.1:${port}`, dataDir, paused: false });
    }
    for (const id of cluster.nodes.keys()) cluster.spawn(id);
    return cluster;
  }

  votersArg(): string {
    return [...this.nodes.values()].map((n) => `${n.id}@${n.address}`).join(',');
  }

  bootstrap(): string[] {
    return [...this.nodes.values()].map((n) => n.address);
  }

  addressOf(id: number): string {
    return this.node(id).address;
  }

  private node(id: number): LaunchedController {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no controller ${id}`);
    return n;
  }

  spawn(id: number): void {
    const n = this.node(id);
    if (n.proc && n.proc.exitCode === null && n.proc.signalCode === null) throw new Error(`controller ${id} is running`);
    fs.mkdirSync(n.dataDir, { recursive: true });
    const logFd = fs.openSync(path.join(this.rootDir, `controller-${id}.log`), 'a');
    const args = [CLI, 'controller', '--node-id', String(id), '--listen', n.address, '--voters', this.votersArg(), '--data-dir', n.dataDir, ...this.extraArgs];
    // FLOTILLA_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every controller
    // (NODE_OPTIONS refuses --cpu-prof); the profile is written at a graceful stop.
    const nodeArgs = (process.env.FLOTILLA_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    n.proc = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', logFd, logFd], env: { ...process.env, FLOTILLA_PRETTY: '' } });
    fs.closeSync(logFd);
    n.paused = false;
  }

  isRunning(id: number): boolean {
    const p = this.node(id).proc;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  async kill(id: number, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const n = this.node(id);
    const p = n.proc;
    if (!p || !this.isRunning(id)) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    if (n.paused) p.kill('SIGCONT');
    p.kill(signal);
    await exited;
    n.paused = false;
  }

  pause(id: number): void {
    const n = this.node(id);
    n.proc?.kill('SIGSTOP');
    n.paused = true;
  }

  resume(id: number): void {
    const n = this.node(id);
    n.proc?.kill('SIGCONT');
    n.paused = false;
  }

  async restart(id: number, opts: { wipe?: boolean } = {}): Promise<void> {
    await this.kill(id);
    if (opts.wipe) fs.rmSync(this.node(id).dataDir, { recursive: true, force: true });
    this.spawn(id);
  }

  logOf(id: number): string {
    try {
      return fs.readFileSync(path.join(this.rootDir, `controller-${id}.log`), 'utf8');
    } catch {
      return '';
    }
  }

  async shutdown(opts: { keepData?: boolean } = {}): Promise<void> {
    // Profiled children need a graceful stop to write their profile.
    const signal = process.env.FLOTILLA_CHILD_NODE_ARGS ? 'SIGTERM' : 'SIGKILL';
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id, signal)));
    if (!opts.keepData) fs.rmSync(this.rootDir, { recursive: true, force: true });
  }
}

export async function eventually<T>(what: string, fn: () => Promise<T>, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  let last: unknown;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${(last as Error)?.message ?? last}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 100));
  }
}
