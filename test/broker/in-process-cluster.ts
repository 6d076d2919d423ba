import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startBroker, RunningBroker, BrokerOptions } from '../../broker';
import { Admin, Flotilla } from '../../client';
import { startController, RunningController, ControllerOptions } from '../../controller/controller-process';
import { silentLogger } from '../../shared/log';
import { freePort } from '../integration/controller-launcher';

// Real controllers and brokers in this process (real gRPC on loopback, real Raft, real
// disks in a temp dir): fast enough for unit-level broker tests, with direct access to each
// broker's own state (image(), status(), replicas()). Real processes are in test/integration.

export class InProcessCluster {
  readonly controllers = new Map<number, RunningController>();
  readonly controllerAddresses = new Map<number, string>();
  readonly brokers = new Map<number, RunningBroker>();
  private readonly admins: Admin[] = [];

  private constructor(
    readonly rootDir: string,
    private readonly controllerExtra: Partial<ControllerOptions>,
  ) {}

  static async start(opts: { controllers?: number; controller?: Partial<ControllerOptions> } = {}): Promise<InProcessCluster> {
    const rootDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-broker-'));
    const cluster = new InProcessCluster(rootDir, opts.controller ?? {});
    const n = opts.controllers ?? 1;
    for (let id = 1; id <= n; id++) cluster.controllerAddresses.set(id, `127.0.0.1:${await freePort()}`);
    await Promise.all([...cluster.controllerAddresses.keys()].map((id) => cluster.startController(id)));
    return cluster;
  }

  async startController(id: number): Promise<RunningController> {
    const c = await startController({
      nodeId: id,
      listen: this.controllerAddresses.get(id)!,
      voters: this.controllerAddresses,
      dataDir: path.join(this.rootDir, `controller-${id}`),
      logger: silentLogger(),
      tickMs: 20,
      ...this.controllerExtra,
    });
    this.controllers.set(id, c);
    return c;
  }

  async stopController(id: number): Promise<void> {
    await this.controllers.get(id)?.stop();
    this.controllers.delete(id);
  }

  bootstrap(): string[] {
    return [...this.controllerAddresses.values()];
  }

  async startBroker(id: number, extra: Partial<BrokerOptions> = {}): Promise<RunningBroker> {
    const b = await startBroker({
      nodeId: id,
      listen: '127.0.0.1:0',
      controllers: this.bootstrap(),
      dataDir: path.join(this.rootDir, `broker-${id}`),
      logger: silentLogger(),
      heartbeatIntervalMs: 200,
      ...extra,
    });
    this.brokers.set(id, b);
    return b;
  }

  async stopBroker(id: number): Promise<void> {
    await this.brokers.get(id)?.stop();
    this.brokers.delete(id);
  }

  admin(bootstrap: string[]): Admin {
    const a = new Flotilla({ bootstrap, totalTimeoutMs: 15_000, requestTimeoutMs: 5_000 }).admin();
    this.admins.push(a);
    return a;
  }

  async stop(): Promise<void> {
    for (const a of this.admins.splice(0)) await a.close();
    await Promise.all([...this.brokers.keys()].map((id) => this.stopBroker(id)));
    await Promise.all([...this.controllers.keys()].map((id) => this.stopController(id)));
    fs.rmSync(this.rootDir, { recursive: true, force: true });
  }
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, opts: { timeoutMs?: number; intervalMs?: number } = {}): Promise<NonNullable<T>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== null && v !== false) return v as NonNullable<T>;
      last = `got ${String(v)}`;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${(last as Error)?.message ?? last}`);
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}
