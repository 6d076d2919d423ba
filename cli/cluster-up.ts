import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { prettyFactory } from 'pino-pretty';
import { Flotilla } from '../client';
import type { ClusterDescription } from '../client';

// `flotilla cluster up`: a local cluster as child processes of this one: a controller
// quorum, then brokers registered with it. Each child is this same CLI running `controller`
// or `broker`, logging JSON lines to <dataDir>/controller-N.log or broker-N.log (and, with
// FLOTILLA_PRETTY=1, prettified to this terminal). Ready means: a controller leader exists
// and every broker is registered and unfenced. The children are stopped with this process,
// brokers first (their controlled shutdown needs the controllers), then controllers:
// SIGTERM, then SIGKILL after a grace period. They also stop by themselves if this process
// dies (--stop-with-parent: their stdin closes).

export interface ClusterUpOptions {
  readonly mainScript: string;
  readonly controllers: number;
  readonly brokers: number;
  readonly dataDir: string;
  readonly host: string;
  /** Controller N listens on basePort + N - 1. */
  readonly basePort: number;
  /** Broker N listens on brokerBasePort + N - 1. */
  readonly brokerBasePort: number;
  readonly readyTimeoutMs: number;
  readonly stopGraceMs: number;
  readonly json: boolean;
  /** Extra arguments for every `controller` child (tuning flags). */
  readonly controllerArgs: readonly string[];
  /** Extra arguments for every `broker` child. */
  readonly brokerArgs?: readonly string[];
  /** True when the CLI's default bootstrap reaches this cluster (default host and ports). */
  readonly defaultBootstrapReaches?: boolean;
}

type Role = 'controller' | 'broker';

interface Child {
  readonly role: Role;
  readonly id: number;
  readonly address: string;
  readonly logPath: string;
  readonly proc: ChildProcess;
  exited: boolean;
}

const POLL_INTERVAL_MS = 200;
const LOG_TAIL_LINES = 15;

/** Runs until SIGINT/SIGTERM; resolves with the process exit code. */
export async function clusterUp(o: ClusterUpOptions): Promise<number> {
  fs.mkdirSync(o.dataDir, { recursive: true });
  const members = Array.from({ length: o.controllers }, (_, i) => ({ id: i + 1, address: `${o.host}:${o.basePort + i}` }));
  const voters = members.map((m) => `${m.id}@${m.address}`).join(',');
  const controllerAddresses = members.map((m) => m.address).join(',');
  const pretty = process.env.FLOTILLA_PRETTY === '1';
  const controllers: Child[] = members.map((m) =>
    startChild(o, 'controller', m.id, m.address, ['--voters', voters, ...o.controllerArgs], pretty),
  );
  // Brokers start at once: they retry registration until a controller leader exists.
  const brokers: Child[] = Array.from({ length: o.brokers }, (_, i) => {
    const address = `${o.host}:${o.brokerBasePort + i}`;
    return startChild(o, 'broker', i + 1, address, ['--controllers', controllerAddresses, ...(o.brokerArgs ?? [])], pretty);
  });
  const children = [...controllers, ...brokers];

  let stopping = false;
  let resolveStop!: (signal: string) => void;
  const stopRequested = new Promise<string>((resolve) => (resolveStop = resolve));
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    resolveStop(signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  for (const c of children) {
    c.proc.on('exit', (code, signal) => {
      c.exited = true;
      if (!stopping) process.stderr.write(`flotilla: ${c.role} ${c.id} exited (${signal ?? `code ${code}`}); its log: ${c.logPath}\n`);
    });
  }

  try {
    const ready = await Promise.race([waitForReady(o, controllers, brokers), stopRequested.then(() => undefined)]);
    if (ready === undefined) return 130;
    printReady(o, controllers, brokers, ready.leaderId);
    const signal = await stopRequested;
    if (!o.json) {
      const what = brokers.length > 0 ? `${brokers.length} brokers, then ${controllers.length} controllers` : `${controllers.length} controllers`;
      process.stdout.write(`flotilla: ${signal}: stopping ${what}\n`);
    }
    return 0;
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await stopChildren(brokers, o.stopGraceMs);
    await stopChildren(controllers, o.stopGraceMs);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function printReady(o: ClusterUpOptions, controllers: readonly Child[], brokers: readonly Child[], leaderId: number): void {
  const describe = (c: Child) => ({ id: c.id, address: c.address, log: c.logPath, pid: c.proc.pid });
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ ready: true, leaderId, controllers: controllers.map(describe), brokers: brokers.map(describe) })}\n`);
    return;
  }
  const out: string[] = [];
  for (const c of [...controllers, ...brokers]) out.push(`${`${c.role} ${c.id}`.padEnd(13)} ${c.address}  log: ${c.logPath}`);
  const controllerList = controllers.map((c) => c.address).join(',');
  out.push(`flotilla cluster ready: ${controllers.length} controllers at ${controllerList} (leader ${leaderId})`);
  if (brokers.length === 0) {
    out.push(`                        no brokers`);
    out.push(`try: flotilla topics create demo --partitions 3 --replication-factor 1`);
    out.push(`     (topics need live brokers; this cluster has none, so expect INVALID_REPLICATION_FACTOR)`);
  } else {
    const brokerList = brokers.map((c) => c.address).join(',');
    out.push(`                        ${brokers.length} brokers at ${brokerList} (all registered and unfenced)`);
    const rf = Math.min(3, brokers.length);
    // The CLI's default bootstrap covers the default ports; otherwise say where to point it.
    const bootstrap = o.defaultBootstrapReaches ? '' : ` --bootstrap ${brokerList}`;
    out.push(`try: flotilla${bootstrap} topics create demo --partitions 3 --replication-factor ${rf}`);
    out.push(`     flotilla${bootstrap} topics describe demo`);
  }
  out.push(`stop: Ctrl-C`);
  process.stdout.write(`${out.join('\n')}\n`);
}

function startChild(o: ClusterUpOptions, role: Role, id: number, address: string, roleArgs: readonly string[], pretty: boolean): Child {
  const dataDir = path.join(o.dataDir, `${role}-${id}`);
  const logPath = path.join(o.dataDir, `${role}-${id}.log`);
  const args = [o.mainScript, role, '--node-id', String(id), '--listen', address, '--data-dir', dataDir, '--stop-with-parent', ...roleArgs];
  // The child always logs JSON (the file is for jq); this process prettifies for the terminal.
  const env = { ...process.env, FLOTILLA_PRETTY: '0' };
  const proc = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  const file = fs.createWriteStream(logPath, { flags: 'a' });
  proc.stdout!.pipe(file, { end: false });
  proc.stderr!.pipe(file, { end: false });
  proc.on('close', () => file.end());
  if (pretty) {
    const format = prettyFactory({
      colorize: process.stdout.isTTY === true,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,nodeId,role',
      messageFormat: '[{role} {nodeId}] {msg}',
      singleLine: true,
    });
    for (const source of [proc.stdout!, proc.stderr!]) {
      readline.createInterface({ input: source, crlfDelay: Infinity }).on('line', (line) => {
        process.stdout.write(line.startsWith('{') ? format(line) : `[${role} ${id}] ${line}\n`);
      });
    }
  }
  return { role, id, address, logPath, proc, exited: false };
}

/** Waits for a controller leader, then for every broker to be registered and unfenced. */
async function waitForReady(o: ClusterUpOptions, controllers: readonly Child[], brokers: readonly Child[]): Promise<{ leaderId: number }> {
  const admin = new Flotilla({
    bootstrap: controllers.map((c) => c.address),
    totalTimeoutMs: 1_000,
    requestTimeoutMs: 500,
  }).admin();
  const deadline = Date.now() + o.readyTimeoutMs;
  let lastProblem = 'no answer yet';
  const logs = () => [...controllers, ...brokers].map((c) => c.logPath).join(' ');
  try {
    let leaderId = 0;
    for (;;) {
      const dead = [...controllers, ...brokers].find((c) => c.exited);
      if (dead) throw new Error(`${dead.role} ${dead.id} exited before the cluster was ready.\n${logTail(dead.logPath)}`);
      try {
        if (leaderId === 0) {
          const q = await admin.describeQuorum();
          if (q.leaderId > 0) leaderId = q.leaderId;
          else lastProblem = `controller ${q.servedBy} knows no leader (term ${q.term})`;
        }
        if (leaderId > 0) {
          if (brokers.length === 0) return { leaderId };
          const missing = brokersNotReady(await admin.describeCluster(), brokers);
          if (missing.length === 0) return { leaderId };
          lastProblem = `brokers not registered and unfenced yet: ${missing.join(', ')}`;
        }
      } catch (e) {
        lastProblem = (e as Error).message;
      }
      if (Date.now() > deadline) {
        const what = leaderId === 0 ? 'no controller leader' : 'brokers not ready';
        throw new Error(`${what} after ${o.readyTimeoutMs} ms (last: ${lastProblem}); logs: ${logs()}`);
      }
      await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
    }
  } finally {
    await admin.close();
  }
}

/** "broker 2 (fenced)", "broker 3 (not registered)" for each broker not ready yet. */
function brokersNotReady(cluster: ClusterDescription, brokers: readonly Child[]): string[] {
  const missing: string[] = [];
  for (const b of brokers) {
    const registered = cluster.brokers.find((r) => r.id === b.id);
    if (registered === undefined) missing.push(`broker ${b.id} (not registered)`);
    else if (registered.fenced) missing.push(`broker ${b.id} (fenced)`);
  }
  return missing;
}

async function stopChildren(children: readonly Child[], graceMs: number): Promise<void> {
  await Promise.all(
    children.map(async (c) => {
      if (c.exited) return;
      const exited = new Promise<void>((resolve) => c.proc.once('exit', () => resolve()));
      c.proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!c.exited) {
          process.stderr.write(`flotilla: ${c.role} ${c.id} still running ${graceMs} ms after SIGTERM: SIGKILL\n`);
          c.proc.kill('SIGKILL');
        }
      }, graceMs);
      await exited;
      clearTimeout(timer);
    }),
  );
}

function logTail(logPath: string): string {
  try {
    const lines = fs.readFileSync(logPath, 'utf8').trimEnd().split('\n');
    return `last lines of ${logPath}:\n${lines.slice(-LOG_TAIL_LINES).join('\n')}`;
  } catch {
    return `(no log at ${logPath})`;
  }
}
