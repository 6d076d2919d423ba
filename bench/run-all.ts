import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FailoverResult, benchFailover } from './controller-failover';
import { DiskProbe, argFlag, argNumber, machineInfo, probeDisk, round } from './bench-support';
import { ThroughputResult, benchMetadataThroughput, formatThroughput } from './metadata-throughput';
import { ScaleResult, benchMetadataScale, formatScale } from './metadata-scale';

// Every benchmark in turn (`make bench`): controller failover, metadata write throughput (next
// to etcd), metadata at scale. Prints a summary and writes bench/results/latest.json, which is
// meant to be committed so a change in the numbers shows up in review.
//
// One benchmark failing does not stop the others: its error goes into the JSON and the exit
// code is 1 at the end.
//
// Usage: node dist/bench/run-all.js [--failover-runs 10] [--topics 10000] [--partitions 10]
//          [--no-etcd] [--keep-data] [--out bench/results/latest.json]

const RESULTS = path.resolve(__dirname, '..', '..', 'bench', 'results', 'latest.json');

/** loadBefore/loadAfter: 1-minute load average around the benchmark (2 cores: above ~2, something else competed). */
type Outcome<T> = ({ ok: true; result: T } | { ok: false; error: string }) & { durationMs: number; loadBefore: number; loadAfter: number; diskBefore: DiskProbe };

async function attempt<T>(name: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  console.log(`\n=== ${name} ===`);
  const t0 = Date.now();
  const loadBefore = round(os.loadavg()[0]!, 2);
  const diskBefore = probeDisk();
  console.log(`load average ${loadBefore}; fdatasync p50 ${diskBefore.fsyncP50Ms} ms, p99 ${diskBefore.fsyncP99Ms} ms`);
  const around = () => ({ durationMs: Date.now() - t0, loadBefore, loadAfter: round(os.loadavg()[0]!, 2), diskBefore });
  try {
    const result = await fn();
    return { ok: true, result, ...around() };
  } catch (e) {
    console.error(`${name} failed:`, e);
    return { ok: false, error: String((e as Error)?.stack ?? e), ...around() };
  }
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  const out = argv.includes('--out') ? path.resolve(argv[argv.indexOf('--out') + 1]!) : RESULTS;
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  console.log(`machine: ${machine.cores} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, node ${machine.node}, ${machine.platform} ${machine.kernel}`);

  const failover = await attempt<FailoverResult>('controller failover', () => benchFailover(argNumber(argv, 'failover-runs', 10)));
  const throughput = await attempt<ThroughputResult>('metadata throughput', () =>
    benchMetadataThroughput({ etcd: !argFlag(argv, 'no-etcd'), installEtcd: true }),
  );
  const scale = await attempt<ScaleResult>('metadata scale', () =>
    benchMetadataScale({ topics: argNumber(argv, 'topics', 10_000), partitions: argNumber(argv, 'partitions', 10), keepData: argFlag(argv, 'keep-data') }),
  );

  const lines = [`\n=== summary (${startedAt}) ===`, `machine: ${machine.cores} cores, ${machine.cpuModel}, ${machine.memoryGiB} GiB, node ${machine.node}`];
  if (failover.ok) {
    const f = failover.result;
    lines.push(`controller failover (kill -9 leader -> first CreateTopic), ${f.runs} runs: median ${f.medianMs.toFixed(0)} ms, max ${f.maxMs.toFixed(0)} ms`);
  } else lines.push(`controller failover: FAILED (see the JSON)`);
  if (throughput.ok) lines.push(...formatThroughput(throughput.result));
  else lines.push('metadata throughput: FAILED (see the JSON)');
  if (scale.ok) lines.push(...formatScale(scale.result));
  else lines.push('metadata scale: FAILED (see the JSON)');
  const conditions = (name: string, o: Outcome<unknown>) =>
    `  ${name}: ${(o.durationMs / 1000).toFixed(0)} s, load average ${o.loadBefore} -> ${o.loadAfter}, fdatasync p50/p99 before ${o.diskBefore.fsyncP50Ms}/${o.diskBefore.fsyncP99Ms} ms`;
  lines.push('conditions (2 cores: a load average well above 2 means other work competed):');
  lines.push(conditions('failover', failover), conditions('throughput', throughput), conditions('scale', scale));
  for (const l of lines) console.log(l);

  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ startedAt, finishedAt: new Date().toISOString(), machine, failover, throughput, scale }, null, 2) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), out) || out}`);
  return failover.ok && throughput.ok && scale.ok ? 0 : 1;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
