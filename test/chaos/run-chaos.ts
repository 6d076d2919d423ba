#!/usr/bin/env node
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkControllerLogs, checkLeaders, checkUnavailability } from './checkers';
import { ChaosCluster, sleep } from './cluster';
import { docker } from './docker';
import * as faults from './faults';
import type { ChaosNode } from './cluster';
import { HistoryRecorder, type FaultRecord } from './history';
import { QuorumSampler, collectControllerLogs, leaderObservationsFromLogs } from './raft-observer';
import { ALL_FAULT_TYPES, FaultScheduler, KILL_BROKERS_MIN_BROKERS, freshSeed, type FaultSpec, type FaultType } from './scheduler';
import { MetadataWorkload, ProduceConsumeWorkload, type Workload, type WorkloadContext, type WorkloadResult } from './workload';
import { Prng } from '../sim/prng';

// The chaos run (`make chaos`): a containerized cluster, a workload recording its history,
// the seeded fault schedule, then the checkers and a report.
//
//   node dist/test/chaos/run-chaos.js [--seed N] [--duration-s S] [--brokers 3|5]
//        [--image flotilla:latest] [--report-dir data/chaos] [--keep] [--only kill,pause,...]
//        [--workloads metadata,records]
//
// Without --duration-s the run is CI-sized: every fault type once. With it, faults keep
// coming (seeded) until S seconds of faults have passed. Exit 0 when every check passes.

interface Args {
  seed: number;
  durationS?: number;
  brokers: number;
  image: string;
  reportDir: string;
  keep: boolean;
  only?: FaultType[];
  workloads: WorkloadName[];
}

const WORKLOADS = ['metadata', 'records'] as const;
type WorkloadName = (typeof WORKLOADS)[number];

/** Bound on faults in one run, whatever the duration. */
const FAULTS_MAX = 500;
const WHOLE_TIMEOUT_MS = 90_000;
/** Issue 4: every acknowledged write readable within 30 s after the last fault heals. */
const READ_BACK_DEADLINE_MS = 30_000;
const QUIET_BETWEEN_FAULTS_MS = 2_000;
const REPORTS_KEPT = 20;

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { seed: freshSeed(), brokers: 3, image: process.env.FLOTILLA_IMAGE ?? 'flotilla:latest', reportDir: 'data/chaos', keep: false, workloads: [...WORKLOADS] };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    const num = (name: string): number => {
      const n = Number(v);
      if (v === undefined || !Number.isSafeInteger(n) || n < 0) throw new Error(`${name} needs a non-negative integer`);
      i++;
      return n;
    };
    switch (argv[i]) {
      case '--seed': a.seed = num('--seed'); break;
      case '--duration-s': a.durationS = num('--duration-s'); break;
      case '--brokers': a.brokers = num('--brokers'); break;
      case '--image': a.image = v ?? a.image; i++; break;
      case '--report-dir': a.reportDir = v ?? a.reportDir; i++; break;
      case '--keep': a.keep = true; break;
      case '--only': {
        const types = (v ?? '').split(',').filter(Boolean) as FaultType[];
        const bad = types.filter((t) => !ALL_FAULT_TYPES.includes(t));
        if (types.length === 0 || bad.length > 0) throw new Error(`--only takes fault types from ${ALL_FAULT_TYPES.join(',')}`);
        a.only = types;
        i++;
        break;
      }
      case '--workloads': {
        const names = (v ?? '').split(',').filter(Boolean) as WorkloadName[];
        const bad = names.filter((n) => !WORKLOADS.includes(n));
        if (names.length === 0 || bad.length > 0) throw new Error(`--workloads takes names from ${WORKLOADS.join(',')}`);
        a.workloads = [...new Set(names)];
        i++;
        break;
      }
      default: throw new Error(`unknown argument ${argv[i]} (see the header of test/chaos/run-chaos.ts)`);
    }
  }
  if (a.brokers < 3 || a.brokers > 9) throw new Error('--brokers must be 3..9');
  if (a.only?.includes('kill-brokers') && a.brokers < KILL_BROKERS_MIN_BROKERS) throw new Error(`kill-brokers needs --brokers ${KILL_BROKERS_MIN_BROKERS} or more`);
  return a;
}

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString().slice(11, 23)} ${line}\n`);
}

async function applyFault(c: ChaosCluster, spec: FaultSpec, nodes: ChaosNode[]): Promise<{ heal: faults.Heal; detail: string }> {
  const heals: faults.Heal[] = [];
  let detail = '';
  if (spec.type === 'kill-brokers') {
    heals.push(await faults.killAll(c, nodes));
    detail = 'kill -9 of both in one command';
  }
  for (const n of spec.type === 'kill-brokers' ? [] : nodes) {
    switch (spec.type) {
      case 'kill':
      case 'kill-majority':
        heals.push(await faults.kill(c, n));
        break;
      case 'stop':
        heals.push(await faults.stopGracefully(c, n));
        break;
      case 'pause':
      case 'pause-long':
        heals.push(await faults.pause(c, n));
        break;
      case 'isolate':
        heals.push(await faults.isolate(c, n));
        detail = 'from every peer, both directions';
        break;
      case 'isolate-outbound': {
        // A broker that cannot send to the controllers (heartbeats lost, metadata still
        // arriving on streams it opened? no: replies are outbound too); a controller that
        // cannot send to the other controllers (hears their votes, never answers).
        const peers = n.role === 'broker' ? c.controllers() : c.controllers().filter((x) => x !== n);
        heals.push(await faults.isolate(c, n, { peers, outboundOnly: true }));
        detail = `outbound to ${peers.map((p) => p.name).join(',')} dropped`;
        break;
      }
      case 'loss':
        heals.push(await faults.loss(c, n, spec.param ?? 30));
        detail = `${spec.param}% of packets to and from peers dropped`;
        break;
      case 'throttle':
        heals.push(await faults.throttle(c, n, spec.param ?? 128));
        detail = `egress limited to ${spec.param} kbit/s`;
        break;
      case 'disk-full':
        heals.push(await faults.fillDisk(c, n));
        detail = 'data tmpfs filled to ENOSPC';
        break;
      case 'restart':
        heals.push(await faults.restart(c, n));
        break;
      case 'kill-brokers': // all at once, above
      case 'roll-restart':
        break;
    }
  }
  if (spec.type === 'roll-restart') heals.push(await faults.rollRestart(c, WHOLE_TIMEOUT_MS, log));
  return {
    heal: async () => {
      for (const h of heals) await h();
    },
    detail,
  };
}

/**
 * The report as JSON: readable (indented) except the history, one operation per line — a
 * run records some 10^5 operations, and indenting each field would triple the file.
 */
function writeReport(file: string, report: { history: readonly unknown[] } & Record<string, unknown>): void {
  const { history, ...rest } = report;
  const head = JSON.stringify(rest, null, 1).replace(/\n}$/, '');
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, `${head},\n "history": [\n`);
    history.forEach((op, i) => fs.writeSync(fd, `  ${JSON.stringify(op)}${i < history.length - 1 ? ',' : ''}\n`));
    fs.writeSync(fd, ' ]\n}\n');
  } finally {
    fs.closeSync(fd);
  }
}

/** Reports of earlier runs beyond the newest REPORTS_KEPT are deleted (each holds logs and a history). */
function pruneOldReports(dir: string): void {
  const runs = fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => ({ p: path.join(dir, d.name), mtimeMs: fs.statSync(path.join(dir, d.name)).mtimeMs }))
    .sort((a, b) => b.mtimeMs - a.mtimeMs);
  for (const r of runs.slice(REPORTS_KEPT)) fs.rmSync(r.p, { recursive: true, force: true });
}

async function main(): Promise<number> {
  const args = parseArgs(process.argv.slice(2));
  const runId = `${args.seed}-${Date.now().toString(36)}`;
  const reportDir = path.resolve(args.reportDir, runId);
  fs.mkdirSync(reportDir, { recursive: true });
  pruneOldReports(path.dirname(reportDir));
  log(`chaos: seed ${args.seed} (replay: make chaos SEED=${args.seed}${args.durationS ? ` DURATION=${args.durationS}` : ''}${args.brokers !== 3 ? ` BROKERS=${args.brokers}` : ''}${args.only ? `, with --only ${args.only.join(',')}` : ''}), report in ${reportDir}`);
  try {
    await docker(['image', 'inspect', args.image]);
  } catch {
    throw new Error(`image ${args.image} not found: run make image`);
  }
  await ChaosCluster.cleanupLeftovers(log);
  const runStart = Date.now();
  const cluster = await ChaosCluster.start({ image: args.image, runId, brokers: args.brokers, log });
  let passed = false;
  let logsSaved = false;
  const saveLogs = async (): Promise<void> => {
    for (const n of cluster.nodes) fs.writeFileSync(path.join(reportDir, `${n.name}.log`), await cluster.logs(n));
    logsSaved = true;
  };
  try {
    await cluster.waitWhole(WHOLE_TIMEOUT_MS);
    const setupAdmin = await cluster.admin(undefined, { totalTimeoutMs: 30_000, requestTimeoutMs: 5_000 });
    await setupAdmin.createTopic({ name: faults.PROBE_TOPIC, partitions: 1, replicationFactor: 3 });
    log(`cluster whole after ${Date.now() - runStart} ms; probe topic ${faults.PROBE_TOPIC} created`);

    const history = new HistoryRecorder();
    const scheduler = new FaultScheduler(args.seed, args.only, args.brokers);
    const ctx: WorkloadContext = { cluster, history, prng: new Prng(args.seed ^ 0x5eed), log };
    const workloads: Workload[] = args.workloads.map((w) =>
      w === 'metadata' ? new MetadataWorkload({ prefix: `chaos-${args.seed}` }) : new ProduceConsumeWorkload({ prefix: `chaos-${args.seed}`, readBackTimeoutMs: READ_BACK_DEADLINE_MS - 2_000 }),
    );
    for (const w of workloads) await w.prepare?.(ctx);
    const sampler = new QuorumSampler(cluster);
    sampler.start(history.startedAtMs);
    for (const w of workloads) w.start(ctx);
    await sleep(3_000);

    const durationMs = (args.durationS ?? 0) * 1000;
    const faultPhaseStart = Date.now();
    for (let i = 0; i < FAULTS_MAX && (scheduler.inFirstRound() || Date.now() - faultPhaseStart < durationMs); i++) {
      const spec = scheduler.next();
      const nodes = await faults.resolveTarget(cluster, spec.target, scheduler.targetPrng());
      const startMs = history.now();
      log(`fault ${spec.index}: ${spec.type} on ${spec.target} (${nodes.map((n) => n.name).join(', ')})${spec.holdMs ? ` for ${spec.holdMs} ms` : ''}`);
      const { heal, detail } = await applyFault(cluster, spec, nodes);
      await sleep(spec.holdMs);
      await heal();
      const healMs = history.now();
      let recoveredMs: number | undefined;
      const waitedFor = new Set<string>();
      try {
        await cluster.waitWhole(WHOLE_TIMEOUT_MS, waitedFor);
        recoveredMs = history.now();
      } catch (e) {
        log(`  NOT RECOVERED: ${(e as Error).message}`);
      }
      const record: FaultRecord = {
        index: spec.index,
        type: spec.type,
        targetKind: spec.target,
        nodes: nodes.map((n) => n.name),
        startMs,
        healMs,
        ...(recoveredMs !== undefined ? { recoveredMs } : {}),
        ...(detail ? { detail } : {}),
        ...(waitedFor.size > 0 ? { waitedFor: [...waitedFor] } : {}),
      };
      history.recordFault(record);
      log(
        `  healed at +${healMs - startMs} ms, whole again ${recoveredMs !== undefined ? `${recoveredMs - healMs} ms after the heal` : 'NEVER'}` +
          (waitedFor.size > 0 ? ` (waited for: ${[...waitedFor].join('; ')})` : ''),
      );
      await sleep(QUIET_BETWEEN_FAULTS_MS);
    }

    await Promise.all(workloads.map((w) => w.stop()));
    const lastHealMs = Math.max(0, ...history.faultRecords().map((f) => f.healMs));
    await cluster.waitWhole(WHOLE_TIMEOUT_MS).catch((e: Error) => log(`cluster not whole at the end: ${e.message}`));
    await sampler.stop();
    const readStart = history.now();
    // In parallel: each read-back is judged against the same bound after the last heal.
    const results: WorkloadResult[] = await Promise.all(workloads.map((w) => w.finish(ctx)));
    const readBackMs = history.now() - lastHealMs;
    const readBackOk = history.now() - readStart <= READ_BACK_DEADLINE_MS;

    const observations = [...(await leaderObservationsFromLogs(cluster)), ...sampler.observations];
    const leaders = checkLeaders(observations);
    const controllerLogs = await collectControllerLogs(cluster, 30_000);
    const identical = checkControllerLogs(controllerLogs);
    // Metadata writes only: produce and consume are measured by the records workload.
    const availability = checkUnavailability(history.operations(), history.faultRecords(), new Set(['create-topic', 'delete-topic']));
    const recovered = history.faultRecords().every((f) => f.recoveredMs !== undefined);
    const workloadsValid = results.every((r) => r.valid);
    passed = workloadsValid && leaders.valid && identical.valid && recovered && readBackOk;

    await saveLogs();
    const report = {
      seed: args.seed,
      runId,
      passed,
      wallMs: Date.now() - runStart,
      brokers: args.brokers,
      faults: history.faultRecords(),
      checks: {
        workloads: results,
        leaders,
        controllerLogs: identical,
        availability,
        allFaultsRecovered: recovered,
        readBack: { msAfterLastHeal: readBackMs, withinDeadline: readBackOk },
      },
      history: history.operations(),
    };
    writeReport(path.join(reportDir, 'report.json'), report);

    log('recovery per fault type (ms from heal to whole; longest stretch without a successful metadata write / acknowledged send / record read):');
    const byKind = [
      { kind: 'metadata', perType: args.workloads.includes('metadata') ? availability.perType : [] },
      ...results.flatMap((r) => Object.entries(r.availability ?? {}).map(([kind, perType]) => ({ kind, perType }))),
    ];
    for (const t of availability.perType) {
      const gaps = byKind
        .map(({ kind, perType }) => {
          const x = perType.find((p) => p.type === t.type);
          return x ? `${kind}-gap=${x.longestGapMsMax}${x.failedOps > 0 ? `(${x.failedOps} failed)` : ''}` : '';
        })
        .filter(Boolean)
        .join(' ');
      log(`  ${t.type.padEnd(17)} faults=${t.faults} recovery<=${t.recoveryMsMax ?? 'never'} ${gaps}`);
    }
    const summary =
      `chaos: ${passed ? 'PASS' : 'FAIL'} seed=${args.seed} faults=${history.faultRecords().length} ` +
      `(${new Set(history.faultRecords().map((f) => f.type)).size} types) ops=${history.operations().length} ` +
      `${results.map((r) => `${r.name}[${r.summary}]`).join(' ')} leaders[${leaders.valid ? 'one per term' : `VIOLATED in ${leaders.violations.length} terms`}, ${leaders.terms} terms] ` +
      `controllers[${identical.valid ? 'identical' : 'DIFFER'} at offset ${controllerLogs[0]?.imageOffset}] ` +
      `recovered=${recovered ? 'all' : 'NOT ALL'} read-back=${(readBackMs / 1000).toFixed(1)}s-after-last-heal${readBackOk ? '' : '(TOO SLOW)'} wall=${Math.round((Date.now() - runStart) / 1000)}s report=${path.join(reportDir, 'report.json')}`;
    log(summary);
    for (const r of results) if (!r.valid) log(`${r.name} anomalies: ${JSON.stringify(r.details).slice(0, 20_000)}`);
    if (!leaders.valid) log(`leader violations: ${JSON.stringify(leaders.violations)}`);
    if (!identical.valid) log(`controller logs: ${JSON.stringify({ divergent: identical.divergent, images: identical.imageMismatch, offsets: identical.offsets })}`);
    return passed ? 0 : 1;
  } finally {
    // A run that aborted (a fault that could not be applied or healed) keeps its nodes' logs too.
    if (!logsSaved) await saveLogs().catch((e: Error) => log(`cannot save the nodes' logs: ${e.message}`));
    if (args.keep && !passed) {
      log(`--keep: cluster left running (containers labelled flotilla.chaos=${runId}); make chaos removes it next time`);
      await cluster.closeClients();
    } else {
      await cluster.stop();
    }
  }
}

if (require.main === module) {
  main().then(
    (code) => {
      // Do not wait on a straggling gRPC handle: everything is written and torn down.
      process.exit(code);
    },
    (e: Error) => {
      log(`chaos: FAIL ${e.stack ?? e.message}`);
      process.exit(1);
    },
  );
}
