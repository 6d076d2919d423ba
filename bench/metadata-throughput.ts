import * as crypto from 'node:crypto';
import { Flotilla } from '../client';
import { encodeBatch } from '../shared/metadata';
import { ControllerCluster, eventually } from '../test/integration/controller-launcher';
import { StandInBrokers } from '../test/integration/stand-in-brokers';
import {
  LoadStats,
  argFlag,
  argNumber,
  controllerPids,
  cpuMs,
  electionsInLogs,
  formatLoad,
  killOnExit,
  machineInfo,
  SlowPersists,
  rssBytes,
  runLoad,
  slowPersistsInLogs,
  warningsInLogs,
} from './bench-support';
import { EtcdCluster, EtcdKv, ensureEtcd, waitForEtcdLeader } from './etcd-cluster';

// Metadata write throughput and latency through the controller quorum, with 1 write in flight
// and with 64, next to a 3-member etcd on the same loopback, in the same run.
//
// A Flotilla write is one CreateTopic of a new 1-partition, RF=1 topic whose name is padded so
// that the metadata batch it appends (a Topic and a Partition record) is ~256 bytes; an etcd
// write is one KV.Put of a new key with a 256-byte value. Both clients send to the current
// leader (the Flotilla client would also be forwarded by a follower; etcd's would be too), so
// both measure one leader round: append, replicate to a majority, fsync, apply, answer.
//
// Leader changes during the run are counted three ways: DescribeQuorum's term and leader
// before and after, and every "is the active controller" line in the controllers' logs. The
// goal is zero: a spurious election under load means a stalled event loop or a slow fsync.
//
// Usage: node dist/bench/metadata-throughput.js [--sequential 2000] [--concurrent 10000]
//          [--in-flight 64] [--time-cap-s 30] [--no-etcd] [--install-etcd]

export interface ThroughputOptions {
  /** Writes with 1 in flight. Default 2000. */
  readonly sequentialCount?: number;
  /** Writes with `inFlight` in flight. Default 10000. */
  readonly concurrentCount?: number;
  /** Default 64. */
  readonly inFlight?: number;
  /** Bound on each phase. Default 30 s. */
  readonly timeCapMs?: number;
  /** Run the etcd side. Default true. */
  readonly etcd?: boolean;
  /** apt-get install etcd-server when etcd is absent (needs root). Default false. */
  readonly installEtcd?: boolean;
}

export interface SystemThroughput {
  readonly sequential: LoadStats;
  readonly concurrent: LoadStats;
  /** CPU ms used by each server process (and by this benchmark process) during each phase. */
  readonly cpuMs: { sequential: Record<string, number>; concurrent: Record<string, number> };
}

export interface FlotillaThroughput extends SystemThroughput {
  /** Bytes of the metadata batch one write appends (Topic + Partition record). */
  readonly entryBytes: number;
  /**
   * Topics in the image when each phase began. A write costs more as the image grows (see
   * bench/README.md), so the 64-in-flight phase starts on a bigger image than the first.
   */
  readonly topicsAtStart: { sequential: number; concurrent: number };
  readonly leaderChanges: {
    readonly termBefore: number;
    readonly termAfter: number;
    readonly leaderBefore: number;
    readonly leaderAfter: number;
    /** "is the active controller" log lines during the measured phases. */
    readonly electionsInLogs: number;
    readonly elections: { controllerId: number; term: number; timeMs: number }[];
  };
  /** Warn/error log lines of the controllers during the run, by message. */
  readonly warnings: Record<string, number>;
  /** Raft persists of >= 500 ms during the run (they delay heartbeats, see README). */
  readonly slowPersists: SlowPersists;
  readonly rssBytesAfter: Record<string, number | undefined>;
  readonly errorExamples: string[];
}

export interface EtcdThroughput extends SystemThroughput {
  readonly version: string;
  readonly valueBytes: number;
  readonly leaderChanges: { termBefore: number; termAfter: number };
  readonly errorExamples: string[];
}

export interface ThroughputResult {
  readonly options: Required<ThroughputOptions>;
  readonly flotilla: FlotillaThroughput;
  readonly etcd: EtcdThroughput | { skipped: string };
}

const DEFAULTS: Required<ThroughputOptions> = {
  sequentialCount: 2000,
  concurrentCount: 10_000,
  inFlight: 64,
  timeCapMs: 30_000,
  etcd: true,
  installEtcd: false,
};
/** Unmeasured writes first, so JIT warm-up and connection setup stay out of the numbers. */
const WARMUP_WRITES = 200;
const NAME_LENGTH = 60;
const ETCD_VALUE_BYTES = 256;

/** A topic name of NAME_LENGTH characters, unique per run, phase and index. */
function topicName(run: string, phase: string, i: number): string {
  const base = `bench-${run}-${phase}-${String(i).padStart(6, '0')}-`;
  return base.padEnd(NAME_LENGTH, 'x');
}

function entryBytesFor(name: string): number {
  const topicId = 'AAAAAAAAAAAAAAAAAAAAAA';
  return encodeBatch([
    { type: 'Topic', name, topicId, reason: `topic ${name} created: 1 partitions, replication factor 1`, timestampMs: Date.now() },
    { type: 'Partition', topicId, partition: 0, replicas: [1], isr: [1], leader: 1, leaderEpoch: 0, partitionEpoch: 0 },
  ]).length;
}

/** CPU ms each of `pids` (by label) used while `fn` ran. */
async function withCpu<T>(pids: Record<string, number | undefined>, fn: () => Promise<T>): Promise<[T, Record<string, number>]> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuMs(pid) ?? 0]));
  const self0 = process.cpuUsage();
  const r = await fn();
  const self = process.cpuUsage(self0);
  const used: Record<string, number> = {};
  for (const [k, pid] of Object.entries(pids)) used[k] = Math.round((cpuMs(pid) ?? 0) - (before[k] ?? 0));
  used['bench-client'] = Math.round((self.user + self.system) / 1000);
  return [r, used];
}

export async function benchFlotillaThroughput(o: Required<ThroughputOptions>): Promise<FlotillaThroughput> {
  const cluster = await ControllerCluster.start({ size: 3 });
  const unhook = killOnExit(() => controllerPids(cluster));
  const run = crypto.randomBytes(3).toString('hex');
  const probe = new Flotilla({ bootstrap: cluster.bootstrap(), backoffInitialMs: 20, backoffMaxMs: 200 }).admin();
  const brokers = new StandInBrokers(cluster.bootstrap(), [1]);
  let admin: ReturnType<Flotilla['admin']> | undefined;
  try {
    const leaderId = await eventually('a leader', async () => {
      const q = await probe.describeQuorum();
      if (!q.leaderId) throw new Error('no leader');
      return q.leaderId;
    });
    await brokers.register();
    brokers.start(300);
    // The leader first in the bootstrap list: writes go straight to it, not through a forward.
    const bootstrap = [cluster.addressOf(leaderId), ...cluster.bootstrap().filter((a) => a !== cluster.addressOf(leaderId))];
    admin = new Flotilla({ bootstrap, backoffInitialMs: 20, backoffMaxMs: 500, requestTimeoutMs: 10_000, totalTimeoutMs: 20_000 }).admin();
    const a = admin;
    const create = (name: string) => a.createTopic({ name, partitions: 1, replicationFactor: 1 });
    await runLoad((i) => create(topicName(run, 'warm', i)), { count: WARMUP_WRITES, inFlight: 8, timeCapMs: 30_000 });

    const pids = Object.fromEntries([...cluster.nodes.values()].map((n) => [`controller-${n.id}`, n.proc?.pid]));
    const before = await a.describeQuorum();
    const sinceMs = Date.now();
    const [sequential, cpuSeq] = await withCpu(pids, () => runLoad((i) => create(topicName(run, 'seq', i)), { count: o.sequentialCount, inFlight: 1, timeCapMs: o.timeCapMs }));
    console.log(formatLoad('flotilla CreateTopic, 1 in flight', sequential));
    const [concurrent, cpuConc] = await withCpu(pids, () =>
      runLoad((i) => create(topicName(run, 'c', i)), { count: o.concurrentCount, inFlight: o.inFlight, timeCapMs: o.timeCapMs }),
    );
    console.log(formatLoad(`flotilla CreateTopic, ${o.inFlight} in flight`, concurrent));
    const after = await a.describeQuorum();
    const elections = electionsInLogs(cluster, sinceMs);
    const leaderChanges = {
      termBefore: before.term,
      termAfter: after.term,
      leaderBefore: before.leaderId,
      leaderAfter: after.leaderId,
      electionsInLogs: elections.length,
      elections,
    };
    console.log(
      `flotilla leader changes during the run: ${elections.length} election(s) in the logs; term ${before.term} -> ${after.term}, leader ${before.leaderId} -> ${after.leaderId}`,
    );
    const { errorExamples: e1, ...seq } = sequential;
    const { errorExamples: e2, ...conc } = concurrent;
    return {
      sequential: seq,
      concurrent: conc,
      cpuMs: { sequential: cpuSeq, concurrent: cpuConc },
      entryBytes: entryBytesFor(topicName(run, 'seq', 0)),
      topicsAtStart: { sequential: WARMUP_WRITES, concurrent: WARMUP_WRITES + sequential.ok },
      leaderChanges,
      warnings: warningsInLogs(cluster, sinceMs),
      slowPersists: slowPersistsInLogs(cluster, sinceMs),
      rssBytesAfter: Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, rssBytes(pid)])),
      errorExamples: [...e1, ...e2],
    };
  } finally {
    brokers.stop();
    await probe.close();
    await admin?.close();
    await cluster.shutdown();
    unhook();
  }
}

export async function benchEtcdThroughput(o: Required<ThroughputOptions>, version: string): Promise<EtcdThroughput> {
  const cluster = await EtcdCluster.start(3);
  const unhook = killOnExit(() => cluster.pids());
  const kvs = cluster.endpoints().map((e) => new EtcdKv(e));
  try {
    const { leader } = await waitForEtcdLeader(kvs);
    const value = crypto.randomBytes(ETCD_VALUE_BYTES);
    const key = (phase: string, i: number) => Buffer.from(`/bench/${phase}/${String(i).padStart(6, '0')}`);
    await runLoad((i) => leader.put(key('warm', i), value), { count: WARMUP_WRITES, inFlight: 8, timeCapMs: 30_000 });
    const pids = Object.fromEntries(cluster.pids().map((pid, i) => [`etcd-${i + 1}`, pid]));
    const before = await leader.status();
    const [sequential, cpuSeq] = await withCpu(pids, () => runLoad((i) => leader.put(key('seq', i), value), { count: o.sequentialCount, inFlight: 1, timeCapMs: o.timeCapMs }));
    console.log(formatLoad('etcd Put 256 B, 1 in flight', sequential));
    const [concurrent, cpuConc] = await withCpu(pids, () =>
      runLoad((i) => leader.put(key('c', i), value), { count: o.concurrentCount, inFlight: o.inFlight, timeCapMs: o.timeCapMs }),
    );
    console.log(formatLoad(`etcd Put 256 B, ${o.inFlight} in flight`, concurrent));
    const after = await leader.status().catch(() => ({ raftTerm: -1 }));
    console.log(`etcd raft term ${before.raftTerm} -> ${after.raftTerm}`);
    const { errorExamples: e1, ...seq } = sequential;
    const { errorExamples: e2, ...conc } = concurrent;
    return {
      version,
      valueBytes: ETCD_VALUE_BYTES,
      sequential: seq,
      concurrent: conc,
      cpuMs: { sequential: cpuSeq, concurrent: cpuConc },
      leaderChanges: { termBefore: before.raftTerm, termAfter: after.raftTerm },
      errorExamples: [...e1, ...e2],
    };
  } finally {
    for (const k of kvs) k.close();
    await cluster.shutdown();
    unhook();
  }
}

export async function benchMetadataThroughput(opts: ThroughputOptions = {}): Promise<ThroughputResult> {
  const o: Required<ThroughputOptions> = { ...DEFAULTS, ...opts };
  const flotilla = await benchFlotillaThroughput(o);
  let etcd: ThroughputResult['etcd'];
  if (!o.etcd) {
    etcd = { skipped: 'disabled (--no-etcd)' };
  } else {
    const have = ensureEtcd({ install: o.installEtcd });
    if ('unavailable' in have) {
      console.log(`etcd side skipped: ${have.unavailable}`);
      etcd = { skipped: have.unavailable };
    } else {
      etcd = await benchEtcdThroughput(o, have.version);
    }
  }
  return { options: o, flotilla, etcd };
}

export function formatThroughput(r: ThroughputResult): string[] {
  const row = (name: string, s: LoadStats) =>
    `  ${name.padEnd(26)} ${s.opsPerSec.toFixed(0).padStart(7)} /s   p50 ${s.p50Ms.toFixed(2).padStart(7)} ms   p99 ${s.p99Ms.toFixed(2).padStart(7)} ms   (${s.ok}/${s.requested} ok${s.timeCapped ? ', time cap' : ''}${Object.keys(s.errors).length ? `, errors ${JSON.stringify(s.errors)}` : ''})`;
  const f = r.flotilla;
  const lines = [
    `metadata write throughput (Flotilla: CreateTopic, ${f.entryBytes} B batch; etcd: Put, 256 B value)`,
    row('flotilla, 1 in flight', f.sequential),
    row(`flotilla, ${r.options.inFlight} in flight`, f.concurrent),
    `  (flotilla phases began with ${f.topicsAtStart.sequential} and ${f.topicsAtStart.concurrent} topics in the image)`,
  ];
  if ('skipped' in r.etcd) lines.push(`  etcd: skipped (${r.etcd.skipped})`);
  else lines.push(row(`etcd ${r.etcd.version}, 1 in flight`, r.etcd.sequential), row(`etcd ${r.etcd.version}, ${r.options.inFlight} in flight`, r.etcd.concurrent));
  const lc = f.leaderChanges;
  lines.push(`  flotilla leader changes during the run: ${lc.electionsInLogs} (term ${lc.termBefore} -> ${lc.termAfter}, leader ${lc.leaderBefore} -> ${lc.leaderAfter}); slow (>= 500 ms) Raft persists: ${f.slowPersists.count}`);
  if (!('skipped' in r.etcd)) lines.push(`  etcd raft term during the run: ${r.etcd.leaderChanges.termBefore} -> ${r.etcd.leaderChanges.termAfter}`);
  return lines;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  benchMetadataThroughput({
    sequentialCount: argNumber(argv, 'sequential', DEFAULTS.sequentialCount),
    concurrentCount: argNumber(argv, 'concurrent', DEFAULTS.concurrentCount),
    inFlight: argNumber(argv, 'in-flight', DEFAULTS.inFlight),
    timeCapMs: argNumber(argv, 'time-cap-s', DEFAULTS.timeCapMs / 1000) * 1000,
    etcd: !argFlag(argv, 'no-etcd'),
    installEtcd: argFlag(argv, 'install-etcd'),
  }).then(
    (r) => {
      const m = machineInfo();
      console.log(`\non ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, node ${m.node}`);
      for (const line of formatThroughput(r)) console.log(line);
      console.log(JSON.stringify(r));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
