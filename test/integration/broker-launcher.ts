import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from './controller-launcher';

// Real broker processes for integration tests (the counterpart of ControllerCluster):
// start, kill (-9 or SIGTERM), restart with a new incarnation, read logs, stop. Each process
// logs JSON lines to <rootDir>/broker-N.log and keeps its data in <rootDir>/broker-N/.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

export interface LaunchedBroker {
  readonly id: number;
  readonly address: string;
  readonly dataDir: string;
  proc?: ChildProcess;
}

export class BrokerLauncher {
  readonly nodes = new Map<number, LaunchedBroker>();

  private constructor(
    readonly rootDir: string,
    private readonly ownsRootDir: boolean,
    private readonly controllers: readonly string[],
    private readonly extraArgs: readonly string[],
  ) {}

  /**
   * Starts brokers `ids` against `controllers` on random loopback ports. With `rootDir`
   * (e.g. the ControllerCluster's), files go there and shutdown leaves the folder alone.
   */
  static async start(opts: { controllers: readonly string[]; ids: readonly number[]; rootDir?: string; extraArgs?: readonly string[] }): Promise<BrokerLauncher> {
    const owns = opts.rootDir === undefined;
    const rootDir = opts.rootDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-it-brokers-'));
    const launcher = new BrokerLauncher(rootDir, owns, opts.controllers, opts.extraArgs ?? []);
    for (const id of opts.ids) {
      launcher.nodes.set(id, { id, address: `127.0.0.1:${await freePort()}`, dataDir: path.join(rootDir, `broker-${id}`) });
    }
    for (const id of opts.ids) launcher.spawn(id);
    return launcher;
  }

  bootstrap(): string[] {
    return [...this.nodes.values()].map((n) => n.address);
  }

  addressOf(id: number): string {
    return this.node(id).address;
  }

  logPath(id: number): string {
    return path.join(this.rootDir, `broker-${id}.log`);
  }

  spawn(id: number): void {
    const n = this.node(id);
    if (this.isRunning(id)) throw new Error(`broker ${id} is running`);
    const logFd = fs.openSync(this.logPath(id), 'a');
    const args = [CLI, 'broker', '--node-id', String(id), '--listen', n.address, '--controllers', this.controllers.join(','), '--data-dir', n.dataDir, ...this.extraArgs];
    // FLOTILLA_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles every broker, as
    // ControllerCluster does for controllers (NODE_OPTIONS refuses --cpu-prof); the profile is
    // written at a graceful stop, which shutdown() then does.
    const nodeArgs = (process.env.FLOTILLA_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
    n.proc = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['ignore', logFd, logFd], env: { ...process.env, FLOTILLA_PRETTY: '' } });
    fs.closeSync(logFd);
  }

  isRunning(id: number): boolean {
    const p = this.node(id).proc;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** Sends `signal` and waits for the exit; resolves with the exit code (null when killed by a signal). */
  async kill(id: number, signal: NodeJS.Signals = 'SIGKILL', timeoutMs = 10_000): Promise<number | null> {
    const p = this.node(id).proc;
    if (!p || !this.isRunning(id)) return p?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.kill(signal);
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    try {
      return await exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends `signal` without waiting (SIGSTOP / SIGCONT to freeze and thaw a broker). */
  signal(id: number, signal: NodeJS.Signals): void {
    const p = this.node(id).proc;
    if (p && this.isRunning(id)) p.kill(signal);
  }

  async restart(id: number): Promise<void> {
    await this.kill(id);
    this.spawn(id);
  }

  logOf(id: number): string {
    try {
      return fs.readFileSync(this.logPath(id), 'utf8');
    } catch {
      return '';
    }
  }

  /** The JSON log lines of broker `id` (non-JSON lines skipped). */
  logLines(id: number): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    for (const line of this.logOf(id).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // a line cut by kill -9
      }
    }
    return out;
  }

  async shutdown(): Promise<void> {
    // Profiled children need a graceful stop to write their profile (kill() SIGKILLs after 10 s).
    const signal = process.env.FLOTILLA_CHILD_NODE_ARGS ? 'SIGTERM' : 'SIGKILL';
    await Promise.all([...this.nodes.keys()].map((id) => this.kill(id, signal)));
    if (this.ownsRootDir) fs.rmSync(this.rootDir, { recursive: true, force: true });
  }

  private node(id: number): LaunchedBroker {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no broker ${id}`);
    return n;
  }
}
