import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { FailoverResult, benchFailover } from './controller-failover';
import { DiskProbe, argFlag, argNumber, machineInfo, probeDisk, round } from './bench-support';
import { ThroughputResult, benchMetadataThroughput, formatThroughput } from './metadata-throughput';
import { ScaleResult, benchMetadataScale, formatScale } from './metadata-scale';
import { DataPlaneResult, benchDataPlane, formatDataPlane } from './data-plane';
import { NatsResult, benchNats } from './nats-jetstream';
import { CeilingResult, benchGrpcCeiling } from './grpc-ceiling';

// Every benchmark in turn (`make bench`), in two parts:
//   controller: controller failover, metadata write throughput (next to etcd), metadata at scale;
//   data-plane: Flotilla produce/consume/failover (data-plane.ts), NATS JetStream R3 with the
//               same records and records in flight (nats-jetstream.ts), the bare grpc-js
//               stream ceiling (grpc-ceiling.ts), and the comparisons issue 3 §8 asks for.
// Prints a summary and writes bench/results/latest.json, which is meant to be committed so a
// change in the numbers shows up in review. `--only <part>` runs one part and keeps the other
// part's results already in the output file (each part carries its own startedAt).
//
// One benchmark failing does not stop the others: its error goes into the JSON and the exit
// code is 1 at the end.
//
// Usage: node dist/bench/run-all.js [--only controller|data-plane] [--out bench/results/latest.json]
//          controller: [--failover-runs 10] [--topics 10000] [--partitions 10] [--no-etcd] [--keep-data]
//          data-plane: [--dp-records 300000] [--dp-phase-time-cap-s 15] [--dp-failover-runs 10]
//                      [--nats-failover-runs 10] [--no-nats]

const RESULTS = path.resolve(__dirname, '..', '..', 'bench', 'results', 'latest.json');

/** loadBefore/loadAfter: 1-minute load average around the benchmark (2 cores: above ~2, something else competed). */
type Outcome<T> = ({ ok: true; result: T } | { ok: false; error: string }) & {
  startedAt: string;
  durationMs: number;
  loadBefore: number;
  loadAfter: number;
  diskBefore: DiskProbe;
};

const PARTS = ['controller', 'data-plane'] as const;
type Part = (typeof PARTS)[number];

/** Records and records in flight shared by Flotilla and JetStream (issue 3 §8: the same in both). */
const DATA_PLANE_IN_FLIGHT = 512;
const DATA_PLANE_RECORD_BYTES = 1024;
/** Issue 3 §8 goals. */
const GOALS = { allVsJetStream: 2, oneVsCeiling: 0.5, failoverMs: 2_500 };

export interface DataPlaneComparison {
  /** Flotilla acks=all records/s ÷ JetStream R3 publishes/s (goal ≥ 2). */
  readonly allVsJetStreamThroughput?: number;
  /** Flotilla acks=all p99 − JetStream p99, ms (goal ≤ 0). */
  readonly allMinusJetStreamP99Ms?: number;
  /** Flotilla acks=1 MB/s ÷ the grpc-js stream ceiling's MB/s (goal ≥ 0.5). */
  readonly oneVsCeiling?: number;
  readonly failoverMedianMs?: number;
  readonly jetStreamFailoverMedianMs?: number;
  readonly goals: typeof GOALS;
}

async function attempt<T>(name: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  console.log(`\n=== ${name} ===`);
  const t0 = Date.now();
  const startedAt = new Date().toISOString();
  const loadBefore = round(os.loadavg()[0]!, 2);
  const diskBefore = probeDisk();
  console.log(`load average ${loadBefore}; fdatasync p50 ${diskBefore.fsyncP50Ms} ms, p99 ${diskBefore.fsyncP99Ms} ms`);
  const around = () => ({ startedAt, durationMs: Date.now() - t0, loadBefore, loadAfter: round(os.loadavg()[0]!, 2), diskBefore });
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
  const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined;
  if (only !== undefined && !(PARTS as readonly string[]).includes(only)) throw new Error(`--only takes ${PARTS.join(' or ')}, got ${only}`);
  const parts: Part[] = only ? [only as Part] : [...PARTS];
  const startedAt = new Date().toISOString();
  const machine = machineInfo();
  console.log(`machine: ${machine.cores} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, node ${machine.node}, ${machine.platform} ${machine.kernel}`);
  console.log(`load average ${machine.loadAverage.join(' ')}; parts: ${parts.join(', ')}`);

  // Results of a part not run now are kept from the output file.
  let results: Record<string, unknown> = {};
  if (only && fs.existsSync(out)) {
    try {
      results = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, unknown>;
    } catch {
      results = {};
    }
  }
  const lines = [`\n=== summary (${startedAt}) ===`, `machine: ${machine.cores} cores, ${machine.cpuModel}, ${machine.memoryGiB} GiB, node ${machine.node}`];
  const conditions = (name: string, o: Outcome<unknown>) =>
    `  ${name}: ${(o.durationMs / 1000).toFixed(0)} s, load average ${o.loadBefore} -> ${o.loadAfter}, fdatasync p50/p99 before ${o.diskBefore.fsyncP50Ms}/${o.diskBefore.fsyncP99Ms} ms`;
  const conditionLines: string[] = [];
  let allOk = true;

  if (parts.includes('controller')) {
    const failover = await attempt<FailoverResult>('controller failover', () => benchFailover(argNumber(argv, 'failover-runs', 10)));
    const throughput = await attempt<ThroughputResult>('metadata throughput', () =>
      benchMetadataThroughput({ etcd: !argFlag(argv, 'no-etcd'), installEtcd: true }),
    );
    const scale = await attempt<ScaleResult>('metadata scale', () =>
      benchMetadataScale({ topics: argNumber(argv, 'topics', 10_000), partitions: argNumber(argv, 'partitions', 10), keepData: argFlag(argv, 'keep-data') }),
    );
    if (failover.ok) {
      const f = failover.result;
      lines.push(`controller failover (kill -9 leader -> first CreateTopic), ${f.runs} runs: median ${f.medianMs.toFixed(0)} ms, max ${f.maxMs.toFixed(0)} ms`);
    } else lines.push(`controller failover: FAILED (see the JSON)`);
    if (throughput.ok) lines.push(...formatThroughput(throughput.result));
    else lines.push('metadata throughput: FAILED (see the JSON)');
    if (scale.ok) lines.push(...formatScale(scale.result));
    else lines.push('metadata scale: FAILED (see the JSON)');
    conditionLines.push(conditions('failover', failover), conditions('throughput', throughput), conditions('scale', scale));
    Object.assign(results, { failover, throughput, scale });
    allOk &&= failover.ok && throughput.ok && scale.ok;
  }

  if (parts.includes('data-plane')) {
    const records = argNumber(argv, 'dp-records', 300_000);
    const phaseTimeCapMs = argNumber(argv, 'dp-phase-time-cap-s', 15) * 1000;
    const dataPlane = await attempt<DataPlaneResult>('data plane (flotilla)', () =>
      benchDataPlane({
        records,
        inFlight: DATA_PLANE_IN_FLIGHT,
        recordBytes: DATA_PLANE_RECORD_BYTES,
        phaseTimeCapMs,
        consumeTimeCapMs: 20_000,
        failoverRuns: argNumber(argv, 'dp-failover-runs', 10),
        failoverTimeCapMs: 200_000,
      }),
    );
    const nats = argFlag(argv, 'no-nats')
      ? ({ ok: true, result: { skipped: '--no-nats' }, startedAt: new Date().toISOString(), durationMs: 0, loadBefore: NaN, loadAfter: NaN, diskBefore: probeDisk(1) } as Outcome<NatsResult | { skipped: string }>)
      : await attempt<NatsResult | { skipped: string }>('NATS JetStream R3 (reference)', () =>
          benchNats({
            records,
            inFlight: DATA_PLANE_IN_FLIGHT,
            recordBytes: DATA_PLANE_RECORD_BYTES,
            timeCapMs: phaseTimeCapMs,
            failoverRuns: argNumber(argv, 'nats-failover-runs', 10),
            installNats: true,
          }),
        );
    const ceiling = await attempt<CeilingResult>('grpc-js stream ceiling', () =>
      benchGrpcCeiling({ records: 200_000, recordBytes: DATA_PLANE_RECORD_BYTES, batchRecords: 64, inFlight: DATA_PLANE_IN_FLIGHT, timeCapMs: 15_000 }),
    );
    const comparison = compareDataPlane(dataPlane, nats, ceiling);
    if (dataPlane.ok) lines.push(...formatDataPlane(dataPlane.result));
    else lines.push('data plane: FAILED (see the JSON)');
    if (nats.ok && 'skipped' in nats.result) lines.push(`nats jetstream: skipped (${nats.result.skipped})`);
    else if (nats.ok) {
      const n = nats.result as NatsResult;
      lines.push(
        `nats jetstream ${n.version} R3 file, ${n.produce.inFlight} in flight: ${n.produce.opsPerSec.toFixed(0)} records/s, ${n.produce.mbPerSec} MB/s, ` +
          `p50 ${n.produce.p50Ms.toFixed(1)} ms, p99 ${n.produce.p99Ms.toFixed(1)} ms, p999 ${n.produce.p999Ms.toFixed(1)} ms, CPU µs/record servers ${n.produce.cpuUsPerRecord.servers} + client ${n.produce.cpuUsPerRecord.client}; failover median ${n.failover.medianMs} ms, max ${n.failover.maxMs} ms (${n.failover.runsMs.length} runs)`,
      );
    } else lines.push('nats jetstream: FAILED (see the JSON)');
    if (ceiling.ok) {
      const c = ceiling.result;
      lines.push(`grpc-js stream ceiling: ${c.recordsPerSec} records/s, ${c.mbPerSec} MB/s (${c.batchRecords} records of ${c.recordBytes} B per message, ${c.inFlight} in flight), CPU µs/record server ${c.cpuUsPerRecord.server} + client ${c.cpuUsPerRecord.client}`);
    } else lines.push('grpc-js ceiling: FAILED (see the JSON)');
    lines.push(...formatComparison(comparison));
    conditionLines.push(conditions('data plane', dataPlane), conditions('nats', nats), conditions('ceiling', ceiling));
    Object.assign(results, { dataPlane, nats, ceiling, dataPlaneComparison: comparison });
    allOk &&= dataPlane.ok && nats.ok && ceiling.ok;
  }

  lines.push('conditions (2 cores: a load average well above 2 means other work competed):', ...conditionLines);
  for (const l of lines) console.log(l);

  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ ...results, startedAt, finishedAt: new Date().toISOString(), partsRun: parts, machine }, null, 2) + '\n');
  console.log(`\nwrote ${path.relative(process.cwd(), out) || out}`);
  return allOk ? 0 : 1;
}

function compareDataPlane(
  dp: Outcome<DataPlaneResult>,
  nats: Outcome<NatsResult | { skipped: string }>,
  ceiling: Outcome<CeilingResult>,
): DataPlaneComparison {
  const all = dp.ok ? dp.result.produce.all : undefined;
  const one = dp.ok ? dp.result.produce.one : undefined;
  const n = nats.ok && !('skipped' in nats.result) ? (nats.result as NatsResult) : undefined;
  const c = ceiling.ok ? ceiling.result : undefined;
  return {
    ...(all && n ? { allVsJetStreamThroughput: round(all.opsPerSec / n.produce.opsPerSec, 2), allMinusJetStreamP99Ms: round(all.p99Ms - n.produce.p99Ms, 1) } : {}),
    ...(one && c ? { oneVsCeiling: round(one.mbPerSec / c.mbPerSec, 3) } : {}),
    ...(dp.ok ? { failoverMedianMs: dp.result.failover.medianMs } : {}),
    ...(n ? { jetStreamFailoverMedianMs: n.failover.medianMs } : {}),
    goals: GOALS,
  };
}

function formatComparison(c: DataPlaneComparison): string[] {
  const mark = (ok: boolean): string => (ok ? 'goal met' : 'goal NOT met');
  const out = ['issue 3 §8 goals:'];
  if (c.allVsJetStreamThroughput !== undefined) {
    out.push(`  acks=all throughput vs JetStream R3: ${c.allVsJetStreamThroughput}x (goal >= ${GOALS.allVsJetStream}x: ${mark(c.allVsJetStreamThroughput >= GOALS.allVsJetStream)})`);
    out.push(`  acks=all p99 minus JetStream p99: ${c.allMinusJetStreamP99Ms} ms (goal <= 0: ${mark(c.allMinusJetStreamP99Ms! <= 0)})`);
  } else out.push('  acks=all vs JetStream: not compared (one side missing)');
  if (c.oneVsCeiling !== undefined) out.push(`  acks=1 MB/s vs the grpc-js ceiling: ${(c.oneVsCeiling * 100).toFixed(1)} % (goal >= ${GOALS.oneVsCeiling * 100} %: ${mark(c.oneVsCeiling >= GOALS.oneVsCeiling)})`);
  if (c.failoverMedianMs !== undefined) {
    out.push(
      `  failover median ${c.failoverMedianMs} ms (goal < ${GOALS.failoverMs} ms: ${mark(c.failoverMedianMs < GOALS.failoverMs)})` +
        (c.jetStreamFailoverMedianMs !== undefined ? `; JetStream ${c.jetStreamFailoverMedianMs} ms` : ''),
    );
  }
  return out;
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
