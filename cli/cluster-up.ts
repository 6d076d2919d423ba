import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { prettyFactory } from 'pino-pretty';
import { Flotilla } from '../client';

// `flotilla cluster up`: a local controller quorum as child processes of this one. Each
// child is this same CLI running `controller`, logging JSON lines to
// <dataDir>/controller-N.log (and, with FLOTILLA_PRETTY=1, prettified to this terminal).
// The children are stopped with this process: SIGTERM, then SIGKILL after a grace period;
// they also stop by themselves if this process dies (--stop-with-parent: their stdin closes).

export interface ClusterUpOptions {
  readonly mainScript: string;
  readonly controllers: number;
  readonly dataDir: string;
  readonly host: string;
  readonly basePort: number;
  readonly readyTimeoutMs: number;
  readonly stopGraceMs: number;
  readonly json: boolean;
  /** Extra arguments for every `controller` child (tuning flags). */
  readonly controllerArgs: readonly string[];
}

interface Child {
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
  const pretty = process.env.FLOTILLA_PRETTY === '1';
  const children: Child[] = members.map((m) => startChild(o, m.id, m.address, voters, pretty));

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
      if (!stopping) process.stderr.write(`flotilla: controller ${c.id} exited (${signal ?? `code ${code}`}); its log: ${c.logPath}\n`);
    });
  }

  try {
    const leaderId = await Promise.race([waitForLeader(o, children), stopRequested.then(() => undefined)]);
    if (leaderId === undefined) return 130;
    const addresses = children.map((c) => c.address).join(',');
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify({ ready: true, leaderId, controllers: children.map((c) => ({ id: c.id, address: c.address, log: c.logPath, pid: c.proc.pid })) })}\n`,
      );
    } else {
      for (const c of children) process.stdout.write(`controller ${c.id}  ${c.address}  log: ${c.logPath}\n`);
      process.stdout.write(`flotilla cluster ready: ${children.length} controllers at ${addresses} (leader ${leaderId})\n`);
      process.stdout.write(`try: flotilla topics create demo --partitions 3 --replication-factor 1\n`);
      process.stdout.write(`     (topics need live brokers; this cluster has none yet, so expect INVALID_REPLICATION_FACTOR)\n`);
      process.stdout.write(`stop: Ctrl-C\n`);
    }
    const signal = await stopRequested;
    if (!o.json) process.stdout.write(`flotilla: ${signal}: stopping ${children.length} controllers\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`error: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await stopChildren(children, o.stopGraceMs);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

function startChild(o: ClusterUpOptions, id: number, address: string, voters: string, pretty: boolean): Child {
  const dataDir = path.join(o.dataDir, `controller-${id}`);
  const logPath = path.join(o.dataDir, `controller-${id}.log`);
  const args = [o.mainScript, 'controller', '--node-id', String(id), '--listen', address, '--voters', voters, '--data-dir', dataDir, '--stop-with-parent', ...o.controllerArgs];
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
        process.stdout.write(line.startsWith('{') ? format(line) : `[controller ${id}] ${line}\n`);
      });
    }
  }
  return { id, address, logPath, proc, exited: false };
}

async function waitForLeader(o: ClusterUpOptions, children: readonly Child[]): Promise<number> {
  const admin = new Flotilla({
    bootstrap: children.map((c) => c.address),
    totalTimeoutMs: 1_000,
    requestTimeoutMs: 500,
  }).admin();
  const deadline = Date.now() + o.readyTimeoutMs;
  let lastProblem = 'no answer yet';
  try {
    for (;;) {
      const dead = children.find((c) => c.exited);
      if (dead) throw new Error(`controller ${dead.id} exited before the cluster was ready.\n${logTail(dead.logPath)}`);
      try {
        const q = await admin.describeQuorum();
        if (q.leaderId > 0) return q.leaderId;
        lastProblem = `controller ${q.servedBy} knows no leader (term ${q.term})`;
      } catch (e) {
        lastProblem = (e as Error).message;
      }
      if (Date.now() > deadline) {
        throw new Error(`no controller leader after ${o.readyTimeoutMs} ms (last: ${lastProblem}); logs: ${children.map((c) => c.logPath).join(' ')}`);
      }
      await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
    }
  } finally {
    await admin.close();
  }
}

async function stopChildren(children: readonly Child[], graceMs: number): Promise<void> {
  await Promise.all(
    children.map(async (c) => {
      if (c.exited) return;
      const exited = new Promise<void>((resolve) => c.proc.once('exit', () => resolve()));
      c.proc.kill('SIGTERM');
      const timer = setTimeout(() => {
        if (!c.exited) {
          process.stderr.write(`flotilla: controller ${c.id} still running ${graceMs} ms after SIGTERM: SIGKILL\n`);
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
