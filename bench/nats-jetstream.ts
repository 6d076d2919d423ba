import { connect, JetStreamClient, JetStreamManager, NatsConnection, StorageType } from 'nats';
import { LoadStats, argFlag, argNumber, cpuMs, formatLoad, killOnExit, median, round, runLoad, sleep } from './bench-support';
import { NatsCluster, ensureNats } from './nats-cluster';

// The reference side of the data-plane benchmark (issue 3 §8): a 3-node NATS JetStream
// cluster, one file-storage stream with 3 replicas, driven by the `nats` client with 1 KiB
// records and a fixed number of publishes in flight (each publish waits for its PubAck,
// which JetStream sends once a quorum of the stream's replicas stored it: acks=all's peer).
// Also the failover time: kill -9 the stream leader, time to the next acknowledged publish.
//
// Usage: node dist/bench/nats-jetstream.js [--records 50000] [--in-flight 512]
//          [--record-bytes 1024] [--failover-runs 10] [--time-cap-s 30] [--install-nats]

export interface NatsOptions {
  readonly records?: number;
  readonly inFlight?: number;
  readonly recordBytes?: number;
  readonly failoverRuns?: number;
  readonly timeCapMs?: number;
  readonly installNats?: boolean;
}

export interface NatsResult {
  readonly version: string;
  readonly produce: LoadStats & {
    readonly mbPerSec: number;
    readonly recordBytes: number;
    /** CPU per acknowledged record, µs: the 3 nats-servers together, and this client process (steadier than the rate on a shared machine). */
    readonly cpuUsPerRecord: { readonly servers: number; readonly client: number };
  };
  readonly failover: { readonly runsMs: number[]; readonly medianMs: number; readonly maxMs: number };
}

const STREAM = 'FLOTILLA_BENCH';

async function streamLeader(jsm: JetStreamManager): Promise<string | undefined> {
  const info = await jsm.streams.info(STREAM);
  return info.cluster?.leader;
}

/** Waits until the stream has a leader and every replica is current (bounded). */
async function waitStreamHealthy(jsm: JetStreamManager, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const info = await jsm.streams.info(STREAM);
      const replicas = info.cluster?.replicas ?? [];
      if (info.cluster?.leader && replicas.length === 2 && replicas.every((r) => r.current && !r.offline)) return;
      last = JSON.stringify(info.cluster);
    } catch (e) {
      last = String(e);
    }
    await sleep(200);
  }
  throw new Error(`JetStream stream not healthy within ${timeoutMs} ms: ${last}`);
}

export async function benchNats(o: NatsOptions = {}): Promise<NatsResult | { skipped: string }> {
  const ensured = ensureNats({ install: o.installNats ?? false });
  if ('unavailable' in ensured) return { skipped: ensured.unavailable };
  const records = o.records ?? 50_000;
  const inFlight = o.inFlight ?? 512;
  const recordBytes = o.recordBytes ?? 1024;
  const failoverRuns = o.failoverRuns ?? 10;
  const timeCapMs = o.timeCapMs ?? 30_000;

  const cluster = await NatsCluster.start(3);
  const unhook = killOnExit(() => cluster.pids());
  let nc: NatsConnection | undefined;
  try {
    nc = await connectWithin(cluster.servers(), 20_000);
    const jsm = await managerWithin(nc, 30_000);
    await addStreamWithin(jsm, 30_000);
    await waitStreamHealthy(jsm, 30_000);
    const js: JetStreamClient = nc.jetstream({ timeout: 10_000 });
    const payload = Buffer.alloc(recordBytes, 0x61);

    // Warm-up, then the measured phase.
    await runLoad(() => js.publish('bench.w', payload), { count: 2_000, inFlight, timeCapMs: 10_000 });
    const serverCpu = (): number => cluster.pids().reduce<number>((sum, pid) => sum + (cpuMs(pid) ?? 0), 0);
    const serversBefore = serverCpu();
    const clientBefore = process.cpuUsage();
    const stats = await runLoad((i) => js.publish(`bench.${i % 6}`, payload), { count: records, inFlight, timeCapMs });
    const client = process.cpuUsage(clientBefore);
    const perRecordUs = (ms: number): number => (stats.ok ? round((ms * 1000) / stats.ok, 0) : NaN);
    const produce = {
      ...stats,
      recordBytes,
      mbPerSec: round((stats.opsPerSec * recordBytes) / 1e6, 1),
      cpuUsPerRecord: { servers: perRecordUs(serverCpu() - serversBefore), client: perRecordUs((client.user + client.system) / 1000) },
    };
    console.log(
      formatLoad(`nats jetstream R3 publish ${recordBytes} B, ${inFlight} in flight`, produce) +
        `, ${produce.mbPerSec} MB/s; CPU µs per record: servers ${produce.cpuUsPerRecord.servers}, client ${produce.cpuUsPerRecord.client}`,
    );

    // Failover: kill -9 the stream leader, publish (1 in flight, short timeouts) until acked.
    const runsMs: number[] = [];
    const quick = nc.jetstream({ timeout: 500 });
    for (let run = 0; run < failoverRuns; run++) {
      await waitStreamHealthy(jsm, 60_000);
      const leader = await streamLeader(jsm);
      if (!leader) throw new Error('no stream leader');
      await quick.publish('bench.f', payload);
      const t0 = performance.now();
      await cluster.kill(leader);
      const deadline = t0 + 60_000;
      for (;;) {
        try {
          await quick.publish('bench.f', payload);
          break;
        } catch {
          if (performance.now() > deadline) throw new Error('JetStream did not resume acks within 60 s of the leader kill');
          await sleep(20);
        }
      }
      const ms = round(performance.now() - t0, 1);
      runsMs.push(ms);
      console.log(`nats failover run ${run + 1}/${failoverRuns}: killed ${leader}, acks resumed after ${ms} ms`);
      cluster.spawn(cluster.node(leader));
    }
    return {
      version: ensured.version,
      produce,
      failover: { runsMs, medianMs: round(median(runsMs), 1), maxMs: Math.max(...runsMs) },
    };
  } finally {
    await nc?.close().catch(() => undefined);
    await cluster.stop();
    unhook();
  }
}

async function connectWithin(servers: string[], timeoutMs: number): Promise<NatsConnection> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connect({ servers, maxReconnectAttempts: -1, reconnectTimeWait: 100, timeout: 2_000 });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(200);
    }
  }
}

/** The JetStream manager, once JetStream answers (its meta leader is elected after start). */
async function managerWithin(nc: NatsConnection, timeoutMs: number): Promise<JetStreamManager> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await nc.jetstreamManager({ timeout: 2_000 });
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(500);
    }
  }
}

async function addStreamWithin(jsm: JetStreamManager, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await jsm.streams.add({ name: STREAM, subjects: ['bench.>'], storage: StorageType.File, num_replicas: 3 });
      return;
    } catch (e) {
      // JetStream needs its meta leader elected first ("insufficient resources" until then).
      if (Date.now() > deadline) throw e;
      await sleep(500);
    }
  }
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  benchNats({
    records: argNumber(argv, 'records', 50_000),
    inFlight: argNumber(argv, 'in-flight', 512),
    recordBytes: argNumber(argv, 'record-bytes', 1024),
    failoverRuns: argNumber(argv, 'failover-runs', 10),
    timeCapMs: argNumber(argv, 'time-cap-s', 30) * 1000,
    installNats: argFlag(argv, 'install-nats'),
  })
    .then((r) => {
      console.log(JSON.stringify(r));
      process.exit(0);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}
