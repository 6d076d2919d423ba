import * as os from 'node:os';
import { Flotilla } from '../client';
import { ControllerCluster, eventually } from '../test/integration/controller-launcher';
import { StandInBrokers } from '../test/integration/stand-in-brokers';

// Controller failover (issue 2 §6): time from kill -9 of the active controller to the
// first successful metadata write (a CreateTopic), with the default Raft timeouts.
// Usage: node dist/bench/controller-failover.js [runs=10]

export interface FailoverResult {
  runs: number;
  samplesMs: number[];
  medianMs: number;
  maxMs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export async function benchFailover(runs: number): Promise<FailoverResult> {
  const cluster = await ControllerCluster.start({ size: 3 });
  // Aggressive client retries so the client, not its backoff, is what we measure.
  const admin = new Flotilla({ bootstrap: cluster.bootstrap(), backoffInitialMs: 10, backoffMaxMs: 20, requestTimeoutMs: 250, totalTimeoutMs: 30_000, attemptsMax: 10_000 }).admin();
  const brokers = new StandInBrokers(cluster.bootstrap(), [1]);
  const samplesMs: number[] = [];
  try {
    await eventually('a leader', async () => {
      const q = await admin.describeQuorum();
      if (!q.leaderId) throw new Error('no leader');
    });
    await brokers.register();
    brokers.start(300);
    for (let run = 0; run < runs; run++) {
      await admin.createTopic({ name: `warm-${run}`, partitions: 1, replicationFactor: 1 });
      const { leaderId } = await admin.describeQuorum();
      const t0 = process.hrtime.bigint();
      await cluster.kill(leaderId, 'SIGKILL');
      await admin.createTopic({ name: `after-failover-${run}`, partitions: 1, replicationFactor: 1 });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      samplesMs.push(ms);
      console.log(`run ${run + 1}/${runs}: killed controller ${leaderId}, first write after ${ms.toFixed(0)} ms`);
      cluster.spawn(leaderId);
      // Let the restarted controller catch up so every run starts from a healthy quorum.
      await eventually('the restarted controller to catch up', async () => {
        const q = await admin.describeQuorum();
        if (!q.fromLeader || q.voters.some((v) => v.lag !== 0)) throw new Error('lagging');
      }, { timeoutMs: 30_000 });
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    brokers.stop();
    await admin.close();
    await cluster.shutdown();
  }
  return { runs, samplesMs, medianMs: median(samplesMs), maxMs: Math.max(...samplesMs) };
}

if (require.main === module) {
  const runs = Number(process.argv[2] ?? 10);
  benchFailover(runs).then(
    (r) => {
      console.log(`controller failover over ${r.runs} runs on ${os.cpus().length} cores (${os.cpus()[0]?.model}): median ${r.medianMs.toFixed(0)} ms, max ${r.maxMs.toFixed(0)} ms`);
      console.log(JSON.stringify(r));
    },
    (e) => {
      console.error(e);
      process.exit(1);
    },
  );
}
