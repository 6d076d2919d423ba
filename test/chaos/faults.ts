import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Prng } from '../sim/prng';
import type { ChaosCluster, ChaosNode } from './cluster';
import { sleep } from './cluster';
import { containerState, docker, inNetns, inNetnsAll } from './docker';

// Fault primitives and target selection. Each primitive applies a fault now and returns
// `heal`, which lifts it and leaves the node running (a node that crashed under the fault,
// e.g. on a full disk, is started again). The kernel here has no netem, so network faults
// are iptables rules (DROP, `-m statistic` for random loss) and a tc tbf qdisc, applied in
// the container's network namespace from the host with nsenter: the image needs no tools.

export type Heal = () => Promise<void>;

/** Our rules live in one chain, jumped to from INPUT and OUTPUT, so heal flushes only ours. */
const CHAIN = 'FLOTILLA_CHAOS';
const IPT = ['iptables', '-w', '5'];
/** How long `docker stop` waits after SIGTERM before SIGKILL (controlled shutdown). */
const STOP_GRACE_S = 10;
const FILL_FILE = 'chaos-disk-fill';
const FILL_CHUNK_BYTES = 1024 * 1024;

export async function kill(c: ChaosCluster, n: ChaosNode): Promise<Heal> {
  await docker(['kill', '--signal', 'KILL', n.containerName]);
  return () => ensureRunning(c, n);
}

/** kill -9 of several nodes in one command (as close to at once as Docker gets). */
export async function killAll(c: ChaosCluster, nodes: readonly ChaosNode[]): Promise<Heal> {
  await docker(['kill', '--signal', 'KILL', ...nodes.map((n) => n.containerName)]);
  return async () => {
    for (const n of nodes) await ensureRunning(c, n);
  };
}

/** SIGTERM, then SIGKILL after STOP_GRACE_S: a broker's controlled shutdown runs first. */
export async function stopGracefully(c: ChaosCluster, n: ChaosNode): Promise<Heal> {
  await docker(['stop', '-t', String(STOP_GRACE_S), n.containerName], (STOP_GRACE_S + 30) * 1000);
  return () => ensureRunning(c, n);
}

const PAUSE_ATTEMPTS = 5;

/** Freezes every process of the node (cgroup freezer): it neither sends nor answers. */
export async function pause(c: ChaosCluster, n: ChaosNode): Promise<Heal> {
  // runc gives up ("unable to freeze") when a task will not freeze in time, e.g. one in an
  // uninterruptible fsync on a loaded machine; it thaws what it froze. Try again, bounded.
  for (let attempt = 1; ; attempt++) {
    try {
      await docker(['pause', n.containerName]);
      break;
    } catch (e) {
      if (attempt >= PAUSE_ATTEMPTS || !/unable to freeze/.test((e as Error).message)) throw e;
      await sleep(500);
    }
  }
  return async () => {
    if ((await containerState(n.containerName)) === 'paused') await docker(['unpause', n.containerName]);
    await ensureRunning(c, n);
  };
}

export async function restart(c: ChaosCluster, n: ChaosNode): Promise<Heal> {
  await docker(['restart', '-t', String(STOP_GRACE_S), n.containerName], (STOP_GRACE_S + 30) * 1000);
  c.forgetAddress(n);
  return () => ensureRunning(c, n);
}

/**
 * Drops traffic between `n` and `peers` (default: every other node). `outboundOnly` drops
 * only what `n` sends (asymmetric: it still hears them, they never hear back).
 * The harness (on the host) still reaches the node: clients see a partitioned node.
 */
export async function isolate(c: ChaosCluster, n: ChaosNode, opts: { peers?: readonly ChaosNode[]; outboundOnly?: boolean } = {}): Promise<Heal> {
  const rules: string[][] = [];
  for (const ip of await c.peerIps(n, opts.peers)) {
    rules.push([...IPT, '-A', CHAIN, '-d', ip, '-j', 'DROP']);
    if (!opts.outboundOnly) rules.push([...IPT, '-A', CHAIN, '-s', ip, '-j', 'DROP']);
  }
  await inNetnsAll(n.containerName, [...chainSetup(), ...rules]);
  return () => flushChain(c, n);
}

/** Drops `percent`% of the packets between `n` and its peers, each direction independently. */
export async function loss(c: ChaosCluster, n: ChaosNode, percent: number): Promise<Heal> {
  const p = (percent / 100).toFixed(4);
  const rules: string[][] = [];
  for (const ip of await c.peerIps(n)) {
    for (const dir of ['-d', '-s']) rules.push([...IPT, '-A', CHAIN, dir, ip, '-m', 'statistic', '--mode', 'random', '--probability', p, '-j', 'DROP']);
  }
  await inNetnsAll(n.containerName, [...chainSetup(), ...rules]);
  return () => flushChain(c, n);
}

/** Limits what `n` sends to `rateKbit` (token bucket on its interface). */
export async function throttle(c: ChaosCluster, n: ChaosNode, rateKbit: number): Promise<Heal> {
  await inNetns(n.containerName, ['tc', 'qdisc', 'replace', 'dev', 'eth0', 'root', 'tbf', 'rate', `${rateKbit}kbit`, 'burst', '16kb', 'latency', '300ms']);
  return async () => {
    if ((await containerState(n.containerName)) === 'running') {
      await inNetns(n.containerName, ['tc', 'qdisc', 'del', 'dev', 'eth0', 'root']).catch(() => undefined);
    }
    await ensureRunning(c, n);
  };
}

/** Fills the node's data tmpfs (from the host) until the filesystem says ENOSPC. */
export async function fillDisk(c: ChaosCluster, n: ChaosNode): Promise<Heal> {
  const file = path.join(n.dataDir, FILL_FILE);
  const chunk = Buffer.alloc(FILL_CHUNK_BYTES);
  const fh = await fs.promises.open(file, 'w');
  try {
    // Bounded: a tmpfs of at most a few GiB.
    for (let i = 0; i < 16_384; i++) {
      try {
        await fh.write(chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOSPC') break;
        throw e;
      }
    }
    // The last partial chunk too: leave no byte free.
    for (let size = FILL_CHUNK_BYTES / 2; size >= 512; size /= 2) {
      try {
        await fh.write(chunk.subarray(0, size));
      } catch {
        // smaller next
      }
    }
  } finally {
    await fh.close();
  }
  return async () => {
    await fs.promises.rm(file, { force: true });
    await ensureRunning(c, n);
  };
}

/** Restarts every node in turn (brokers, then controllers), waiting for the cluster each time. */
export async function rollRestart(c: ChaosCluster, perNodeTimeoutMs: number, log: (l: string) => void): Promise<Heal> {
  for (const n of [...c.brokers(), ...c.controllers()]) {
    const start = Date.now();
    await docker(['restart', '-t', String(STOP_GRACE_S), n.containerName], (STOP_GRACE_S + 30) * 1000);
    c.forgetAddress(n);
    await c.waitWhole(perNodeTimeoutMs);
    log(`  roll-restart: ${n.name} back and the cluster whole in ${Date.now() - start} ms`);
  }
  return async () => undefined;
}

/** Starts the node if it is not running (killed, stopped, crashed under a fault). */
export async function ensureRunning(c: ChaosCluster, n: ChaosNode): Promise<void> {
  const st = await containerState(n.containerName);
  if (st === 'paused') await docker(['unpause', n.containerName]);
  else if (st !== 'running') await docker(['start', n.containerName]);
  // Clients stay open (the workload's calls in flight are not ours to fail); a node whose IP
  // changed gets new clients, as they are keyed by address.
  c.forgetAddress(n);
  // Bounded wait for the process to listen again.
  for (let i = 0; i < 120 && !(await c.accepts(n)); i++) await sleep(250);
}

/** Our chain, created and hooked into INPUT and OUTPUT once (a fresh namespace has neither). */
function chainSetup(): string[][] {
  // `-N` fails when the chain exists and `-C` when the jump is missing: hence the `||`.
  return [
    [...IPT, '-N', CHAIN, '2>/dev/null', '||', 'true'],
    [...IPT, '-C', 'INPUT', '-j', CHAIN, '2>/dev/null', '||', ...IPT, '-I', 'INPUT', '-j', CHAIN],
    [...IPT, '-C', 'OUTPUT', '-j', CHAIN, '2>/dev/null', '||', ...IPT, '-I', 'OUTPUT', '-j', CHAIN],
  ];
}

async function flushChain(c: ChaosCluster, n: ChaosNode): Promise<void> {
  const st = await containerState(n.containerName);
  // A container that restarted meanwhile has a fresh namespace without our rules.
  if (st === 'running' || st === 'paused') await inNetns(n.containerName, [...IPT, '-F', CHAIN]).catch(() => undefined);
  await ensureRunning(c, n);
}

// ------------------------------------------------------------------------------------------
// Targets

export type TargetKind =
  | 'active-controller'
  | 'controller-follower'
  | 'controller-majority'
  | 'partition-leader'
  | 'partition-follower'
  | 'partition-leader-and-follower'
  | 'brokers-outside-partition'
  | 'any-broker'
  | 'whole-cluster';

/** The probe topic's partition 0 gives "a partition leader" and "a follower". */
export const PROBE_TOPIC = 'chaos-probe';

/** Resolves a target kind to nodes, now (the cluster's current leaders). */
export async function resolveTarget(c: ChaosCluster, kind: TargetKind, prng: Prng): Promise<ChaosNode[]> {
  const admin = await c.admin(undefined, { totalTimeoutMs: 10_000, requestTimeoutMs: 3_000 });
  switch (kind) {
    case 'whole-cluster':
      return [...c.nodes];
    case 'any-broker':
      return [prng.pick(c.brokers())];
    case 'active-controller':
    case 'controller-follower':
    case 'controller-majority': {
      const q = await admin.describeQuorum();
      const leader = c.controllers().find((n) => n.id === q.leaderId) ?? prng.pick(c.controllers());
      const followers = c.controllers().filter((n) => n !== leader);
      if (kind === 'active-controller') return [leader];
      if (kind === 'controller-follower') return [prng.pick(followers)];
      const majority = Math.floor(c.controllers().length / 2) + 1;
      return [leader, ...prng.shuffle([...followers]).slice(0, majority - 1)];
    }
    case 'partition-leader':
    case 'partition-follower':
    case 'partition-leader-and-follower':
    case 'brokers-outside-partition': {
      const [t] = await admin.describeTopics([PROBE_TOPIC]);
      const p = t?.partitions[0];
      const leader = c.brokers().find((b) => b.id === p?.leader);
      if (kind === 'partition-leader') return [leader ?? prng.pick(c.brokers())];
      if (kind === 'brokers-outside-partition') {
        // Two brokers holding no replica of it (with 5 brokers and RF 3, exactly two).
        const outside = c.brokers().filter((b) => p !== undefined && !p.replicas.includes(b.id));
        const pool = outside.length >= 2 ? outside : c.brokers().filter((b) => b !== leader);
        return prng.shuffle([...pool]).slice(0, 2);
      }
      const followers = c.brokers().filter((b) => b !== leader && (p?.isr.includes(b.id) ?? true));
      const follower = prng.pick(followers.length > 0 ? followers : c.brokers().filter((b) => b !== leader));
      if (kind === 'partition-follower') return [follower];
      // Leader and follower at once: the ISR's last member must take over with every acknowledged record.
      return [leader ?? prng.pick(c.brokers().filter((b) => b !== follower)), follower];
    }
  }
}
