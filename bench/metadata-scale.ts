import * as fs from 'node:fs';
import * as path from 'node:path';
import { Flotilla, isFlotillaError } from '../client';
import type { Admin, QuorumDescription } from '../client';
import { ControllerCluster, eventually } from '../test/integration/controller-launcher';
import { StandInBrokers } from '../test/integration/stand-in-brokers';
import {
  LoadStats,
  argFlag,
  argNumber,
  controllerPids,
  dirBytes,
  electionsInLogs,
  formatLoad,
  killOnExit,
  machineInfo,
  median,
  mib,
  peakRssBytes,
  round,
  rssBytes,
  runLoad,
  SlowPersists,
  sleep,
  slowPersistsInLogs,
  warningsInLogs,
} from './bench-support';

// Metadata at scale (issue: 10,000 topics x 10 partitions = 100k partitions, 3 brokers).
//
//  1. create the topics through the quorum, `inFlight` CreateTopics at a time, recording the
//     rate and the leader's RSS at every tenth of the way (does a write get slower as the
//     image grows?);
//  2. the cost of holding them: RSS of each controller, bytes of each data dir (the Raft log
//     and snapshots live in LevelDB under <dataDir>/raft) and the snapshot size the leader logs;
//  3. catch-up: kill -9 a follower and respawn it, on its own disk and again with its disk
//     wiped (catch-up by InstallSnapshot), timing until it answers and until its own applied
//     index reaches the leader's commit index (asked of that controller itself: DescribeQuorum
//     reports the answering node's indexes; we check `servedBy`);
//  4. controller failover at that size, as bench/controller-failover.ts does it: kill -9 the
//     leader, time to the first successful CreateTopic; `failoverRuns` times.
//
// Spurious leader elections (any outside the deliberate kills) are counted from the logs.
//
// Usage: node dist/bench/metadata-scale.js [--topics 10000] [--partitions 10] [--rf 3]
//          [--in-flight 64] [--failover-runs 3] [--create-time-cap-s 1200] [--keep-data]

export interface ScaleOptions {
  readonly topics?: number;
  readonly partitions?: number;
  /** Replication factor of every topic (3 stand-in brokers, so at most 3). Default 3. */
  readonly replicationFactor?: number;
  readonly inFlight?: number;
  readonly failoverRuns?: number;
  /** Bound on the creation phase. Default 20 min. */
  readonly createTimeCapMs?: number;
  /** Bound on each wait for a controller to catch up. Default 5 min. */
  readonly catchUpTimeoutMs?: number;
  /** Keep the controllers' data dirs and logs (they are always kept when a step fails). */
  readonly keepData?: boolean;
}

export interface CreationSample {
  readonly topicsDone: number;
  readonly elapsedMs: number;
  /** Topics per second over this tenth alone. */
  readonly intervalTopicsPerSec: number;
  readonly leaderRssBytes: number | undefined;
}

export interface ControllerFootprint {
  readonly id: number;
  readonly role: 'leader' | 'follower';
  readonly rssBytes: number | undefined;
  readonly peakRssBytes: number | undefined;
  readonly dataDirBytes: number;
  readonly raftDirBytes: number;
  readonly appliedIndex: number | undefined;
  readonly snapshotIndex: number | undefined;
}

export interface CatchUpSample {
  readonly controllerId: number;
  readonly wiped: boolean;
  /** Respawn to the first DescribeQuorum answered by that controller. */
  readonly answeringMs: number;
  /** Respawn to its applied index >= the leader's commit index. */
  readonly inSyncMs: number;
  readonly leaderCommitIndex: number;
  readonly rssBytesAfter: number | undefined;
  /** Set when it did not catch up within catchUpTimeoutMs (inSyncMs is then -1). */
  readonly error?: string;
  /** Its last log lines, when it did not catch up. */
  readonly logTail?: string[];
}

export interface ScaleResult {
  readonly options: Required<ScaleOptions>;
  readonly create: LoadStats & { topicsCreated: number; partitionsCreated: number; samples: CreationSample[]; errorExamples: string[] };
  /** Time until every voter's lag was 0 after the last create. */
  readonly replicationSettleMs: number;
  readonly footprint: ControllerFootprint[];
  /** "snapshot taken" sizes from the logs (bytes of the encoded image), last per controller. */
  readonly snapshotBytes: Record<string, number>;
  readonly snapshotsTaken: number;
  readonly catchUp: CatchUpSample[];
  readonly failover: { samplesMs: number[]; medianMs: number; maxMs: number; catchUpAfterMs: number[] };
  /** Elections outside the deliberate kills (creation, settling, catch-up phases). */
  readonly spuriousElections: { controllerId: number; term: number; timeMs: number }[];
  readonly warnings: Record<string, number>;
  /** Raft persists of >= 500 ms before the failover runs (they delay heartbeats: elections). */
  readonly slowPersists: SlowPersists;
}

const DEFAULTS: Required<ScaleOptions> = {
  topics: 10_000,
  partitions: 10,
  replicationFactor: 3,
  inFlight: 64,
  failoverRuns: 3,
  createTimeCapMs: 20 * 60_000,
  catchUpTimeoutMs: 5 * 60_000,
  keepData: false,
};
const BROKER_IDS = [1, 2, 3];
const POLL_MS = 50;

/** DescribeQuorum answered by controller `id` itself (a fresh one-address client). */
async function describeLocal(cluster: ControllerCluster, id: number): Promise<QuorumDescription> {
  const admin = new Flotilla({ bootstrap: [cluster.addressOf(id)], requestTimeoutMs: 2_000, totalTimeoutMs: 2_000, attemptsMax: 1 }).admin();
  try {
    const q = await admin.describeQuorum();
    if (q.servedBy !== id) throw new Error(`answered by controller ${q.servedBy}, not ${id}`);
    return q;
  } finally {
    await admin.close();
  }
}

async function leaderOf(admin: Admin): Promise<QuorumDescription> {
  return eventually('a leader', async () => {
    const q = await admin.describeQuorum();
    if (!q.leaderId || !q.fromLeader) throw new Error('no leader');
    return q;
  });
}

/** Waits until the leader reports every voter at lag 0; returns the ms it took. */
async function waitAllInSync(admin: Admin, timeoutMs: number): Promise<number> {
  const t0 = Date.now();
  await eventually(
    'every voter to catch up',
    async () => {
      const q = await admin.describeQuorum();
      if (!q.fromLeader || q.voters.some((v) => v.lag !== 0)) throw new Error(`lags ${q.voters.map((v) => `${v.id}:${v.lag}`).join(' ')}`);
    },
    { timeoutMs, intervalMs: POLL_MS },
  );
  return Date.now() - t0;
}

/**
 * Kill -9 controller `id`, optionally wipe its disk, respawn it, and time until it answers
 * and until its own applied index reaches the leader's commit index.
 */
async function restartAndTime(cluster: ControllerCluster, admin: Admin, id: number, wipe: boolean, timeoutMs: number): Promise<CatchUpSample> {
  await cluster.kill(id, 'SIGKILL');
  if (wipe) fs.rmSync(cluster.nodes.get(id)!.dataDir, { recursive: true, force: true });
  const t0 = Date.now();
  cluster.spawn(id);
  let answeringMs = -1;
  let leaderCommitIndex = 0;
  const caughtUp = eventually(
    `controller ${id} to catch up`,
    async () => {
      const mine = await describeLocal(cluster, id);
      if (answeringMs < 0) answeringMs = Date.now() - t0;
      // The leader's own commit index: ask the leader itself, not whichever node answers.
      const leaderId = (await admin.describeQuorum()).leaderId;
      if (!leaderId || leaderId === id) throw new Error('no other leader known yet');
      const leader = await describeLocal(cluster, leaderId);
      leaderCommitIndex = leader.commitIndex;
      if (mine.appliedIndex < leader.commitIndex) throw new Error(`applied ${mine.appliedIndex} < leader commit ${leader.commitIndex}`);
    },
    { timeoutMs, intervalMs: POLL_MS },
  );
  let error: string | undefined;
  try {
    await caughtUp;
  } catch (e) {
    error = (e as Error).message;
  }
  const inSyncMs = error ? -1 : Date.now() - t0;
  const sample = { controllerId: id, wiped: wipe, answeringMs, inSyncMs, leaderCommitIndex, rssBytesAfter: rssBytes(cluster.nodes.get(id)!.proc?.pid) };
  // A finding, not the end of the benchmark: keep what the controller said about it.
  return error ? { ...sample, error, logTail: cluster.logOf(id).trimEnd().split('\n').slice(-30) } : sample;
}

/** The `bytes` of the last "snapshot taken" line of each controller's log. */
function snapshotSizesFromLogs(cluster: ControllerCluster): { last: Record<string, number>; taken: number } {
  const last: Record<string, number> = {};
  let taken = 0;
  for (const id of cluster.nodes.keys()) {
    for (const line of cluster.logOf(id).split('\n')) {
      if (!line.includes('snapshot taken')) continue;
      try {
        const rec = JSON.parse(line) as { bytes?: number };
        if (rec.bytes !== undefined) {
          last[`controller-${id}`] = rec.bytes;
          taken++;
        }
      } catch {
        // torn line
      }
    }
  }
  return { last, taken };
}

export async function benchMetadataScale(opts: ScaleOptions = {}): Promise<ScaleResult> {
  const o: Required<ScaleOptions> = { ...DEFAULTS, ...opts };
  if (o.replicationFactor > BROKER_IDS.length) throw new Error(`replication factor ${o.replicationFactor} > ${BROKER_IDS.length} stand-in brokers`);
  const cluster = await ControllerCluster.start({ size: 3 });
  const unhook = killOnExit(() => controllerPids(cluster));
  const probe = new Flotilla({ bootstrap: cluster.bootstrap(), backoffInitialMs: 20, backoffMaxMs: 200, requestTimeoutMs: 5_000, totalTimeoutMs: 30_000 }).admin();
  const brokers = new StandInBrokers(cluster.bootstrap(), BROKER_IDS);
  let writer: Admin | undefined;
  let failed = true;
  /** A step that did not complete; the run goes on, and the data is kept for a post-mortem. */
  let failedStep = false;
  try {
    const { leaderId } = await leaderOf(probe);
    await brokers.register();
    brokers.start(300);
    const bootstrap = [cluster.addressOf(leaderId), ...cluster.bootstrap().filter((a) => a !== cluster.addressOf(leaderId))];
    // Generous timeouts: at this size one write may be slow, and a timed-out create that is
    // retried comes back TOPIC_ALREADY_EXISTS, which would count as an error.
    writer = new Flotilla({ bootstrap, backoffInitialMs: 50, backoffMaxMs: 1_000, requestTimeoutMs: 60_000, totalTimeoutMs: 120_000 }).admin();
    const w = writer;
    const sinceMs = Date.now();

    // ---- 1. create ----
    const samples: CreationSample[] = [];
    const tenth = Math.max(1, Math.floor(o.topics / 10));
    let lastDone = 0;
    let lastMs = 0;
    console.log(`creating ${o.topics} topics x ${o.partitions} partitions (RF ${o.replicationFactor}), ${o.inFlight} in flight ...`);
    const created = await runLoad(
      (i) => w.createTopic({ name: `scale-${String(i).padStart(6, '0')}`, partitions: o.partitions, replicationFactor: o.replicationFactor }),
      {
        count: o.topics,
        inFlight: o.inFlight,
        timeCapMs: o.createTimeCapMs,
        progressEvery: tenth,
        onProgress: (done, elapsedMs) => {
          const rate = ((done - lastDone) * 1000) / Math.max(1, elapsedMs - lastMs);
          const leaderRss = rssBytes(cluster.nodes.get(leaderId)!.proc?.pid);
          samples.push({ topicsDone: done, elapsedMs: Math.round(elapsedMs), intervalTopicsPerSec: round(rate, 1), leaderRssBytes: leaderRss });
          console.log(`  ${done} topics after ${(elapsedMs / 1000).toFixed(1)} s (${rate.toFixed(0)} topics/s over the last ${done - lastDone}), leader RSS ${mib(leaderRss)}`);
          lastDone = done;
          lastMs = elapsedMs;
        },
      },
    );
    console.log(formatLoad('CreateTopic', created));
    const replicationSettleMs = await waitAllInSync(probe, o.catchUpTimeoutMs);

    // ---- 2. footprint ----
    const leaderNow = (await probe.describeQuorum()).leaderId;
    const footprint: ControllerFootprint[] = [];
    for (const n of cluster.nodes.values()) {
      const q = await describeLocal(cluster, n.id).catch(() => undefined);
      footprint.push({
        id: n.id,
        role: n.id === leaderNow ? 'leader' : 'follower',
        rssBytes: rssBytes(n.proc?.pid),
        peakRssBytes: peakRssBytes(n.proc?.pid),
        dataDirBytes: dirBytes(n.dataDir),
        raftDirBytes: dirBytes(path.join(n.dataDir, 'raft')),
        appliedIndex: q?.appliedIndex,
        snapshotIndex: q?.snapshotIndex,
      });
    }
    for (const f of footprint) {
      console.log(
        `  controller ${f.id} (${f.role}): RSS ${mib(f.rssBytes)} (peak ${mib(f.peakRssBytes)}), data dir ${mib(f.dataDirBytes)} (raft ${mib(f.raftDirBytes)}), applied ${f.appliedIndex}, snapshot at ${f.snapshotIndex}`,
      );
    }
    const snaps = snapshotSizesFromLogs(cluster);

    // ---- 3. catch-up after kill -9 of a follower: own disk, then wiped disk ----
    const catchUp: CatchUpSample[] = [];
    const follower = [...cluster.nodes.keys()].find((id) => id !== leaderNow)!;
    for (const wipe of [false, true]) {
      const s = await restartAndTime(cluster, probe, follower, wipe, o.catchUpTimeoutMs);
      catchUp.push(s);
      if (s.error) {
        console.log(`  controller ${follower} kill -9 + respawn${wipe ? ' with a wiped disk' : ''}: NOT in sync after ${o.catchUpTimeoutMs} ms: ${s.error}`);
        failedStep = true;
        continue;
      }
      console.log(
        `  controller ${follower} kill -9 + respawn${wipe ? ' with a wiped disk' : ''}: answering after ${s.answeringMs} ms, in sync (applied >= leader commit ${s.leaderCommitIndex}) after ${s.inSyncMs} ms, RSS ${mib(s.rssBytesAfter)}`,
      );
      await waitAllInSync(probe, o.catchUpTimeoutMs);
    }
    const spuriousElections = electionsInLogs(cluster, sinceMs);
    const warnings = warningsInLogs(cluster, sinceMs);
    const slowPersists = slowPersistsInLogs(cluster, sinceMs);

    // ---- 4. failover at this size ----
    // As controller-failover.ts, but attemptsMax raised: with 10-20 ms backoffs the default
    // 100 attempts are spent in ~3 s, before totalTimeoutMs, if the election takes longer.
    const failoverAdmin = new Flotilla({
      bootstrap: cluster.bootstrap(),
      backoffInitialMs: 10,
      backoffMaxMs: 20,
      requestTimeoutMs: 2_000,
      totalTimeoutMs: 60_000,
      attemptsMax: 10_000,
    }).admin();
    const samplesMs: number[] = [];
    const catchUpAfterMs: number[] = [];
    try {
      for (let run = 0; run < o.failoverRuns; run++) {
        await failoverAdmin.createTopic({ name: `scale-warm-${run}`, partitions: 1, replicationFactor: 1 });
        const { leaderId: victim } = await failoverAdmin.describeQuorum();
        const t0 = process.hrtime.bigint();
        await cluster.kill(victim, 'SIGKILL');
        try {
          await failoverAdmin.createTopic({ name: `scale-after-failover-${run}`, partitions: 1, replicationFactor: 1 });
        } catch (e) {
          // A create whose answer was lost is retried and then finds its own topic: it was written.
          if (!isFlotillaError(e) || e.name !== 'TOPIC_ALREADY_EXISTS') throw e;
        }
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        samplesMs.push(round(ms, 1));
        const t1 = Date.now();
        cluster.spawn(victim);
        await waitAllInSync(failoverAdmin, o.catchUpTimeoutMs);
        catchUpAfterMs.push(Date.now() - t1);
        console.log(`  failover run ${run + 1}/${o.failoverRuns}: killed controller ${victim}, first write after ${ms.toFixed(0)} ms; it was back in sync ${catchUpAfterMs.at(-1)} ms after respawn`);
        await sleep(1_000);
      }
    } finally {
      await failoverAdmin.close();
    }
    const { errorExamples, ...createStats } = created;
    failed = failedStep;
    return {
      options: o,
      create: {
        ...createStats,
        topicsCreated: created.ok,
        partitionsCreated: created.ok * o.partitions,
        samples,
        errorExamples,
      },
      replicationSettleMs,
      footprint,
      snapshotBytes: snaps.last,
      snapshotsTaken: snaps.taken,
      catchUp,
      failover: { samplesMs, medianMs: median(samplesMs), maxMs: Math.max(...samplesMs), catchUpAfterMs },
      spuriousElections,
      warnings,
      slowPersists,
    };
  } finally {
    brokers.stop();
    await probe.close();
    await writer?.close();
    // On failure keep the controllers' data dirs and logs for a post-mortem.
    await cluster.shutdown({ keepData: failed || o.keepData });
    if (failed) console.error(`metadata-scale: a step failed; controller logs and data kept in ${cluster.rootDir}`);
    else if (o.keepData) console.log(`controller logs and data kept in ${cluster.rootDir}`);
    unhook();
  }
}

export function formatScale(r: ScaleResult): string[] {
  const o = r.options;
  const c = r.create;
  const lines = [
    `metadata at scale: ${o.topics} topics x ${o.partitions} partitions, RF ${o.replicationFactor}, 3 stand-in brokers, ${o.inFlight} in flight`,
    `  created ${c.topicsCreated} topics (${c.partitionsCreated} partitions) in ${(c.durationMs / 1000).toFixed(1)} s${c.timeCapped ? ' (TIME CAP)' : ''}: ${c.opsPerSec.toFixed(1)} topics/s, p50 ${c.p50Ms.toFixed(0)} ms, p99 ${c.p99Ms.toFixed(0)} ms${Object.keys(c.errors).length ? `, errors ${JSON.stringify(c.errors)}` : ''}`,
    `  rate by tenth (topics/s): ${c.samples.map((s) => s.intervalTopicsPerSec.toFixed(0)).join(' ')}`,
    `  followers in sync ${r.replicationSettleMs} ms after the last create`,
  ];
  for (const f of r.footprint) lines.push(`  controller ${f.id} (${f.role}): RSS ${mib(f.rssBytes)}, peak ${mib(f.peakRssBytes)}, data dir ${mib(f.dataDirBytes)}`);
  lines.push(`  snapshots taken: ${r.snapshotsTaken}; last snapshot size: ${Object.entries(r.snapshotBytes).map(([k, v]) => `${k} ${mib(v)}`).join(', ') || 'none'}`);
  for (const s of r.catchUp) lines.push(`  restart of controller ${s.controllerId}${s.wiped ? ' (wiped disk)' : ''}: answering ${s.answeringMs} ms, ${s.error ? `NOT in sync: ${s.error}` : `in sync ${s.inSyncMs} ms`}`);
  lines.push(`  failover at this size: median ${r.failover.medianMs.toFixed(0)} ms, max ${r.failover.maxMs.toFixed(0)} ms over ${r.failover.samplesMs.length} runs (${r.failover.samplesMs.map((x) => x.toFixed(0)).join(', ')})`);
  const sp = r.slowPersists;
  lines.push(`  spurious elections (before the failover runs): ${r.spuriousElections.length}; slow (>= 500 ms) Raft persists: ${sp.count}, median ${sp.medianMs} ms, max ${sp.maxMs} ms`);
  return lines;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  benchMetadataScale({
    topics: argNumber(argv, 'topics', DEFAULTS.topics),
    partitions: argNumber(argv, 'partitions', DEFAULTS.partitions),
    replicationFactor: argNumber(argv, 'rf', DEFAULTS.replicationFactor),
    inFlight: argNumber(argv, 'in-flight', DEFAULTS.inFlight),
    failoverRuns: argNumber(argv, 'failover-runs', DEFAULTS.failoverRuns),
    createTimeCapMs: argNumber(argv, 'create-time-cap-s', DEFAULTS.createTimeCapMs / 1000) * 1000,
    keepData: argFlag(argv, 'keep-data'),
  }).then(
    (r) => {
      const m = machineInfo();
      console.log(`\non ${m.cores} cores (${m.cpuModel}), ${m.memoryGiB} GiB, node ${m.node}`);
      for (const line of formatScale(r)) console.log(line);
      console.log(JSON.stringify(r));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
