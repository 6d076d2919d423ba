import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';
import { Admin, Flotilla, TopicDescription } from '../../client';
import { BrokerLauncher } from './broker-launcher';
import { ControllerCluster, eventually } from './controller-launcher';

// Three real controller processes and three real broker processes on loopback (issue 3 §1).
// Clients use broker addresses only. Each test names the property it checks; they share one
// cluster and run in order (a broker killed in one is restarted in the next).

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');
/** Short, so fencing happens within a test; brokers heartbeat every second. */
const SESSION_TIMEOUT_MS = 5_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env };
    delete env.FLOTILLA_BOOTSTRAP;
    execFile(process.execPath, [CLI, ...args], { env, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

async function cliJson<T>(args: readonly string[]): Promise<T> {
  const r = await cli([...args, '--json']);
  if (r.code !== 0) throw new Error(`flotilla ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

describe('brokers with a controller quorum (real processes)', function () {
  this.timeout(120_000);
  let controllers: ControllerCluster;
  let brokers: BrokerLauncher;
  let admin: Admin;

  before(async () => {
    controllers = await ControllerCluster.start({ size: 3, extraArgs: ['--broker-session-timeout-ms', String(SESSION_TIMEOUT_MS)] });
    brokers = await BrokerLauncher.start({ controllers: controllers.bootstrap(), ids: [1, 2, 3], rootDir: controllers.rootDir });
    admin = new Flotilla({ bootstrap: brokers.bootstrap(), totalTimeoutMs: 20_000 }).admin();
  });

  after(async () => {
    await admin?.close();
    await brokers?.shutdown();
    await controllers?.shutdown();
  });

  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const id of brokers.nodes.keys()) console.error(`--- broker ${id} log tail ---\n${brokers.logOf(id).split('\n').slice(-20).join('\n')}`);
    for (const id of controllers.nodes.keys()) console.error(`--- controller ${id} log tail ---\n${controllers.logOf(id).split('\n').slice(-20).join('\n')}`);
  });

  /** Broker ids the controller lists as unfenced, asked through a broker. */
  async function unfenced(via: Admin = admin): Promise<number[]> {
    const c = await via.describeCluster();
    return c.brokers.filter((b) => !b.fenced).map((b) => b.id);
  }

  it('registers every broker at its address and unfences it', async () => {
    await eventually('three unfenced brokers', async () => {
      const ids = await unfenced();
      if (ids.length !== 3) throw new Error(`unfenced: ${ids}`);
    }, { timeoutMs: 30_000 });
    const c = await admin.describeCluster();
    expect(c.brokers.map((b) => `${b.id}@${b.host}:${b.port}`)).to.deep.equal([1, 2, 3].map((id) => `${id}@${brokers.addressOf(id)}`));
    for (const id of [1, 2, 3]) {
      const lines = brokers.logLines(id).map((l) => String(l.msg));
      expect(lines).to.include(`broker ${id} is unfenced`);
    }
  });

  it('serves admin calls on a broker address: create, describe, list, delete, and typed errors as a controller gives them', async () => {
    const broker = brokers.addressOf(2);
    const created = await cli(['topics', 'create', 'admin-demo', '--partitions', '3', '--replication-factor', '3', '--bootstrap', broker]);
    expect(created.code, created.stderr).to.equal(0);
    expect(created.stdout).to.match(/^created topic admin-demo \(3 partitions, id /);
    const [t] = await cliJson<TopicDescription[]>(['topics', 'describe', 'admin-demo', '--bootstrap', broker]);
    expect(t!.partitions.map((p) => p.replicas.length)).to.deep.equal([3, 3, 3]);
    expect(await cliJson<string[]>(['topics', 'list', '--bootstrap', broker])).to.include('admin-demo');

    const bad: [string[], string][] = [
      [['topics', 'create', 'bad name!', '--partitions', '1', '--replication-factor', '1'], 'INVALID_TOPIC_NAME'],
      [['topics', 'create', 'huge', '--partitions', '1000000', '--replication-factor', '1'], 'INVALID_PARTITIONS'],
      [['topics', 'create', 'rf', '--partitions', '1', '--replication-factor', '4'], 'INVALID_REPLICATION_FACTOR'],
      [['topics', 'create', 'cfg', '--partitions', '1', '--replication-factor', '1', '--config', 'retention.ms=soon'], 'INVALID_CONFIG'],
      [['topics', 'create', 'admin-demo', '--partitions', '1', '--replication-factor', '1'], 'TOPIC_ALREADY_EXISTS'],
      [['topics', 'delete', 'no-such-topic'], 'UNKNOWN_TOPIC'],
    ];
    for (const [args, code] of bad) {
      const [viaBroker, viaController] = await Promise.all([
        cli([...args, '--bootstrap', broker]),
        cli([...args, '--bootstrap', controllers.addressOf(1)]),
      ]);
      expect(viaBroker.code, `${args.join(' ')}: ${viaBroker.stderr}`).to.equal(1);
      expect(viaBroker.stderr).to.match(new RegExp(`^error: ${code}: `));
      expect(viaBroker.stderr).to.equal(viaController.stderr);
    }
    const deleted = await cli(['topics', 'delete', 'admin-demo', '--bootstrap', broker]);
    expect(deleted.code, deleted.stderr).to.equal(0);
    expect(await cliJson<string[]>(['topics', 'list', '--bootstrap', broker])).to.not.include('admin-demo');
  });

  it("follows a topic creation in each broker's own metadata image (its replica roles in its log)", async () => {
    const t = await admin.createTopic({ name: 'followed', partitions: 3, replicationFactor: 3 });
    for (const id of [1, 2, 3]) {
      const expected = t.partitions.map((p) =>
        p.leader === id
          ? `became leader of followed-${p.partition} at leader epoch ${p.leaderEpoch}`
          : `became follower of followed-${p.partition} (leader ${p.leader}) at leader epoch ${p.leaderEpoch}`,
      );
      await eventually(`broker ${id} to apply the topic`, async () => {
        const msgs = brokers.logLines(id).map((l) => String(l.msg));
        const missing = expected.filter((e) => !msgs.includes(e));
        if (missing.length > 0) throw new Error(`missing: ${missing.join('; ')}`);
      });
    }
  });

  let killed = 0;
  let epochBeforeKill = 0;

  it('fences a kill -9ed broker within about a second, because its session connection closed (event says so), and moves its leaderships to another ISR member', async () => {
    const before = await admin.describeTopics(['followed']);
    const led = before[0]!.partitions.filter((p) => p.leader === before[0]!.partitions[0]!.leader);
    killed = led[0]!.leader;
    epochBeforeKill = (await admin.describeCluster()).brokers.find((b) => b.id === killed)!.epoch;
    await brokers.kill(killed, 'SIGKILL');
    const via = brokers.addressOf(killed === 1 ? 2 : 1);

    const events = await eventually('a fencing event', async () => {
      const list = await cliJson<{ text: string; kind: string }[]>(['events', '--bootstrap', via]);
      const hit = list.find((e) => e.text.startsWith(`broker ${killed} fenced`));
      if (!hit) throw new Error('no fencing event yet');
      return list;
    }, { timeoutMs: SESSION_TIMEOUT_MS + 15_000, intervalMs: 200 });
    const fencing = events.find((e) => e.text.startsWith(`broker ${killed} fenced`))!;
    expect(fencing.kind).to.equal('broker-fenced');
    // The fast path, not the session timeout: the dead process's socket closed.
    const m = new RegExp(`^broker ${killed} fenced: its connection closed (\\d+) ms ago and no heartbeat followed$`).exec(fencing.text);
    expect(m, fencing.text).to.not.equal(null);
    expect(Number(m![1]), 'not before the grace').to.be.at.least(1000);

    const [after] = await cliJson<TopicDescription[]>(['topics', 'describe', 'followed', '--bootstrap', via]);
    for (const p of led) {
      const now = after!.partitions[p.partition]!;
      expect(now.leader, `followed-${p.partition}`).to.not.equal(killed);
      expect(p.isr, `followed-${p.partition}: the new leader was in the ISR`).to.include(now.leader);
      expect(now.leaderEpoch).to.equal(p.leaderEpoch + 1);
      expect(now.isr).to.not.include(killed);
      expect(now.status).to.equal('under-replicated');
      expect(now.why).to.match(new RegExp(`broker ${killed} fenced`));
    }
    expect(await unfenced()).to.not.include(killed);
  });

  it('re-registers a restarted broker with a new incarnation and unfences it', async () => {
    expect(killed).to.be.greaterThan(0);
    const incarnations = () => brokers.logLines(killed).filter((l) => String(l.msg).includes('listening on')).map((l) => String(l.incarnationId));
    const before = incarnations();
    brokers.spawn(killed);
    await eventually('the restarted broker unfenced', async () => {
      const b = (await admin.describeCluster()).brokers.find((x) => x.id === killed)!;
      if (b.fenced || b.epoch <= epochBeforeKill) throw new Error(JSON.stringify(b));
    }, { timeoutMs: 30_000 });
    const after = incarnations();
    expect(after).to.have.length(before.length + 1);
    const [oldInc, newInc] = [before[before.length - 1]!, after[after.length - 1]!];
    expect(newInc).to.not.equal(oldInc);
    const events = await admin.listEvents({ max: 10_000 });
    expect(events.map((e) => e.text)).to.include(`broker ${killed} re-registered at ${brokers.addressOf(killed)}: incarnation ${oldInc} replaced by ${newInc}`);
  });

  it('fences a SIGSTOPped broker only by its session timeout (its socket stays open), and unfences it once it resumes', async () => {
    const unfencedBefore = await unfenced();
    const id = unfencedBefore.find((b) => b !== killed)!;
    brokers.signal(id, 'SIGSTOP');
    try {
      const fencing = await eventually('a fencing event', async () => {
        const hit = (await admin.listEvents({ max: 10_000 })).find((e) => e.text.startsWith(`broker ${id} fenced`) && e.kind === 'broker-fenced' && /no heartbeat for/.test(e.text));
        if (!hit) throw new Error('not fenced yet');
        return hit;
      }, { timeoutMs: SESSION_TIMEOUT_MS + 15_000, intervalMs: 250 });
      expect(Number(/for (\d+) ms/.exec(fencing.text)![1])).to.be.greaterThan(SESSION_TIMEOUT_MS);
    } finally {
      brokers.signal(id, 'SIGCONT');
    }
    await eventually('unfenced again', async () => {
      if (!(await unfenced()).includes(id)) throw new Error('still fenced');
    }, { timeoutMs: 30_000 });
  });

  it('stops a broker cleanly on SIGTERM: a controlled shutdown fences it at once, exit code 0', async () => {
    const id = killed === 3 ? 2 : 3;
    const startMs = Date.now();
    const code = await brokers.kill(id, 'SIGTERM');
    expect(code).to.equal(0);
    const msgs = brokers.logLines(id).map((l) => String(l.msg));
    expect(msgs).to.include('controlled shutdown: the controller fenced this broker');
    expect(msgs[msgs.length - 1]).to.equal(`broker ${id} stopped`);
    // Fenced by the shutdown itself, long before a session timeout could have done it.
    expect(await unfenced()).to.not.include(id);
    expect(Date.now() - startMs).to.be.below(SESSION_TIMEOUT_MS);
    const events = await admin.listEvents({ max: 10_000 });
    expect(events.map((e) => e.text)).to.include(`broker ${id} fenced: controlled shutdown requested`);
    brokers.spawn(id);
    await eventually('back and unfenced', async () => {
      if (!(await unfenced()).includes(id)) throw new Error('still fenced');
    }, { timeoutMs: 30_000 });
  });
});

// ---- cluster up ----

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A base port with 3 free ports after it and 3 free ports 100 above it (the brokers'). */
async function freeBasePort(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    let ok = true;
    for (const offset of [0, 1, 2, 100, 101, 102]) ok = ok && (await portFree(base + offset));
    if (ok) return base;
  }
  throw new Error('no free port range');
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('cluster up with 3 controllers and 3 brokers (real processes)', function () {
  this.timeout(120_000);
  let dataDir: string;
  let parent: ChildProcess | undefined;
  let output = '';
  const pids: number[] = [];

  after(() => {
    if (parent && parent.exitCode === null && parent.signalCode === null) parent.kill('SIGKILL');
    for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('prints the ready line with controller and broker addresses, serves topics through a broker, and stops cleanly on SIGTERM', async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-up-'));
    const base = await freeBasePort();
    parent = spawn(process.execPath, [CLI, 'cluster', 'up', '--controllers', '3', '--brokers', '3', '--data-dir', dataDir, '--base-port', String(base)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FLOTILLA_PRETTY: '0' },
    });
    const p = parent;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ready line in 60 s:\n${output}`)), 60_000);
      p.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes('stop: Ctrl-C')) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      p.once('exit', (code) => reject(new Error(`cluster up exited with ${code}:\n${output}`)));
    });
    const controllerAddresses = [0, 1, 2].map((i) => `127.0.0.1:${base + i}`);
    const brokerAddresses = [100, 101, 102].map((i) => `127.0.0.1:${base + i}`);
    expect(output).to.contain(`flotilla cluster ready: 3 controllers at ${controllerAddresses.join(',')} (leader `);
    expect(output).to.contain(`3 brokers at ${brokerAddresses.join(',')} (all registered and unfenced)`);
    expect(output).to.contain('topics create demo --partitions 3 --replication-factor 3');
    expect(output).to.contain('topics describe demo');
    for (const [i, a] of brokerAddresses.entries()) expect(output).to.match(new RegExp(`broker ${i + 1} +${a}  log: .*broker-${i + 1}\\.log`));

    // Ready means every broker is registered and unfenced: a replication factor of 3 fits at once.
    const created = await cli(['topics', 'create', 'demo', '--partitions', '3', '--replication-factor', '3', '--bootstrap', brokerAddresses.join(',')]);
    expect(created.code, created.stderr).to.equal(0);
    const [demo] = await cliJson<TopicDescription[]>(['topics', 'describe', 'demo', '--bootstrap', brokerAddresses[0]!]);
    expect(demo!.partitions.every((x) => x.status === 'online')).to.equal(true);

    for (const role of ['controller', 'broker']) {
      for (const id of [1, 2, 3]) {
        const first = JSON.parse(fs.readFileSync(path.join(dataDir, `${role}-${id}.log`), 'utf8').split('\n')[0]!);
        pids.push(Number(first.pid));
      }
    }
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.kill('SIGTERM');
    expect(await exited).to.equal(0);
    expect(output).to.contain('SIGTERM: stopping 3 brokers, then 3 controllers');
    for (const pid of pids) expect(alive(pid), `pid ${pid}`).to.equal(false);
    // Brokers stop first (their controlled shutdown needs a controller), then controllers.
    const stoppedAt = (role: string, id: number): number => {
      const lines = fs.readFileSync(path.join(dataDir, `${role}-${id}.log`), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      const hit = lines.find((l) => l.msg === `${role} ${id} stopped`);
      expect(hit, `${role} ${id} stopped`).to.exist;
      return hit.time as number;
    };
    const lastBroker = Math.max(...[1, 2, 3].map((id) => stoppedAt('broker', id)));
    const firstController = Math.min(...[1, 2, 3].map((id) => stoppedAt('controller', id)));
    expect(lastBroker).to.be.at.most(firstController);
    for (const id of [1, 2, 3]) {
      expect(fs.readFileSync(path.join(dataDir, `broker-${id}.log`), 'utf8')).to.contain('controlled shutdown: the controller fenced this broker');
    }
  });
});
