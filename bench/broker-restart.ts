import * as fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { InProcessCluster, waitFor } from '../test/broker/in-process-cluster';

// How long a broker hosting many single-partition topics takes to come back after a restart
// (the chaos suite's slow recovery after `stop`): time until it is unfenced, until every
// replica is open, the longest event-loop stall meanwhile and the CPU it used (of the whole
// process: with more than one broker, the others' leader side counts too). One controller and
// 1..5 brokers in this process. Bounded: at most 10,000 topics, each wait capped in time.
//
// Usage: node dist/bench/broker-restart.js [topics=2000] [brokers=1 (also the replication factor)]
// Profile of the restart only: BENCH_CPU_PROFILE=out.cpuprofile (then bench/cpuprofile-top.js).

async function main(): Promise<void> {
  const topics = Math.min(10_000, Number(process.argv[2] ?? 2000));
  const brokers = Math.min(5, Number(process.argv[3] ?? 1));
  const cluster = await InProcessCluster.start();
  try {
    for (let id = 1; id <= brokers; id++) await cluster.startBroker(id);
    for (let id = 1; id <= brokers; id++) await cluster.brokers.get(id)!.whenUnfenced();
    const admin = cluster.admin(cluster.bootstrap());
    const createStart = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < topics) {
          const i = next++;
          await admin.createTopic({ name: `t${i}`, partitions: 1, replicationFactor: brokers });
        }
      }),
    );
    const allOpen = (id: number): boolean => cluster.brokers.get(id)!.replicas().filter((r) => r.role === 'leader' || r.role === 'follower').length === topics;
    await waitFor('all replicas open', () => allOpen(1), { timeoutMs: 300_000, intervalMs: 500 });
    console.log(`created ${topics} topics in ${Date.now() - createStart} ms`);
    await cluster.stopBroker(1);

    const profileFile = process.env['BENCH_CPU_PROFILE'];
    const session = profileFile !== undefined ? new Session() : undefined;
    if (session !== undefined) {
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.start');
    }
    const h = monitorEventLoopDelay({ resolution: 10 });
    h.enable();
    const cpu0 = process.cpuUsage();
    const t0 = Date.now();
    const b = await cluster.startBroker(1);
    await b.whenUnfenced();
    const unfencedMs = Date.now() - t0;
    await waitFor('all replicas open', () => allOpen(1), { timeoutMs: 300_000, intervalMs: 250 });
    const openMs = Date.now() - t0;
    await b.replicaManager.settled();
    const settledMs = Date.now() - t0;
    h.disable();
    const cpu = process.cpuUsage(cpu0);
    if (session !== undefined) {
      const { profile } = await session.post('Profiler.stop');
      fs.writeFileSync(profileFile!, JSON.stringify(profile));
      session.disconnect();
    }
    console.log(
      JSON.stringify({
        topics,
        unfencedMs,
        allLeadersOpenMs: openMs,
        settledMs,
        cpuMs: Math.round((cpu.user + cpu.system) / 1000),
        eventLoopMaxStallMs: Math.round(h.max / 1e6),
        eventLoopP99Ms: Math.round(h.percentile(99) / 1e6),
      }),
    );
  } finally {
    await cluster.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
