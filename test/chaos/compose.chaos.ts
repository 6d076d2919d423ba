import { expect } from 'chai';
import * as path from 'node:path';
import { partitionForKey } from '../../client/partitioner';
import { run } from './docker';
import { sleep } from './cluster';

// The compose cluster end to end, from the host, as a user would drive it (make chaos runs
// this; it needs Docker and the image, which `make image` builds). It brings
// deploy/compose/docker-compose.yml up under its own project name and host ports, uses the
// `flotilla` CLI through the published ports — admin, then produce and consume, which need
// the brokers' advertised addresses (127.0.0.1:<published port>) to reach every partition
// leader from the host — kills a broker and reads the fencing in `flotilla events` and
// `topics describe`, produces and consumes without it, brings it back, and takes
// everything down.

const REPO = path.resolve(__dirname, '..', '..', '..');
const COMPOSE = [path.join(REPO, 'deploy/scripts/compose.sh'), '-p', 'flotilla-compose-test', '-f', path.join(REPO, 'deploy/compose/docker-compose.yml')];
const CLI = path.join(REPO, 'dist/cli/main.js');
// Off the defaults (9093.., 9193..), so a developer's own `make compose-up` or `make up` can run beside it.
const PORTS = { FLOTILLA_CONTROLLER_1_PORT: '29093', FLOTILLA_CONTROLLER_2_PORT: '29094', FLOTILLA_CONTROLLER_3_PORT: '29095', FLOTILLA_BROKER_1_PORT: '29193', FLOTILLA_BROKER_2_PORT: '29194', FLOTILLA_BROKER_3_PORT: '29195' };
const BOOTSTRAP = Object.values(PORTS).map((p) => `127.0.0.1:${p}`).join(',');
/** The controllers' broker session timeout is 9 s: fencing is seen well within this. */
const FENCE_WAIT_MS = 30_000;

function compose(args: string[], timeoutMs = 180_000): Promise<string> {
  const env = { ...process.env, ...PORTS };
  return new Promise((resolve, reject) => {
    require('node:child_process').execFile(COMPOSE[0], [...COMPOSE.slice(1), ...args], { env, timeout: timeoutMs }, (err: Error | null, stdout: string, stderr: string) =>
      err ? reject(new Error(`compose ${args.join(' ')}: ${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

function flotilla(...args: string[]): Promise<string> {
  return run(process.execPath, [CLI, '--bootstrap', BOOTSTRAP, '--timeout-ms', '10000', ...args], 30_000);
}

/** `flotilla produce` with these lines on stdin (exits non-zero if any is not acknowledged). */
function produce(topic: string, key: string, lines: readonly string[], ...flags: string[]): Promise<string> {
  return run(process.execPath, [CLI, '--bootstrap', BOOTSTRAP, '--timeout-ms', '10000', 'produce', topic, '--key', key, ...flags], 60_000, `${lines.join('\n')}\n`);
}

/** Every value of the topic, from the beginning (stops after `max`, or 5 s of silence). */
async function consumeAll(topic: string, max: number): Promise<string[]> {
  const out = await run(process.execPath, [CLI, '--bootstrap', BOOTSTRAP, '--timeout-ms', '10000', 'consume', topic, '--from-beginning', '--max', String(max + 1), '--timeout-ms', '5000'], 60_000);
  return out.split('\n').filter((l) => l.length > 0);
}

/** One key per partition of a 3-partition topic (murmur2, as the producer places them). */
const KEYS_PER_PARTITION = ((): string[] => {
  const keys: string[] = [];
  for (let i = 0; i < 100 && keys.length < 3; i++) {
    if (partitionForKey(Buffer.from(`k${i}`), 3) === keys.length) keys.push(`k${i}`);
  }
  return keys;
})();

async function flotillaJson<T>(...args: string[]): Promise<T> {
  return JSON.parse(await flotilla('--json', ...args)) as T;
}

/** Polls `probe` (bounded) until it returns a value; the last error explains a timeout. */
async function eventually<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (let i = 0; Date.now() < deadline && i < 1_000; i++) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = (e as Error).message;
    }
    await sleep(500);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${last})` : ''}`);
}

interface Broker {
  id: number;
  fenced: boolean;
}
interface Partition {
  partition: number;
  leader: number;
  isr: number[];
  status: string;
  why?: string;
  highWatermark?: number;
}

const sorted = (xs: readonly string[]): string[] => [...xs].sort();

describe('compose cluster (deploy/compose/docker-compose.yml) from the host', function () {
  this.timeout(600_000);

  before(async () => {
    await compose(['down', '-v', '--remove-orphans']).catch(() => undefined);
    await compose(['up', '-d']);
  });

  after(async () => {
    await compose(['down', '-v', '--remove-orphans']);
  });

  it('serves the admin API through the published ports: a leader, three unfenced brokers, a topic created and described', async () => {
    const brokers = await eventually('3 unfenced brokers', 90_000, async () => {
      const c = await flotillaJson<{ controllerId: number; brokers: Broker[] }>('cluster', 'describe');
      return c.controllerId > 0 && c.brokers.filter((b) => !b.fenced).length === 3 ? c.brokers : undefined;
    });
    expect(brokers.map((b) => b.id).sort()).to.deep.equal([1, 2, 3]);
    const quorum = await flotillaJson<{ leaderId: number; voters: unknown[] }>('quorum', 'status');
    expect(quorum.leaderId).to.be.within(1, 3);
    expect(quorum.voters).to.have.length(3);

    expect(await flotilla('topics', 'create', 'orders', '--partitions', '3', '--replication-factor', '3', '--config', 'min.insync.replicas=2')).to.match(/created topic orders \(3 partitions/);
    const [topic] = await flotillaJson<Array<{ name: string; partitions: Partition[] }>>('topics', 'describe', 'orders');
    expect(topic.partitions.map((p) => p.status)).to.deep.equal(['online', 'online', 'online']);
  });

  const sent: string[] = [];

  it('produces from the host to every partition leader (acks=all, idempotent) and consumes every value back', async () => {
    expect(KEYS_PER_PARTITION).to.have.length(3);
    // The leaders are spread over the three brokers: each is reached at its advertised address.
    const [before] = await flotillaJson<Array<{ partitions: Partition[] }>>('topics', 'describe', 'orders');
    expect(new Set(before.partitions.map((p) => p.leader)).size).to.equal(3);
    for (const [p, key] of KEYS_PER_PARTITION.entries()) {
      const lines = Array.from({ length: 50 }, (_, i) => `host-p${p}-${i}`);
      await produce('orders', key, lines, '--acks', 'all', '--idempotent');
      sent.push(...lines);
    }
    const [after] = await flotillaJson<Array<{ partitions: Partition[] }>>('topics', 'describe', 'orders');
    expect(after.partitions.map((p) => p.highWatermark)).to.deep.equal([50, 50, 50]);
    expect(sorted(await consumeAll('orders', sent.length))).to.deep.equal(sorted(sent));
  });

  it('a killed broker is fenced, its leaderships move, `flotilla events` says why; started again it is unfenced', async () => {
    await compose(['kill', 'broker-2']);
    const events = await eventually('broker 2 fenced in the event log', FENCE_WAIT_MS, async () => {
      const es = await flotillaJson<Array<{ text: string }>>('events', '--max', '1000');
      return es.some((e) => /broker 2 fenced/.test(e.text)) ? es : undefined;
    });
    expect(events.map((e) => e.text).join('\n')).to.match(/orders-\d: ISR \[[\d,]*2[\d,]*\] -> \[[13,]+\]; broker 2 fenced/);
    const [topic] = await flotillaJson<Array<{ partitions: Partition[] }>>('topics', 'describe', 'orders');
    for (const p of topic.partitions) {
      expect(p.leader, `partition ${p.partition} led by the killed broker`).to.not.equal(2);
      expect(p.isr).to.not.include(2);
      expect(p.status).to.equal('under-replicated');
      expect(p.why).to.match(/broker 2 fenced/);
    }

    // Two in-sync replicas of three still meet min.insync.replicas=2: acks=all works.
    for (const key of KEYS_PER_PARTITION) {
      const lines = Array.from({ length: 10 }, (_, i) => `without-2-${key}-${i}`);
      await produce('orders', key, lines, '--acks', 'all');
      sent.push(...lines);
    }
    expect(sorted(await consumeAll('orders', sent.length))).to.deep.equal(sorted(sent));

    await compose(['start', 'broker-2']);
    await eventually('broker 2 unfenced again', 60_000, async () => {
      const c = await flotillaJson<{ brokers: Broker[] }>('cluster', 'describe');
      return c.brokers.find((b) => b.id === 2 && !b.fenced);
    });
  });
});
