// The simulator's command line (`make sim SEEDS=N`):
//   node dist/test/sim/run-sim.js                    seeds 1..1000
//   node dist/test/sim/run-sim.js --seeds 5000 --start 20000
//   node dist/test/sim/run-sim.js --seed 42 --trace  replay one seed, printing every event
//   --ticks T  length of the fault phase (default DEFAULT_FAULT_TICKS)
//   --driver-bug B  run with a deliberately broken driver (the harness's own tests use it)
// Exits 1 on the first failure, after printing its seed, invariant, trace tail and replay command.

import { DEFAULT_FAULT_TICKS, DRIVER_BUGS, DriverBug, SimFailure, SimStats, runSeed } from './cluster';

interface Args {
  seeds: number;
  start: number;
  seed?: number;
  ticks: number;
  trace: boolean;
  driverBug?: DriverBug;
}

function usage(msg: string): never {
  process.stderr.write(`${msg}\nusage: run-sim.js [--seeds N] [--start K] [--seed S] [--ticks T] [--trace] [--driver-bug ${DRIVER_BUGS.join('|')}]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seeds: 1000, start: 1, ticks: DEFAULT_FAULT_TICKS, trace: false };
  const int = (i: number): number => {
    const v = Number(argv[i]);
    if (!Number.isSafeInteger(v) || v < 0) usage(`${argv[i - 1]} needs a non-negative integer, got ${argv[i]}`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    switch (argv[i]) {
      case '--seeds':
        a.seeds = int(++i);
        break;
      case '--start':
        a.start = int(++i);
        break;
      case '--seed':
        a.seed = int(++i);
        break;
      case '--ticks':
        a.ticks = int(++i);
        break;
      case '--trace':
        a.trace = true;
        break;
      case '--driver-bug': {
        const b = argv[++i] as DriverBug;
        if (!DRIVER_BUGS.includes(b)) usage(`--driver-bug must be one of ${DRIVER_BUGS.join(', ')}`);
        a.driverBug = b;
        break;
      }
      case '-h':
      case '--help':
        usage('');
        break;
      default:
        usage(`unknown argument ${argv[i]}`);
    }
  }
  return a;
}

function main(): void {
  const args = parseArgs(process.argv.slice(2));
  const first = args.seed ?? args.start;
  const count = args.seed !== undefined ? 1 : args.seeds;
  const onTrace = args.trace ? (l: string) => process.stdout.write(`${l}\n`) : undefined;
  const total: Omit<SimStats, 'refusals' | 'livenessTicks'> & { maxLivenessTicks: number } = {
    events: 0, ticks: 0, messagesSent: 0, busyHeartbeats: 0, messagesDelivered: 0, leaders: 0, committed: 0, proposals: 0, acked: 0,
    readsServed: 0, snapshotsInstalled: 0, compactions: 0, crashes: 0, crashesBeforeFsync: 0, partitions: 0, confChanges: 0, truncations: 0, transfers: 0,
    maxLivenessTicks: 0,
  };
  const refusals: Record<string, number> = {};
  const t0 = process.hrtime.bigint();
  const progressEvery = Math.max(1, Math.min(100, Math.ceil(count / 10)));
  for (let i = 0; i < count; i++) {
    const seed = first + i;
    let stats: SimStats;
    try {
      stats = runSeed(seed, { faultTicks: args.ticks, onTrace, driverBug: args.driverBug });
    } catch (e) {
      if (e instanceof SimFailure) {
        process.stdout.write(`\n${e.message}\n`);
        process.stdout.write(`sim: FAILED at seed ${seed} (${i} seeds passed before it)\n`);
        process.exit(1);
      }
      throw e;
    }
    for (const k of Object.keys(total) as (keyof typeof total)[]) {
      if (k !== 'maxLivenessTicks') total[k] += stats[k];
    }
    total.maxLivenessTicks = Math.max(total.maxLivenessTicks, stats.livenessTicks);
    for (const [k, v] of Object.entries(stats.refusals)) refusals[k] = (refusals[k] ?? 0) + v;
    if (count > 1 && ((i + 1) % progressEvery === 0 || i + 1 === count)) {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      process.stdout.write(`sim: ${i + 1}/${count} seeds ok (${s.toFixed(1)}s)\n`);
    }
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const refused = Object.entries(refusals).map(([k, v]) => `${k}=${v}`).join(' ') || 'none';
  process.stdout.write(
    `sim: ${count} seeds (${first}..${first + count - 1}) passed in ${secs.toFixed(1)}s: ` +
      `${total.events} events, ${total.ticks} ticks, ${total.leaders} leader terms, ${total.committed} entries committed, ` +
      `${total.acked}/${total.proposals} proposals acknowledged, ${total.readsServed} reads, ${total.snapshotsInstalled} snapshots installed, ` +
      `${total.compactions} compactions, ${total.crashes} crashes (${total.crashesBeforeFsync} of leaders between early appends and fsync), ${total.partitions} partitions, ${total.confChanges} membership changes, ` +
      `${total.truncations} log truncations, ${total.transfers} leader transfers, ${total.busyHeartbeats} busy-heartbeat rounds, ` +
      `refusals: ${refused}, slowest recovery ${total.maxLivenessTicks} ticks\n`,
  );
}

main();
