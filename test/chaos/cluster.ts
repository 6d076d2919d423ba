import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Admin, Flotilla } from '../../client';
import { BrokerWire } from '../broker-replica/broker-wire';
import { containerIp, containerState, docker, run } from './docker';

// The chaos cluster: 3 controllers and 3 (or 5) brokers of the Flotilla image as containers
// on a private docker network, started with testcontainers 11. Each node's /data is a small
// tmpfs mounted on the host and bind-mounted in (so it survives container restarts, which a
// docker tmpfs would not, and the disk-full fault can fill it from the host).
//
// The harness reaches nodes at their container IPs on that network (Linux routes the host to
// its bridges), not through published ports, and a restarted container needs no new port
// mapping. Every node gets a fixed IP on a /24 of its own (a restart keeps it, as a DNS name
// would: clients' bootstrap lists and metadata stay valid). Brokers advertise that IP (`{container-ip}`, see
// deploy/docker/entrypoint.js), so the leader addresses clients get work from the host. Faults are in faults.ts.

export type Role = 'controller' | 'broker';

export interface ChaosNode {
  /** e.g. "controller-2", "broker-1": what the report and target selection use. */
  readonly name: string;
  readonly role: Role;
  readonly id: number;
  /** The container name, also its DNS name on the network (peers use it). */
  readonly containerName: string;
  readonly port: number;
  /** The host directory (a tmpfs) mounted at /data. */
  readonly dataDir: string;
  /** Its fixed IP on the chaos network (kept across restarts). */
  readonly ip: string;
}

export interface ChaosClusterOptions {
  readonly image: string;
  /** Makes names unique; containers are labelled flotilla.chaos=<runId>. */
  readonly runId: string;
  readonly brokers?: number;
  readonly controllers?: number;
  /** Size of each node's data tmpfs. */
  readonly dataDiskBytes?: number;
  readonly logLevel?: string;
  readonly log: (line: string) => void;
}

const LABEL = 'flotilla.chaos';
/** host:pid of the run that started the container. */
const OWNER_LABEL = 'flotilla.chaos.owner';
const OWNER = `${os.hostname()}:${process.pid}`;
const CONTROLLER_PORT = 9093;
const BROKER_PORT = 9193;
const DATA_ROOT = '/tmp/flotilla-chaos';
const STARTUP_TIMEOUT_MS = 90_000;
const DATA_DISK_BYTES_DEFAULT = 64 * 1024 * 1024;
/** The image's node user: the data tmpfs must be writable by it. */
const IMAGE_UID = 1000;

export class ChaosCluster {
  private readonly ipCache = new Map<string, string>();
  private readonly admins = new Map<string, Admin>();

  private constructor(
    readonly o: ChaosClusterOptions,
    readonly network: string,
    readonly nodes: readonly ChaosNode[],
  ) {}

  /**
   * Removes what an earlier run left behind (containers, network, tmpfs mounts) — not what a
   * run still in progress owns (its process alive: the Docker daemon may be shared).
   */
  static async cleanupLeftovers(log: (l: string) => void): Promise<void> {
    const rows = (await docker(['ps', '-a', '--filter', `label=${LABEL}`, '--format', `{{.ID}} {{.Label "${LABEL}"}} {{.Label "${OWNER_LABEL}"}}`]))
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' '));
    const liveRuns = new Set(rows.filter(([, , owner]) => ownerAlive(owner)).map(([, runId]) => runId));
    const ids = rows.filter(([, runId]) => !liveRuns.has(runId)).map(([id]) => id!);
    if (liveRuns.size > 0) log(`leaving the containers of chaos runs still in progress: ${[...liveRuns].join(', ')}`);
    if (ids.length > 0) {
      log(`removing ${ids.length} containers left by an earlier chaos run`);
      await docker(['rm', '-f', '-v', ...ids]);
    }
    // A network with containers attached (a live run's) refuses removal.
    const nets = (await docker(['network', 'ls', '-q', '--filter', `label=${LABEL}`])).split('\n').filter(Boolean);
    for (const n of nets) await docker(['network', 'rm', n]).catch(() => undefined);
    for (const m of mountsUnder(DATA_ROOT).reverse()) {
      if ([...liveRuns].some((r) => m.startsWith(path.join(DATA_ROOT, r!) + '/'))) continue;
      await run('umount', ['-l', m]).catch(() => undefined);
    }
  }

  static async start(o: ChaosClusterOptions): Promise<ChaosCluster> {
    // testcontainers' reaper (Ryuk) is another image to pull; we clean up ourselves (stop()).
    process.env.TESTCONTAINERS_RYUK_DISABLED ??= 'true';
    const { GenericContainer, Wait } = await import('testcontainers');
    /**
     * A fixed IP on the network (testcontainers has no option for it): a restarted container
     * keeps its address, as a node with a DNS name would, so clients on the host that learned
     * it (bootstrap lists, metadata caches) are not left with addresses Docker gave away.
     */
    class StaticIpContainer extends GenericContainer {
      withIpAddress(networkName: string, ip: string): this {
        this.createOpts.NetworkingConfig = { EndpointsConfig: { [networkName]: { IPAMConfig: { IPv4Address: ip } } } };
        return this;
      }

      /**
       * The image's HEALTHCHECK starts a node process every 5 s in every container: with 8
       * nodes about a third of a core of a 2-core machine, taken from the cluster under test
       * (the harness checks the nodes itself: waitWhole).
       */
      withoutImageHealthCheck(): this {
        this.createOpts.Healthcheck = { Test: ['NONE'] };
        return this;
      }
    }
    const controllers = o.controllers ?? 3;
    const brokers = o.brokers ?? 3;
    const prefix = `chaos-${o.runId}`;
    const network = `${prefix}-net`;
    const subnet = await createNetwork(network, o.runId);

    const nodes: ChaosNode[] = [];
    for (let i = 1; i <= controllers; i++) nodes.push(node(prefix, 'controller', i, CONTROLLER_PORT, `${subnet}.${10 + i}`));
    for (let i = 1; i <= brokers; i++) nodes.push(node(prefix, 'broker', i, BROKER_PORT, `${subnet}.${20 + i}`));
    const cluster = new ChaosCluster(o, network, nodes);
    for (const n of nodes) await mountDataDisk(n.dataDir, o.dataDiskBytes ?? DATA_DISK_BYTES_DEFAULT);

    const voters = nodes.filter((n) => n.role === 'controller').map((n) => `${n.id}@${n.containerName}:${n.port}`).join(',');
    const controllerAddresses = nodes.filter((n) => n.role === 'controller').map((n) => `${n.containerName}:${n.port}`).join(',');
    const started = Date.now();
    await Promise.all(
      nodes.map((n) => {
        const env: Record<string, string> = {
          FLOTILLA_NODE_ID: String(n.id),
          FLOTILLA_LISTEN: `${n.containerName}:${n.port}`,
          FLOTILLA_LOG_LEVEL: o.logLevel ?? 'info',
          ...(n.role === 'controller'
            ? { FLOTILLA_VOTERS: voters }
            : // The harness (on the host) reaches brokers at their IPs, not their names; the
              // other brokers can too. Resolved at each start: a restart may change the IP.
              { FLOTILLA_CONTROLLERS: controllerAddresses, FLOTILLA_ADVERTISED_ADDRESS: `{container-ip}:${n.port}` }),
        };
        return new StaticIpContainer(o.image)
          .withIpAddress(network, n.ip)
          .withoutImageHealthCheck()
          .withName(n.containerName)
          .withLabels({ [LABEL]: o.runId, [OWNER_LABEL]: OWNER, 'flotilla.node': n.name })
          .withNetworkMode(network)
          .withHostname(n.containerName)
          .withEnvironment(env)
          .withCommand([n.role])
          .withBindMounts([{ source: n.dataDir, target: '/data', mode: 'rw' }])
          // The image has no shell, so no port probe from inside: wait for the log line.
          .withWaitStrategy(Wait.forLogMessage(/listening on/))
          .withStartupTimeout(STARTUP_TIMEOUT_MS)
          .start();
      }),
    );
    o.log(`started ${controllers} controllers and ${brokers} brokers on network ${network} in ${Date.now() - started} ms`);
    return cluster;
  }

  controllers(): ChaosNode[] {
    return this.nodes.filter((n) => n.role === 'controller');
  }

  brokers(): ChaosNode[] {
    return this.nodes.filter((n) => n.role === 'broker');
  }

  byName(name: string): ChaosNode {
    const n = this.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** The node's IP on the private network (re-read after restarts; '' when not running). */
  async ip(n: ChaosNode, fresh = false): Promise<string> {
    const cached = this.ipCache.get(n.name);
    if (cached && !fresh) return cached;
    const ip = await containerIp(n.containerName, this.network);
    if (ip) this.ipCache.set(n.name, ip);
    return ip || cached || '';
  }

  /** host:port the harness uses to reach the node. */
  async address(n: ChaosNode): Promise<string> {
    return `${await this.ip(n)}:${n.port}`;
  }

  /** Forget cached IPs (after a container started again). */
  forgetAddress(n: ChaosNode): void {
    this.ipCache.delete(n.name);
  }

  async peerIps(n: ChaosNode, peers: readonly ChaosNode[] = this.nodes): Promise<string[]> {
    const out: string[] = [];
    for (const p of peers) if (p.name !== n.name) out.push(await this.ip(p));
    return out.filter(Boolean);
  }

  /**
   * An admin client whose bootstrap starts at `first` (and falls back to every other node),
   * with short timeouts so that a request during a fault ends as `info` rather than hanging.
   */
  async admin(first?: ChaosNode, timeouts: { totalTimeoutMs: number; requestTimeoutMs: number } = { totalTimeoutMs: 8_000, requestTimeoutMs: 3_000 }): Promise<Admin> {
    const ordered = first ? [first, ...this.nodes.filter((n) => n !== first)] : [...this.nodes];
    const bootstrap = await Promise.all(ordered.map((n) => this.address(n)));
    const key = `${bootstrap.join(',')}/${timeouts.totalTimeoutMs}/${timeouts.requestTimeoutMs}`;
    let a = this.admins.get(key);
    if (!a) {
      a = new Flotilla({ bootstrap, ...timeouts }).admin();
      this.admins.set(key, a);
    }
    return a;
  }

  /** An admin client talking to this one node only (its own view, e.g. DescribeQuorum). */
  async adminOnly(n: ChaosNode, timeoutMs = 2_000): Promise<Admin> {
    const address = await this.address(n);
    const key = `only:${address}/${timeoutMs}`;
    let a = this.admins.get(key);
    if (!a) {
      a = new Flotilla({ bootstrap: [address], totalTimeoutMs: timeoutMs, requestTimeoutMs: timeoutMs, attemptsMax: 1 }).admin();
      this.admins.set(key, a);
    }
    return a;
  }

  /** Closes admin clients whose addresses are stale (after IP changes). */
  async closeClients(): Promise<void> {
    const all = [...this.admins.values()];
    this.admins.clear();
    await Promise.all(all.map((a) => a.close().catch(() => undefined)));
  }

  /** True when a TCP connection to the node's port opens within timeoutMs. */
  async accepts(n: ChaosNode, timeoutMs = 1_000): Promise<boolean> {
    const ip = await this.ip(n, true);
    if (!ip) return false;
    return new Promise((resolve) => {
      const s = net.connect({ host: ip, port: n.port });
      const done = (ok: boolean): void => {
        s.destroy();
        resolve(ok);
      };
      s.setTimeout(timeoutMs, () => done(false));
      s.on('connect', () => done(true));
      s.on('error', () => done(false));
    });
  }

  /**
   * Whole: every container running and accepting, a controller leader every controller
   * agrees on, every broker registered and unfenced. Returns what is still missing ('' = whole).
   */
  async missing(): Promise<string> {
    for (const n of this.nodes) {
      const st = await containerState(n.containerName);
      if (st !== 'running') return `${n.name} is ${st}`;
      if (!(await this.accepts(n))) return `${n.name} does not accept connections`;
    }
    let leader = 0;
    for (const c of this.controllers()) {
      try {
        const q = await (await this.adminOnly(c)).describeQuorum();
        if (q.leaderId <= 0) return `${c.name} knows no leader`;
        if (leader !== 0 && q.leaderId !== leader) return `controllers disagree on the leader (${leader} vs ${q.leaderId})`;
        leader = q.leaderId;
      } catch (e) {
        return `${c.name}: ${(e as Error).message}`;
      }
    }
    try {
      const cd = await (await this.admin()).describeCluster();
      for (const b of this.brokers()) {
        const reg = cd.brokers.find((x) => x.id === b.id);
        if (!reg) return `${b.name} is not registered`;
        if (reg.fenced) return `${b.name} is fenced`;
      }
    } catch (e) {
      return `describe cluster: ${(e as Error).message}`;
    }
    // The controller's view is not enough: a broker restarted while the quorum could not fence
    // its old incarnation shows unfenced there long before the new process has registered
    // (seed 996365652's roll-restart). Each broker must answer Metadata itself, which it does
    // only once it has caught up with the metadata since it started.
    for (const b of this.brokers()) {
      const w = new BrokerWire(await this.address(b));
      try {
        await w.metadata([], true, 2_000);
      } catch (e) {
        return `${b.name} does not answer Metadata itself: ${(e as Error).message.slice(0, 200)}`;
      } finally {
        w.close();
      }
    }
    return '';
  }

  /**
   * Waits (bounded) until whole; resolves with ms waited, or rejects with what was missing.
   * `waitedFor` collects the reasons it was not whole along the way.
   */
  async waitWhole(timeoutMs: number, waitedFor?: Set<string>): Promise<number> {
    const start = Date.now();
    let why = '';
    for (let i = 0; Date.now() - start < timeoutMs && i < 10_000; i++) {
      why = await this.missing();
      if (why === '') return Date.now() - start;
      // What kept the cluster from being whole, for the report (bounded: a few distinct reasons).
      if (waitedFor && waitedFor.size < 10) waitedFor.add(why.replace(/\d+ ms/g, 'N ms'));
      await sleep(250);
    }
    throw new Error(`cluster not whole after ${timeoutMs} ms: ${why}`);
  }

  /** The container's log (stdout + stderr: the node's JSON lines). */
  async logs(n: ChaosNode): Promise<string> {
    return docker(['logs', n.containerName], 60_000).catch((e: Error) => `(no logs: ${e.message})`);
  }

  /** Removes containers, network and data mounts. Idempotent. */
  async stop(): Promise<void> {
    await this.closeClients();
    await docker(['rm', '-f', '-v', ...this.nodes.map((n) => n.containerName)]).catch(() => undefined);
    await docker(['network', 'rm', this.network]).catch(() => undefined);
    for (const n of this.nodes) await run('umount', ['-l', n.dataDir]).catch(() => undefined);
    await fs.promises.rm(path.join(DATA_ROOT, this.o.runId), { recursive: true, force: true }).catch(() => undefined);
  }
}

function node(prefix: string, role: Role, id: number, port: number, ip: string): ChaosNode {
  const name = `${role}-${id}`;
  const runId = prefix.slice('chaos-'.length);
  return { name, role, id, containerName: `${prefix}-${name}`, port, dataDir: path.join(DATA_ROOT, runId, name), ip };
}

/** Subnets tried for the network: 10.213.<k>.0/24, from a hash of the run id on. */
const SUBNET_ATTEMPTS = 20;

/** Creates the run's network on a free /24 (fixed node IPs need a subnet); returns "a.b.c". */
async function createNetwork(network: string, runId: string): Promise<string> {
  let k = [...runId].reduce((h, ch) => (h * 31 + ch.charCodeAt(0)) >>> 0, 7) % 250;
  let last = '';
  for (let i = 0; i < SUBNET_ATTEMPTS; i++, k = (k + 1) % 250) {
    const prefix = `10.213.${k}`;
    try {
      await docker(['network', 'create', '--label', `${LABEL}=${runId}`, '--subnet', `${prefix}.0/24`, network]);
      return prefix;
    } catch (e) {
      last = (e as Error).message;
      if (!/overlap/i.test(last)) throw e;
    }
  }
  throw new Error(`no free 10.213.k.0/24 subnet for ${network} after ${SUBNET_ATTEMPTS} attempts: ${last}`);
}

async function mountDataDisk(dir: string, sizeBytes: number): Promise<void> {
  await fs.promises.mkdir(dir, { recursive: true });
  await run('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes},uid=${IMAGE_UID},gid=${IMAGE_UID},mode=0755`, 'tmpfs', dir]);
}

/** True when `owner` (host:pid) is a process of this host that is still running. */
function ownerAlive(owner: string | undefined): boolean {
  const m = /^(.*):(\d+)$/.exec(owner ?? '');
  if (!m || m[1] !== os.hostname() || Number(m[2]) === process.pid) return false;
  try {
    process.kill(Number(m[2]), 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function mountsUnder(root: string): string[] {
  try {
    return fs
      .readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((m): m is string => m !== undefined && m.startsWith(`${root}/`));
  } catch {
    return [];
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
