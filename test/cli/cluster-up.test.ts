import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { expect } from 'chai';

// `flotilla cluster up` with real controller processes: it reports readiness with the
// leader, the admin commands work against it through any controller (followers forward),
// the typed error for "no brokers" reaches the user, and SIGTERM stops every child.

const CLI = path.resolve(__dirname, '..', '..', 'cli', 'main.js');

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A base port with `n` consecutive free ports after it. */
async function freeBasePort(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 40_000);
    let ok = true;
    for (let i = 0; i < n && ok; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
  throw new Error('no free port range');
}

function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    );
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('cli: cluster up with real controllers', function () {
  this.timeout(90_000);
  let dataDir: string;
  let parent: ChildProcess | undefined;
  let output = '';
  let ready: { leaderId: number; controllers: { id: number; address: string; pid: number; log: string }[] };

  before(async () => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'flotilla-cli-'));
    const base = await freeBasePort(3);
    parent = spawn(process.execPath, [CLI, 'cluster', 'up', '--json', '--controllers', '3', '--brokers', '0', '--data-dir', dataDir, '--base-port', String(base)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FLOTILLA_PRETTY: '0' },
    });
    const p = parent;
    ready = await new Promise((resolve, reject) => {
      p.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString();
        const line = output.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line));
      });
      p.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
      p.once('exit', (code) => reject(new Error(`cluster up exited with ${code}:\n${output}`)));
    });
  });

  after(() => {
    if (parent && parent.exitCode === null && parent.signalCode === null) parent.kill('SIGKILL');
    for (const c of ready?.controllers ?? []) if (alive(c.pid)) process.kill(c.pid, 'SIGKILL');
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it('reports ready with three controllers and their leader', () => {
    expect(ready.controllers.map((c) => c.id)).to.deep.equal([1, 2, 3]);
    expect(ready.leaderId).to.be.oneOf([1, 2, 3]);
    for (const c of ready.controllers) expect(fs.existsSync(c.log), c.log).to.equal(true);
  });

  it("quorum status through a follower gives its own state and the leader's member progress", async () => {
    const follower = ready.controllers.find((c) => c.id !== ready.leaderId)!;
    const r = await cli(['quorum', 'status', '--json', '--bootstrap', follower.address]);
    expect(r.code, r.stderr).to.equal(0);
    const q = JSON.parse(r.stdout);
    expect(q.leaderId).to.be.oneOf([1, 2, 3]);
    expect(q.servedBy).to.equal(follower.id);
    expect(q.fromLeader).to.equal(true);
    expect(q.voters.map((v: { id: number }) => v.id).sort()).to.deep.equal([1, 2, 3]);
    expect(q.commitIndex).to.be.at.least(1);
  });

  it('topics create without brokers fails with the typed error, exit 1', async () => {
    const bootstrap = ready.controllers.map((c) => c.address).join(',');
    const r = await cli(['topics', 'create', 'demo', '--partitions', '3', '--replication-factor', '1', '--bootstrap', bootstrap]);
    expect(r.code).to.equal(1);
    expect(r.stderr).to.match(/^error: INVALID_REPLICATION_FACTOR: /);
    const list = await cli(['topics', 'list', '--json', '--bootstrap', bootstrap]);
    expect(list.code, list.stderr).to.equal(0);
    expect(JSON.parse(list.stdout)).to.deep.equal([]);
  });

  it('SIGTERM stops every controller and the parent exits 0', async () => {
    const p = parent!;
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.kill('SIGTERM');
    expect(await exited).to.equal(0);
    for (const c of ready.controllers) expect(alive(c.pid), `controller ${c.id} (pid ${c.pid})`).to.equal(false);
    const log = fs.readFileSync(ready.controllers[0]!.log, 'utf8');
    expect(log).to.contain(`controller 1 listening on ${ready.controllers[0]!.address}`);
    expect(log).to.contain('controller 1 stopped');
  });
});
