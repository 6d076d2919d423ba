import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as hdr from 'hdr-histogram-js';
import type { ControllerCluster } from '../test/integration/controller-launcher';

// What the benchmarks share: a bounded load loop with an HDR latency histogram, process
// and disk measurements, and the machine description. Nothing here asserts: a benchmark
// prints numbers and writes them to JSON.

/** Latency and throughput of one load phase. Latencies are in milliseconds. */
export interface LoadStats {
  /** Operations requested (the count bound). */
  readonly requested: number;
  /** Operations that completed successfully. */
  readonly ok: number;
  /** Failed operations by error name (e.g. REQUEST_TIMED_OUT). */
  readonly errors: Record<string, number>;
  readonly inFlight: number;
  readonly durationMs: number;
  /** True when the time bound, not the count, ended the phase. */
  readonly timeCapped: boolean;
  /** Successful operations per second over the whole phase. */
  readonly opsPerSec: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
}

export interface LoadOptions {
  /** Upper bound on operations started. */
  readonly count: number;
  /** Operations kept in flight at once. */
  readonly inFlight: number;
  /** No operation starts after this many ms (those in flight are awaited). */
  readonly timeCapMs: number;
  /** Called every `progressEvery` completions (successful or not) with the completion count. */
  readonly onProgress?: (done: number, elapsedMs: number) => void;
  readonly progressEvery?: number;
}

/** At most this many failures are kept as examples (the counts are complete). */
const ERROR_EXAMPLES_MAX = 5;

/**
 * Runs `op(i)` for i = 0, 1, ... with `inFlight` workers, until `count` operations started or
 * `timeCapMs` passed. Latency of each success goes into an HDR histogram (microseconds,
 * 3 significant digits); failures are counted by error name, never retried here.
 */
export async function runLoad(op: (i: number) => Promise<unknown>, o: LoadOptions): Promise<LoadStats & { errorExamples: string[] }> {
  const histogram = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: 3 });
  const errors: Record<string, number> = {};
  const errorExamples: string[] = [];
  const start = process.hrtime.bigint();
  const deadline = Date.now() + o.timeCapMs;
  let next = 0;
  let done = 0;
  let ok = 0;
  let timeCapped = false;
  const worker = async (): Promise<void> => {
    for (;;) {
      if (next >= o.count) return;
      if (Date.now() >= deadline) {
        timeCapped = true;
        return;
      }
      const i = next++;
      const t0 = process.hrtime.bigint();
      try {
        await op(i);
        histogram.recordValue(Math.max(1, Math.round(Number(process.hrtime.bigint() - t0) / 1e3)));
        ok++;
      } catch (e) {
        const name = (e as Error)?.name ?? 'Error';
        errors[name] = (errors[name] ?? 0) + 1;
        if (errorExamples.length < ERROR_EXAMPLES_MAX) errorExamples.push(`${name}: ${(e as Error)?.message ?? String(e)}`);
      }
      done++;
      if (o.onProgress && o.progressEvery && done % o.progressEvery === 0) o.onProgress(done, Number(process.hrtime.bigint() - start) / 1e6);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, o.inFlight) }, worker));
  const durationMs = Number(process.hrtime.bigint() - start) / 1e6;
  const ms = (us: number): number => round(us / 1000, 3);
  const stats = {
    requested: o.count,
    ok,
    errors,
    inFlight: o.inFlight,
    durationMs: round(durationMs, 1),
    timeCapped,
    opsPerSec: round(ok / (durationMs / 1000), 1),
    p50Ms: ok ? ms(histogram.getValueAtPercentile(50)) : NaN,
    p99Ms: ok ? ms(histogram.getValueAtPercentile(99)) : NaN,
    p999Ms: ok ? ms(histogram.getValueAtPercentile(99.9)) : NaN,
    maxMs: ok ? ms(histogram.maxValue) : NaN,
    meanMs: ok ? ms(histogram.mean) : NaN,
    errorExamples,
  };
  histogram.destroy();
  return stats;
}

export function formatLoad(label: string, s: LoadStats): string {
  const errs = Object.entries(s.errors)
    .map(([k, v]) => `${k}×${v}`)
    .join(', ');
  return (
    `${label}: ${s.ok}/${s.requested} ok in ${(s.durationMs / 1000).toFixed(1)} s${s.timeCapped ? ' (time cap)' : ''}, ` +
    `${s.opsPerSec.toFixed(0)} ops/s, p50 ${s.p50Ms.toFixed(2)} ms, p99 ${s.p99Ms.toFixed(2)} ms, max ${s.maxMs.toFixed(1)} ms` +
    (errs ? `, errors: ${errs}` : '')
  );
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resident set size of a live process in bytes (VmRSS), or undefined if it is gone. */
export function rssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Peak resident set size (VmHWM) of a live process in bytes. */
export function peakRssBytes(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a live process used so far, in ms, from /proc/PID/stat. */
export function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

/** Bytes of all regular files under `dir` (0 if absent). */
export function dirBytes(dir: string): number {
  let total = 0;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += dirBytes(p);
    else if (e.isFile()) total += fs.statSync(p).size;
  }
  return total;
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? '?' : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

export interface MachineInfo {
  readonly cores: number;
  readonly cpuModel: string;
  readonly memoryGiB: number;
  readonly node: string;
  readonly platform: string;
  readonly kernel: string;
  /** 1, 5 and 15 minute load averages when read: other work on the machine skews every number. */
  readonly loadAverage: number[];
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cores: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGiB: round(os.totalmem() / 1024 ** 3, 1),
    node: process.version,
    platform: `${os.platform()} ${os.arch()}`,
    kernel: os.release(),
    loadAverage: os.loadavg().map((x) => round(x, 2)),
  };
}

/**
 * Leader elections seen in the controllers' logs since `sinceMs`: each "is the active
 * controller" line is one controller taking over (the launcher writes JSON lines with a
 * `time` field in ms).
 */
export function electionsInLogs(cluster: ControllerCluster, sinceMs: number): { controllerId: number; term: number; timeMs: number }[] {
  const out: { controllerId: number; term: number; timeMs: number }[] = [];
  for (const id of cluster.nodes.keys()) {
    for (const line of cluster.logOf(id).split('\n')) {
      if (!line.includes('is the active controller')) continue;
      try {
        const rec = JSON.parse(line) as { time?: number; term?: number };
        if ((rec.time ?? 0) >= sinceMs) out.push({ controllerId: id, term: rec.term ?? -1, timeMs: rec.time ?? 0 });
      } catch {
        // a torn last line of a killed process
      }
    }
  }
  return out.sort((a, b) => a.timeMs - b.timeMs);
}

/** Log lines at warn level or above since `sinceMs`, grouped by message (at most `max` kinds). */
export function warningsInLogs(cluster: ControllerCluster, sinceMs: number, max = 20): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of cluster.nodes.keys()) {
    for (const line of cluster.logOf(id).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const rec = JSON.parse(line) as { time?: number; level?: number; msg?: string };
        if ((rec.level ?? 0) < 40 || (rec.time ?? 0) < sinceMs) continue;
        const key = `controller ${id}: ${String(rec.msg ?? '').slice(0, 120)}`;
        if (counts[key] === undefined && Object.keys(counts).length >= max) continue;
        counts[key] = (counts[key] ?? 0) + 1;
      } catch {
        // a torn last line of a killed process
      }
    }
  }
  return counts;
}

/**
 * Kills every process in `pids()` with SIGKILL when this process exits or is interrupted, so
 * an aborted benchmark leaves no controller or etcd member behind. Returns the remover.
 */
export function killOnExit(pids: () => (number | undefined)[]): () => void {
  const killAll = (): void => {
    for (const pid of pids()) {
      if (pid === undefined) continue;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  };
  const onSignal = (sig: NodeJS.Signals): void => {
    killAll();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('exit', killAll);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

/** Pids of a ControllerCluster's running processes. */
export function controllerPids(cluster: ControllerCluster): (number | undefined)[] {
  return [...cluster.nodes.values()].map((n) => (n.proc && n.proc.exitCode === null && n.proc.signalCode === null ? n.proc.pid : undefined));
}

/** `--name value` from argv, else `dflt`. */
export function argNumber(argv: readonly string[], name: string, dflt: number): number {
  const i = argv.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = Number(argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number, got ${argv[i + 1]}`);
  return v;
}

export function argFlag(argv: readonly string[], name: string): boolean {
  return argv.includes(`--${name}`);
}

export interface SlowPersists {
  /** "slow fsync" warnings (a Raft persist of >= 500 ms) since the start of the phase. */
  readonly count: number;
  readonly maxMs: number;
  readonly medianMs: number;
  /** How many of them carried a snapshot. */
  readonly withSnapshot: number;
  /** Entries in the persist, median. */
  readonly medianEntries: number;
}

/** The controllers' "slow fsync" warnings since `sinceMs` (the driver logs tookMs, entries, snapshot). */
export function slowPersistsInLogs(cluster: ControllerCluster, sinceMs: number): SlowPersists {
  const took: number[] = [];
  const entries: number[] = [];
  let withSnapshot = 0;
  for (const id of cluster.nodes.keys()) {
    for (const line of cluster.logOf(id).split('\n')) {
      if (!line.includes('slow fsync')) continue;
      try {
        const rec = JSON.parse(line) as { time?: number; tookMs?: number; entries?: number; snapshot?: boolean };
        if ((rec.time ?? 0) < sinceMs) continue;
        took.push(rec.tookMs ?? 0);
        entries.push(rec.entries ?? 0);
        if (rec.snapshot) withSnapshot++;
      } catch {
        // torn line
      }
    }
  }
  return { count: took.length, maxMs: took.length ? Math.max(...took) : 0, medianMs: median(took) || 0, withSnapshot, medianEntries: median(entries) || 0 };
}

export interface DiskProbe {
  /** fdatasync of a 256-byte append in the temp dir the controllers and etcd use. */
  readonly fsyncP50Ms: number;
  readonly fsyncP99Ms: number;
  readonly fsyncMaxMs: number;
  readonly samples: number;
}

/**
 * How fast this disk syncs right now (bounded: `samples` syncs or 3 s). Controllers and etcd
 * both fsync on every write batch, so a slow disk (or another job writing to it) shows here.
 */
export function probeDisk(samples = 200): DiskProbe {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-bench-disk-')), 'probe');
  const fd = fs.openSync(file, 'w');
  const buf = Buffer.alloc(256, 1);
  const took: number[] = [];
  const deadline = Date.now() + 3_000;
  try {
    for (let i = 0; i < samples && Date.now() < deadline; i++) {
      const t0 = process.hrtime.bigint();
      fs.writeSync(fd, buf);
      fs.fdatasyncSync(fd);
      took.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(path.dirname(file), { recursive: true, force: true });
  }
  took.sort((a, b) => a - b);
  const at = (q: number) => round(took[Math.min(took.length - 1, Math.floor(q * took.length))] ?? NaN, 2);
  return { fsyncP50Ms: at(0.5), fsyncP99Ms: at(0.99), fsyncMaxMs: round(took[took.length - 1] ?? NaN, 2), samples: took.length };
}
