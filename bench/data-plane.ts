import * as os from 'node:os';
import { Admin, Flotilla, Producer } from '../client';
import type { TopicDescription } from '../client';
import { BrokerLauncher } from '../test/integration/broker-launcher';
import { ControllerCluster, eventually } from '../test/integration/controller-launcher';
import {
  LoadStats,
  argFlag,
  argNumber,
  controllerPids,
  cpuMs,
  electionsInLogs,
  formatLoad,
  killOnExit,
  median,
  mib,
  peakRssBytes,
  round,
  rssBytes,
  runLoad,
  sleep,
} from './bench-support';

// The data-plane benchmark (issue 3 §8): 3 controllers + 3 brokers on loopback, one topic of
// 6 partitions, RF 3, min.insync.replicas 2, 1 KiB records, the TS client batching.
//
// Phases, each bounded in count and time:
//   1. produce with acks=all, acks=1, acks=0: `inFlight` single-record send() calls kept
//      outstanding (the same shape as the JetStream reference: one publish = one record, N in
//      flight); latency per record is send() → its promise resolving (the ack). With acks=0
//      nobody answers, so only the throughput means something. Each phase also counts how
//      many records the brokers' logs gained (high watermarks before/after), so a lossy acks=0
//      shows.
//   2. RSS of each broker right after the produce phases (steady state, nothing in flight).
//   3. consume everything from the beginning with the client consumer (eachMessage).
//   4. failover: kill -9 the leader of one partition, time until an acks=all produce to that
//      partition is acknowledged; respawn it, wait until every partition's ISR is full again;
//      `failoverRuns` times. The controllers' and brokers' logs split each run into: kill →
//      the controller fences the broker (its session timeout, 9 s by default) → the new leader
//      applies its leadership → the client's first ack.
// Controller leader changes are counted over the whole run (goal: 0).
//
// Usage: node dist/bench/data-plane.js [--records 300000] [--in-flight 512] [--record-bytes 1024]
//          [--linger-ms 5] [--batch-size-bytes 65536] [--phase-time-cap-s 20]
//          [--consume-time-cap-s 30] [--failover-runs 10] [--failover-time-cap-s 240] [--keep-data]
//          [--acks all,1,0]
// Profile the brokers: FLOTILLA_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof"; the client:
// node --cpu-prof dist/bench/data-plane.js.

export interface DataPlaneOptions {
  /** Records per produce phase at most (the time cap usually ends it first). */
  readonly records?: number;
  readonly inFlight?: number;
  readonly recordBytes?: number;
  readonly lingerMs?: number;
  readonly batchSizeBytes?: number;
  readonly phaseTimeCapMs?: number;
  readonly consumeTimeCapMs?: number;
  readonly failoverRuns?: number;
  /** Bound on the whole failover phase; runs not started by then are skipped (and counted). */
  readonly failoverTimeCapMs?: number;
  readonly keepData?: boolean;
  /** Which produce phases to run (default all three); for profiling one. Skipped ones are absent from the result. */
  readonly acks?: readonly ('all' | 1 | 0)[];
}

export interface ProducePhase extends LoadStats {
  readonly acks: 'all' | 1 | 0;
  readonly mbPerSec: number;
  /** False for acks=0: send() resolves when the request is written, so its latency is not an ack's. */
  readonly latencyMeaningful: boolean;
  /** Records the partitions' high watermarks grew by during the phase (replicated and committed), after the producer's disconnect. */
  readonly recordsInLog: number;
  /** The same, once the log stopped growing after the load, before disconnecting. */
  readonly recordsInLogBeforeDisconnect: number;
  /** Phase start → the log held every record whose send() resolved (or last grew, if it never did: see recordsInLog). */
  readonly untilLogSettledMs: number;
  /** recordsInLogBeforeDisconnect per second of untilLogSettledMs: acks=0's throughput (its send() rate only says how fast the client handed requests to the socket). */
  readonly logRecordsPerSec: number;
  /** CPU time each broker (by id) and this client process used during the phase. */
  readonly cpuMs: { readonly brokers: Record<number, number>; readonly client: number };
  /**
   * CPU per acknowledged record: the 3 brokers together, and the client. On a shared machine
   * this is steadier than the rate: records/s ≈ cores available / (brokers + client) CPU per record.
   */
  readonly cpuUsPerRecord: { readonly brokers: number; readonly client: number };
  readonly loadAverage: number;
  readonly errorExamples: string[];
}

export interface FailoverRun {
  readonly partition: number;
  readonly killedBroker: number;
  readonly newLeader: number;
  /** kill -9 → first acknowledged acks=all produce on that partition. */
  readonly totalMs: number;
  /** kill → the controller's "fencing brokers with expired sessions" for that broker (from its log). */
  readonly killToFencedMs?: number;
  /** fenced → the new leader logged "became leader of <topic>-<p>". */
  readonly fencedToLeaderMs?: number;
  /** new leader → the client's ack (metadata refresh, retry backoff, the produce itself). */
  readonly leaderToAckMs?: number;
  /** Respawn → every partition's ISR full again. */
  readonly restoreMs: number;
}

export interface DataPlaneResult {
  readonly setup: {
    readonly controllers: number;
    readonly brokers: number;
    readonly partitions: number;
    readonly replicationFactor: number;
    readonly minInsyncReplicas: number;
    readonly recordBytes: number;
    readonly inFlight: number;
    readonly lingerMs: number;
    readonly batchSizeBytes: number;
    readonly maxInFlightRequestsPerPartition: number;
    readonly brokerSessionTimeoutMs: number;
    readonly setupMs: number;
  };
  readonly produce: { readonly all?: ProducePhase; readonly one?: ProducePhase; readonly zero?: ProducePhase };
  readonly consume: {
    readonly records: number;
    readonly expected: number;
    readonly durationMs: number;
    readonly timeCapped: boolean;
    readonly recordsPerSec: number;
    readonly mbPerSec: number;
    readonly loadAverage: number;
  };
  /** Per broker id, right after the produce phases. */
  readonly brokerMemory: Record<number, { readonly rssBytes?: number; readonly peakRssBytes?: number }>;
  readonly failover: {
    readonly runs: FailoverRun[];
    readonly requested: number;
    readonly medianMs: number;
    readonly maxMs: number;
    readonly medianKillToFencedMs: number;
    readonly medianFencedToLeaderMs: number;
    readonly medianLeaderToAckMs: number;
    readonly probe: { readonly retryBackoffInitialMs: number; readonly retryBackoffMaxMs: number; readonly requestTimeoutMs: number };
    readonly timeCapped: boolean;
    readonly errors: string[];
  };
  readonly controllerLeaderChanges: {
    readonly termBefore: number;
    readonly termAfter: number;
    readonly leaderBefore: number;
    readonly leaderAfter: number;
    readonly electionsInLogs: number;
  };
  /** Broker warn/error log lines during the run, by broker and message (at most 20 kinds). */
  readonly brokerWarnings: Record<string, number>;
}

const TOPIC = 'bench-data';
const PARTITIONS = 6;
const RF = 3;
const MIN_INSYNC = 2;
/** The controller's default (controller/quorum/quorum-controller.ts); this benchmark does not change it. */
const DEFAULT_BROKER_SESSION_TIMEOUT_MS = 9_000;
/** The failover probe producer's client-side knobs (reported with the numbers). */
const PROBE = { retryBackoffInitialMs: 20, retryBackoffMaxMs: 100, requestTimeoutMs: 3_000 };

export async function benchDataPlane(o: DataPlaneOptions = {}): Promise<DataPlaneResult> {
  const records = o.records ?? 300_000;
  const inFlight = o.inFlight ?? 512;
  const recordBytes = o.recordBytes ?? 1024;
  // 64 records of 1 KiB per batch: the ceiling's message shape. With 512 records always
  // outstanding a batch fills long before 5 ms, so linger only matters at the tail.
  const lingerMs = o.lingerMs ?? 5;
  const batchSizeBytes = o.batchSizeBytes ?? 65_536;
  const phaseTimeCapMs = o.phaseTimeCapMs ?? 20_000;
  const consumeTimeCapMs = o.consumeTimeCapMs ?? 30_000;
  const failoverRuns = o.failoverRuns ?? 10;
  const failoverTimeCapMs = o.failoverTimeCapMs ?? 240_000;

  const t0 = Date.now();
  const controllers = await ControllerCluster.start({ size: 3 });
  let brokers: BrokerLauncher | undefined;
  const unhook = killOnExit(() => [...controllerPids(controllers), ...(brokers ? brokerPids(brokers) : [])]);
  const closers: (() => Promise<unknown>)[] = [];
  let failed = false;
  try {
    brokers = await BrokerLauncher.start({ controllers: controllers.bootstrap(), ids: [1, 2, 3], rootDir: controllers.rootDir });
    const b = brokers;
    const flotilla = new Flotilla({ brokers: b.bootstrap(), totalTimeoutMs: 20_000 });
    const admin = flotilla.admin();
    closers.push(() => admin.close());
    await eventually('3 unfenced brokers', async () => {
      const c = await admin.describeCluster();
      if (c.brokers.filter((x) => !x.fenced).length !== 3) throw new Error(JSON.stringify(c.brokers));
    }, { timeoutMs: 60_000, intervalMs: 250 });
    await admin.createTopic({ name: TOPIC, partitions: PARTITIONS, replicationFactor: RF, configs: { 'min.insync.replicas': String(MIN_INSYNC) } });
    await waitIsrFull(admin, 30_000);
    const setupMs = Date.now() - t0;
    console.log(`data plane: 3 controllers + 3 brokers up, topic ${TOPIC} (${PARTITIONS} partitions, RF ${RF}, min.insync ${MIN_INSYNC}) in ${setupMs} ms`);

    const quorumBefore = await admin.describeQuorum();
    const sinceMs = Date.now();
    const payload = Buffer.alloc(recordBytes, 0x61);

    const producePhase = async (acks: 'all' | 1 | 0): Promise<ProducePhase> => {
      const producer = flotilla.producer({ acks, lingerMs, batchSizeBytes, ...(acks === 0 ? { retry: { retries: 0 } } : {}) });
      closers.push(() => producer.disconnect());
      await producer.connect();
      const send = () => producer.send({ topic: TOPIC, messages: [{ value: payload }] });
      // Warm-up (connections, metadata, JIT), not measured.
      await runLoad(send, { count: 5_000, inFlight, timeCapMs: 10_000 });
      await producer.flush();
      const highBefore = (await settledHigh(admin, 5_000)).high;
      const cpuBefore = brokerCpu(b);
      const clientBefore = process.cpuUsage();
      const phaseStart = performance.now();
      const stats = await runLoad(send, { count: records, inFlight, timeCapMs: phaseTimeCapMs });
      // acks=0 records may still be on their way into the log (queued in the client's and the
      // broker's buffers: send() resolved when the request was handed to the socket), acks=1
      // ones still replicating. Wait (bounded) until the high watermarks hold every record sent
      // or stop moving for a second, with the producer still connected, and time that too: it
      // is acks=0's real throughput.
      const drained = await settledHigh(admin, 20_000, highBefore + stats.ok);
      const highDrained = drained.high;
      const drainedMs = drained.atMs - phaseStart;
      const clientCpu = process.cpuUsage(clientBefore);
      const cpuAfter = brokerCpu(b);
      await producer.disconnect();
      const highAfter = (await settledHigh(admin, 5_000, highBefore + stats.ok)).high;
      const brokersCpuMs = [...b.nodes.keys()].map((id) => (cpuAfter[id] ?? 0) - (cpuBefore[id] ?? 0));
      const perRecordUs = (ms: number): number => (stats.ok ? round((ms * 1000) / stats.ok, 0) : NaN);
      const phase: ProducePhase = {
        ...stats,
        acks,
        mbPerSec: round((stats.opsPerSec * recordBytes) / 1e6, 1),
        latencyMeaningful: acks !== 0,
        recordsInLog: highAfter - highBefore,
        recordsInLogBeforeDisconnect: highDrained - highBefore,
        untilLogSettledMs: round(drainedMs, 0),
        logRecordsPerSec: round((highDrained - highBefore) / (drainedMs / 1000), 0),
        cpuMs: {
          brokers: Object.fromEntries([...b.nodes.keys()].map((id) => [id, (cpuAfter[id] ?? 0) - (cpuBefore[id] ?? 0)])),
          client: round((clientCpu.user + clientCpu.system) / 1000, 0),
        },
        cpuUsPerRecord: { brokers: perRecordUs(brokersCpuMs.reduce((x, y) => x + y, 0)), client: perRecordUs((clientCpu.user + clientCpu.system) / 1000) },
        loadAverage: round(os.loadavg()[0]!, 2),
      };
      console.log(formatProduce(phase));
      return phase;
    };
    const acksPhases = o.acks ?? ['all', 1, 0];
    const all = acksPhases.includes('all') ? await producePhase('all') : undefined;
    const one = acksPhases.includes(1) ? await producePhase(1) : undefined;
    const zero = acksPhases.includes(0) ? await producePhase(0) : undefined;

    const brokerMemory = Object.fromEntries(
      [...b.nodes.values()].map((n) => [n.id, { rssBytes: rssBytes(n.proc?.pid), peakRssBytes: peakRssBytes(n.proc?.pid) }]),
    );
    console.log(`broker RSS after the produce phases: ${Object.entries(brokerMemory).map(([id, m]) => `${id}: ${mib(m.rssBytes)} (peak ${mib(m.peakRssBytes)})`).join(', ')}`);

    const consume = await consumeAll(flotilla, admin, recordBytes, consumeTimeCapMs);
    console.log(
      `consume from the beginning: ${consume.records}/${consume.expected} records in ${(consume.durationMs / 1000).toFixed(1)} s${consume.timeCapped ? ' (time cap)' : ''}, ` +
        `${consume.recordsPerSec} records/s, ${consume.mbPerSec} MB/s`,
    );

    const failover = await failoverRunsOf(flotilla, admin, controllers, b, payload, failoverRuns, failoverTimeCapMs, closers);

    const quorumAfter = await admin.describeQuorum();
    const controllerLeaderChanges = {
      termBefore: quorumBefore.term,
      termAfter: quorumAfter.term,
      leaderBefore: quorumBefore.leaderId,
      leaderAfter: quorumAfter.leaderId,
      electionsInLogs: electionsInLogs(controllers, sinceMs).length,
    };
    console.log(`controller leader changes during the run: ${controllerLeaderChanges.electionsInLogs} (term ${quorumBefore.term} -> ${quorumAfter.term})`);

    return {
      setup: {
        controllers: 3,
        brokers: 3,
        partitions: PARTITIONS,
        replicationFactor: RF,
        minInsyncReplicas: MIN_INSYNC,
        recordBytes,
        inFlight,
        lingerMs,
        batchSizeBytes,
        maxInFlightRequestsPerPartition: 5,
        brokerSessionTimeoutMs: DEFAULT_BROKER_SESSION_TIMEOUT_MS,
        setupMs,
      },
      produce: { ...(all ? { all } : {}), ...(one ? { one } : {}), ...(zero ? { zero } : {}) },
      consume,
      brokerMemory,
      failover,
      controllerLeaderChanges,
      brokerWarnings: brokerWarningsSince(b, sinceMs),
    };
  } catch (e) {
    // Say which process went away and why, and keep the logs to look at.
    failed = true;
    for (const [id, n] of brokers?.nodes ?? []) {
      if (brokers!.isRunning(id)) continue;
      console.error(`broker ${id} is not running (exit code ${n.proc?.exitCode}, signal ${n.proc?.signalCode}); log tail:\n${brokers!.logOf(id).split('\n').slice(-15).join('\n')}`);
    }
    throw e;
  } finally {
    for (const close of closers.reverse()) await close().catch(() => undefined);
    await brokers?.shutdown();
    const keepData = (o.keepData ?? false) || failed;
    await controllers.shutdown({ keepData });
    if (keepData) console.log(`data and logs kept in ${controllers.rootDir}`);
    unhook();
  }
}

function brokerPids(b: BrokerLauncher): (number | undefined)[] {
  return [...b.nodes.keys()].map((id) => (b.isRunning(id) ? b.nodes.get(id)!.proc!.pid : undefined));
}

function brokerCpu(b: BrokerLauncher): Record<number, number> {
  return Object.fromEntries([...b.nodes.values()].map((n) => [n.id, cpuMs(n.proc?.pid) ?? 0]));
}

async function describe(admin: Admin): Promise<TopicDescription> {
  const [t] = await admin.describeTopics([TOPIC]);
  if (!t) throw new Error(`topic ${TOPIC} not described`);
  return t;
}

/** Until every partition has a leader and all RF replicas in its ISR (bounded). */
async function waitIsrFull(admin: Admin, timeoutMs: number): Promise<void> {
  await eventually(
    `every partition of ${TOPIC} with a full ISR`,
    async () => {
      const t = await describe(admin);
      const short = t.partitions.filter((p) => p.leader < 0 || p.isr.length !== RF);
      if (short.length > 0) throw new Error(short.map((p) => `p${p.partition} leader ${p.leader} isr [${p.isr}]`).join('; '));
    },
    { timeoutMs, intervalMs: 100 },
  );
}

/** Sum of the partitions' high watermarks (records committed so far). */
async function sumHigh(admin: Admin): Promise<number> {
  const offsets = await admin.fetchTopicOffsets(TOPIC, 10_000);
  let sum = 0;
  for (const p of offsets) {
    if (p.error || p.high === undefined) throw new Error(`offsets of ${TOPIC}-${p.partition}: ${p.error?.message}`);
    sum += p.high;
  }
  return sum;
}

/**
 * The high-watermark sum once it reached `target` or stopped growing for `quietMs`, bounded by
 * `timeoutMs`; `atMs` is when it last grew (performance.now()), i.e. when the log caught up.
 */
async function settledHigh(admin: Admin, timeoutMs: number, target = Infinity, quietMs = 1_000): Promise<{ high: number; atMs: number }> {
  const deadline = Date.now() + timeoutMs;
  let last = await sumHigh(admin);
  let atMs = performance.now();
  while (last < target && Date.now() < deadline && performance.now() - atMs < quietMs) {
    await sleep(100);
    const now = await sumHigh(admin);
    if (now !== last) atMs = performance.now();
    last = now;
  }
  return { high: last, atMs };
}

async function consumeAll(flotilla: Flotilla, admin: Admin, recordBytes: number, timeCapMs: number): Promise<DataPlaneResult['consume']> {
  const expected = await sumHigh(admin);
  const consumer = flotilla.consumer({ autoOffsetReset: 'earliest' });
  await consumer.connect();
  let records = 0;
  let bytes = 0;
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  let timeCapped = false;
  try {
    consumer.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic: TOPIC, partition })));
    for (let partition = 0; partition < PARTITIONS; partition++) consumer.seek({ topic: TOPIC, partition, offset: 'earliest' });
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        timeCapped = true;
        resolve();
      }, timeCapMs);
      consumer
        .run({
          eachMessage: ({ message }) => {
            records++;
            bytes += message.value?.length ?? 0;
            if (records >= expected) resolve();
          },
        })
        .then(() => consumer.join())
        .catch(reject);
    });
  } finally {
    clearTimeout(timer);
    await consumer.disconnect().catch(() => undefined);
  }
  const durationMs = performance.now() - t0;
  return {
    records,
    expected,
    durationMs: round(durationMs, 1),
    timeCapped,
    recordsPerSec: round(records / (durationMs / 1000), 0),
    mbPerSec: round((records * recordBytes) / 1e6 / (durationMs / 1000), 1),
    loadAverage: round(os.loadavg()[0]!, 2),
  };
}

/** Time (ms since the epoch) of the first JSON log line at or after `sinceMs` matching `match`. */
function firstLogTime(lines: Record<string, unknown>[], sinceMs: number, match: (l: Record<string, unknown>) => boolean): number | undefined {
  for (const l of lines) {
    const t = Number(l.time);
    if (t >= sinceMs && match(l)) return t;
  }
  return undefined;
}

function controllerLogLines(controllers: ControllerCluster): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const id of controllers.nodes.keys()) {
    for (const line of controllers.logOf(id).split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // torn line of a killed process
      }
    }
  }
  return out.sort((a, b) => Number(a.time) - Number(b.time));
}

async function failoverRunsOf(
  flotilla: Flotilla,
  admin: Admin,
  controllers: ControllerCluster,
  b: BrokerLauncher,
  payload: Buffer,
  runsWanted: number,
  timeCapMs: number,
  closers: (() => Promise<unknown>)[],
): Promise<DataPlaneResult['failover']> {
  const deadline = Date.now() + timeCapMs;
  const runs: FailoverRun[] = [];
  const errors: string[] = [];
  let timeCapped = false;
  // Client-side retry knobs shortened so the client's backoff does not hide the cluster's
  // recovery (as the JetStream probe retries every 20 ms); server-side timeouts are defaults.
  const probe: Producer = flotilla.producer({
    acks: 'all',
    lingerMs: 0,
    timeoutMs: PROBE.requestTimeoutMs - 500,
    requestTimeoutMs: PROBE.requestTimeoutMs,
    deliveryTimeoutMs: 60_000,
    retry: { backoffInitialMs: PROBE.retryBackoffInitialMs, backoffMaxMs: PROBE.retryBackoffMaxMs },
  });
  closers.push(() => probe.disconnect());
  await probe.connect();
  for (let run = 0; run < runsWanted; run++) {
    if (Date.now() > deadline) {
      timeCapped = true;
      break;
    }
    try {
      const partition = run % PARTITIONS;
      await waitIsrFull(admin, 60_000);
      await probe.send({ topic: TOPIC, messages: [{ value: payload, partition }] });
      const before = (await describe(admin)).partitions[partition]!;
      const killed = before.leader;
      const t0 = Date.now();
      await b.kill(killed, 'SIGKILL');
      const ackDeadline = t0 + 60_000;
      for (;;) {
        try {
          await probe.send({ topic: TOPIC, messages: [{ value: payload, partition }] });
          break;
        } catch (e) {
          if (Date.now() > ackDeadline) throw new Error(`no acks=all produce to ${TOPIC}-${partition} within 60 s of killing broker ${killed}: ${String(e)}`);
          await sleep(20);
        }
      }
      const ackAt = Date.now();
      const after = (await describe(admin)).partitions[partition]!;
      const fencedAt = firstLogTime(
        controllerLogLines(controllers),
        t0,
        (l) => String(l.msg).startsWith('fencing brokers') && Array.isArray(l.brokers) && (l.brokers as number[]).includes(killed),
      );
      const leaderAt = firstLogTime(b.logLines(after.leader), t0, (l) => String(l.msg).startsWith(`became leader of ${TOPIC}-${partition} `));
      const r0 = Date.now();
      b.spawn(killed);
      await waitIsrFull(admin, 60_000);
      const r: FailoverRun = {
        partition,
        killedBroker: killed,
        newLeader: after.leader,
        totalMs: ackAt - t0,
        ...(fencedAt !== undefined ? { killToFencedMs: fencedAt - t0 } : {}),
        ...(fencedAt !== undefined && leaderAt !== undefined ? { fencedToLeaderMs: leaderAt - fencedAt } : {}),
        ...(leaderAt !== undefined ? { leaderToAckMs: ackAt - leaderAt } : {}),
        restoreMs: Date.now() - r0,
      };
      runs.push(r);
      console.log(
        `failover run ${run + 1}/${runsWanted}: killed broker ${killed} (leader of p${partition}), new leader ${r.newLeader}, ` +
          `first acks=all ack after ${r.totalMs} ms (fenced +${r.killToFencedMs ?? '?'} ms, leader +${r.fencedToLeaderMs ?? '?'} ms, ack +${r.leaderToAckMs ?? '?'} ms); ISR full again ${r.restoreMs} ms after respawn`,
      );
    } catch (e) {
      errors.push(String((e as Error)?.message ?? e));
      console.error(`failover run ${run + 1} failed: ${String(e)}`);
      // Leave the cluster whole for the next run, or give up.
      for (const id of b.nodes.keys()) if (!b.isRunning(id)) b.spawn(id);
    }
  }
  const med = (xs: (number | undefined)[]): number => round(median(xs.filter((x): x is number => x !== undefined)), 0);
  return {
    runs,
    requested: runsWanted,
    medianMs: med(runs.map((r) => r.totalMs)),
    maxMs: runs.length ? Math.max(...runs.map((r) => r.totalMs)) : NaN,
    medianKillToFencedMs: med(runs.map((r) => r.killToFencedMs)),
    medianFencedToLeaderMs: med(runs.map((r) => r.fencedToLeaderMs)),
    medianLeaderToAckMs: med(runs.map((r) => r.leaderToAckMs)),
    probe: PROBE,
    timeCapped,
    errors,
  };
}

function brokerWarningsSince(b: BrokerLauncher, sinceMs: number, max = 20): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const id of b.nodes.keys()) {
    for (const l of b.logLines(id)) {
      if (Number(l.level ?? 0) < 40 || Number(l.time ?? 0) < sinceMs) continue;
      const k = `broker ${id}: ${String(l.msg ?? '').slice(0, 120)}`;
      if (counts[k] === undefined && Object.keys(counts).length >= max) continue;
      counts[k] = (counts[k] ?? 0) + 1;
    }
  }
  return counts;
}

export function formatProduce(p: ProducePhase): string {
  const head = `flotilla produce acks=${p.acks}, ${p.inFlight} in flight: ${p.ok}/${p.requested} in ${(p.durationMs / 1000).toFixed(1)} s${p.timeCapped ? ' (time cap)' : ''}, ${p.opsPerSec.toFixed(0)} records/s, ${p.mbPerSec} MB/s`;
  const lat = p.latencyMeaningful ? `, p50 ${p.p50Ms.toFixed(1)} ms, p99 ${p.p99Ms.toFixed(1)} ms, p999 ${p.p999Ms.toFixed(1)} ms` : '';
  const errs = Object.entries(p.errors).map(([k, v]) => `${k}×${v}`).join(', ');
  const cpu =
    `CPU s: brokers ${Object.values(p.cpuMs.brokers).map((x) => (x / 1000).toFixed(1)).join('/')}, client ${(p.cpuMs.client / 1000).toFixed(1)}` +
    ` (µs per record: brokers ${p.cpuUsPerRecord.brokers}, client ${p.cpuUsPerRecord.client})`;
  const log =
    p.acks === 0
      ? `; in the log ${p.recordsInLogBeforeDisconnect} after ${(p.untilLogSettledMs / 1000).toFixed(1)} s = ${p.logRecordsPerSec} records/s, ${p.recordsInLog} after disconnect`
      : `; in the log: ${p.recordsInLog}`;
  return `${head}${lat}${log}; ${cpu}; load ${p.loadAverage}${errs ? `; errors: ${errs}` : ''}`;
}

export function formatDataPlane(r: DataPlaneResult): string[] {
  const s = r.setup;
  const f = r.failover;
  return [
    `data plane: ${s.brokers} brokers, ${s.partitions} partitions, RF ${s.replicationFactor}, min.insync ${s.minInsyncReplicas}, ${s.recordBytes} B records, ${s.inFlight} in flight, lingerMs ${s.lingerMs}, batchSizeBytes ${s.batchSizeBytes}`,
    ...[r.produce.all, r.produce.one, r.produce.zero].filter((p): p is ProducePhase => p !== undefined).map((p) => `  ${formatProduce(p)}`),
    `  consume from the beginning: ${r.consume.records}/${r.consume.expected} records, ${r.consume.recordsPerSec} records/s, ${r.consume.mbPerSec} MB/s${r.consume.timeCapped ? ' (time cap)' : ''}`,
    `  broker RSS: ${Object.entries(r.brokerMemory).map(([id, m]) => `${id}: ${mib(m.rssBytes)}`).join(', ')}`,
    `  failover (kill -9 partition leader -> first acks=all ack), ${f.runs.length}/${f.requested} runs: median ${f.medianMs} ms, max ${f.maxMs} ms; ` +
      `median kill->fenced ${f.medianKillToFencedMs} ms (session timeout ${s.brokerSessionTimeoutMs} ms; a dead process is fenced ~1 s after its connection closes), fenced->new leader ${f.medianFencedToLeaderMs} ms, new leader->ack ${f.medianLeaderToAckMs} ms` +
      (f.errors.length ? `; ${f.errors.length} runs failed` : ''),
    `  controller leader changes: ${r.controllerLeaderChanges.electionsInLogs} (term ${r.controllerLeaderChanges.termBefore} -> ${r.controllerLeaderChanges.termAfter})`,
  ];
}

function badAcks(a: string): never {
  throw new Error(`--acks takes a comma-separated list of all, 1, 0; got ${a}`);
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  benchDataPlane({
    records: argNumber(argv, 'records', 300_000),
    inFlight: argNumber(argv, 'in-flight', 512),
    recordBytes: argNumber(argv, 'record-bytes', 1024),
    lingerMs: argNumber(argv, 'linger-ms', 5),
    batchSizeBytes: argNumber(argv, 'batch-size-bytes', 65_536),
    phaseTimeCapMs: argNumber(argv, 'phase-time-cap-s', 20) * 1000,
    consumeTimeCapMs: argNumber(argv, 'consume-time-cap-s', 30) * 1000,
    failoverRuns: argNumber(argv, 'failover-runs', 10),
    failoverTimeCapMs: argNumber(argv, 'failover-time-cap-s', 240) * 1000,
    keepData: argFlag(argv, 'keep-data'),
    ...(argv.includes('--acks')
      ? { acks: argv[argv.indexOf('--acks') + 1]!.split(',').map((a) => (a === 'all' ? 'all' : a === '1' ? 1 : a === '0' ? 0 : badAcks(a))) }
      : {}),
  })
    .then((r) => {
      for (const l of formatDataPlane(r)) console.log(l);
      console.log(JSON.stringify(r));
      process.exit(0);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
