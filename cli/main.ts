#!/usr/bin/env node
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { Admin, Flotilla, FlotillaError, isFlotillaError } from '../client';
import { BROKER_PORT_OFFSET, DEFAULT_BASE_PORT, DEFAULT_BOOTSTRAP, DEFAULT_BOOTSTRAP_HELP, collectConfig, intIn, parseAcks, parseAddressList, parseHostPort, parseMember, parseVoters } from './args';
import { clusterUp } from './cluster-up';
import { formatCluster, formatEvent, formatQuorum, formatTopics } from './format';
import { consume, produce } from './produce-consume';

// The `flotilla` command. Exit codes: 0 success, 1 an operation failed (printed as
// `error: NAME: message`), 2 a usage error (bad or missing arguments).

const EXIT_FAILED = 1;
const EXIT_USAGE = 2;
/** `topics describe`: bound on asking leaders for high watermarks. */
const HIGH_WATERMARK_TIMEOUT_MS = 3_000;
/** `cluster up --brokers`: broker ports must stay clear of the controllers' (base-port + 0..8). */
const BROKERS_MAX = 99;

interface GlobalOptions {
  bootstrap: string[];
  json: boolean;
  timeoutMs: number;
}

/** Usage errors found after parsing (e.g. an option combination). */
class UsageError extends Error {}

function buildProgram(): Command {
  const program = new Command('flotilla');
  program
    .description('Flotilla: an event streaming platform with a Raft controller quorum')
    .version(packageVersion())
    // Every (sub)command throws instead of exiting, so main() picks the exit code.
    .exitOverride()
    .configureHelp({ showGlobalOptions: true })
    .showHelpAfterError('(add --help for usage)')
    .addOption(
      new Option('--bootstrap <host:port,...>', 'controller or broker addresses to try, comma-separated')
        .env('FLOTILLA_BOOTSTRAP')
        .default(parseAddressList(DEFAULT_BOOTSTRAP), DEFAULT_BOOTSTRAP_HELP)
        .argParser(parseAddressList),
    )
    .option('--json', 'machine-readable JSON output', false)
    .addOption(new Option('--timeout-ms <ms>', 'give up on a request after this long (retries included)').default(15_000).argParser(intIn(1)));

  addControllerCommand(program);
  addBrokerCommand(program);
  addClusterCommands(program);
  addQuorumCommands(program);
  addTopicCommands(program);
  addProduceConsumeCommands(program);
  program
    .command('events')
    .description('print the cluster event log (offset, time, text)')
    .option('--from-offset <n>', 'first event offset', intIn(0), 0)
    .option('--max <n>', 'most events to print', intIn(1, 10_000), 100)
    .action(async (opts: { fromOffset: number; max: number }, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const events = await admin.listEvents({ fromOffset: opts.fromOffset, max: opts.max });
        if (g.json) return printJson(events);
        if (events.length === 0) return print('no events');
        for (const e of events) print(formatEvent(e));
      }),
    );
  return program;
}

function addControllerCommand(program: Command): void {
  program
    .command('controller')
    .description('run one controller (a Raft quorum member) in this process')
    .requiredOption('--node-id <n>', 'this controller\'s id (>= 1)', intIn(1))
    .requiredOption('--listen <host:port>', 'address to serve Raft and the Controller API on', parseHostPort)
    .requiredOption('--voters <id@host:port,...>', 'the quorum\'s voters (all of them, this one included unless --join)', parseVoters)
    .requiredOption('--data-dir <dir>', 'where the Raft log and snapshots live')
    .option('--join', 'start as a new member to be added with `flotilla quorum add-controller`', false)
    .option('--tick-ms <ms>', 'Raft tick length', intIn(1))
    .option('--election-timeout-ticks <n>', 'ticks without a leader before an election', intIn(2))
    .option('--heartbeat-timeout-ticks <n>', 'ticks between leader heartbeats', intIn(1))
    .option('--snapshot-every-entries <n>', 'snapshot the metadata after this many entries', intIn(1))
    .option('--broker-session-timeout-ms <ms>', 'fence a broker after this long without a heartbeat', intIn(1))
    .option('--log-level <level>', 'trace|debug|info|warn|error (default: FLOTILLA_LOG_LEVEL or info)')
    .addOption(new Option('--stop-with-parent', 'stop when stdin closes (set by `cluster up`)').hideHelp())
    .action(async (opts: ControllerCommandOptions) => {
      if (!opts.join && !opts.voters.has(opts.nodeId)) {
        throw new UsageError(`--voters must include --node-id ${opts.nodeId} (or pass --join to add a new controller)`);
      }
      // Loaded only here: the admin commands need neither Raft nor the disk.
      const { runController } = await import('../controller/controller-process');
      const { createLogger } = await import('../shared/log');
      const logger = createLogger({ nodeId: opts.nodeId, role: 'controller', ...(opts.logLevel ? { level: opts.logLevel } : {}) });
      await runController(
        {
          nodeId: opts.nodeId,
          listen: opts.listen,
          voters: opts.voters,
          dataDir: opts.dataDir,
          logger,
          join: opts.join,
          ...(opts.tickMs !== undefined ? { tickMs: opts.tickMs } : {}),
          ...(opts.electionTimeoutTicks !== undefined ? { electionTimeoutTicks: opts.electionTimeoutTicks } : {}),
          ...(opts.heartbeatTimeoutTicks !== undefined ? { heartbeatTimeoutTicks: opts.heartbeatTimeoutTicks } : {}),
          ...(opts.snapshotEveryEntries !== undefined ? { snapshotEveryEntries: opts.snapshotEveryEntries } : {}),
          ...(opts.brokerSessionTimeoutMs !== undefined ? { brokerSessionTimeoutMs: opts.brokerSessionTimeoutMs } : {}),
        },
        { stopOnStdinClose: opts.stopWithParent === true },
      );
    });
}

interface ControllerCommandOptions {
  nodeId: number;
  listen: string;
  voters: Map<number, string>;
  dataDir: string;
  join: boolean;
  tickMs?: number;
  electionTimeoutTicks?: number;
  heartbeatTimeoutTicks?: number;
  snapshotEveryEntries?: number;
  brokerSessionTimeoutMs?: number;
  logLevel?: string;
  stopWithParent?: boolean;
}

function addBrokerCommand(program: Command): void {
  program
    .command('broker')
    .description('run one broker in this process: registers with the controllers, follows the metadata log, serves the admin API')
    .requiredOption('--node-id <n>', 'this broker\'s id (>= 0)', intIn(0))
    .requiredOption('--listen <host:port>', 'address to bind and serve on (registered with the controllers unless --advertised-address is given)', parseHostPort)
    .option('--advertised-address <host:port>', 'address registered with the controllers, which clients and other brokers connect to (e.g. a published port); default: the bound --listen address', parseHostPort)
    .requiredOption('--controllers <host:port,...>', 'controller addresses, comma-separated (any of the quorum\'s voters)', parseAddressList)
    .requiredOption('--data-dir <dir>', 'where this broker keeps its data')
    .option('--rack <rack>', 'rack label, for rack-aware replica placement')
    .option('--heartbeat-interval-ms <ms>', 'time between heartbeats to the controller (keep it well below its session timeout)', intIn(10))
    .option('--replica-lag-time-max-ms <ms>', 'an ISR member that has not caught up for this long leaves the ISR (default 10000)', intIn(100))
    .option('--tail-cache-total-bytes <bytes>', 'memory for the newest log batches kept to serve reads at the log end, all replicas together; each gets an equal share of at most 2 MiB (default 268435456)', intIn(0))
    .option('--log-level <level>', 'trace|debug|info|warn|error (default: FLOTILLA_LOG_LEVEL or info)')
    .addOption(new Option('--stop-with-parent', 'stop when stdin closes (set by `cluster up`)').hideHelp())
    .action(async (opts: BrokerCommandOptions) => {
      if (opts.rack !== undefined && (opts.rack.length === 0 || opts.rack.length > 255)) throw new UsageError('--rack must be 1 to 255 characters');
      // Loaded only here: the admin commands need no broker code.
      const { runBroker } = await import('../broker');
      const { createLogger } = await import('../shared/log');
      const logger = createLogger({ nodeId: opts.nodeId, role: 'broker', ...(opts.logLevel ? { level: opts.logLevel } : {}) });
      await runBroker(
        {
          nodeId: opts.nodeId,
          listen: opts.listen,
          ...(opts.advertisedAddress !== undefined ? { advertisedAddress: opts.advertisedAddress } : {}),
          controllers: opts.controllers,
          dataDir: opts.dataDir,
          logger,
          ...(opts.rack !== undefined ? { rack: opts.rack } : {}),
          ...(opts.heartbeatIntervalMs !== undefined ? { heartbeatIntervalMs: opts.heartbeatIntervalMs } : {}),
          ...(opts.replicaLagTimeMaxMs !== undefined ? { replicaLagTimeMaxMs: opts.replicaLagTimeMaxMs } : {}),
          ...(opts.tailCacheTotalBytes !== undefined ? { tailCacheTotalBytes: opts.tailCacheTotalBytes } : {}),
        },
        { stopOnStdinClose: opts.stopWithParent === true },
      );
    });
}

interface BrokerCommandOptions {
  nodeId: number;
  listen: string;
  advertisedAddress?: string;
  controllers: string[];
  dataDir: string;
  rack?: string;
  heartbeatIntervalMs?: number;
  replicaLagTimeMaxMs?: number;
  tailCacheTotalBytes?: number;
  logLevel?: string;
  stopWithParent?: boolean;
}

function addClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description('run or inspect a whole cluster');
  cluster
    .command('up')
    .description('start a local cluster (controllers, then brokers) as child processes; Ctrl-C stops it')
    .option('--controllers <n>', 'number of controllers', intIn(1, 9), 3)
    .option('--brokers <n>', 'number of brokers (0 for a controller quorum only)', intIn(0, BROKERS_MAX), 3)
    .requiredOption('--data-dir <dir>', 'root folder for data and logs (controller-N/, broker-N/, controller-N.log, broker-N.log)')
    .option('--base-port <port>', `controller N listens on base-port + N - 1, broker N on base-port + ${BROKER_PORT_OFFSET} + N - 1`, intIn(1, 65_535), DEFAULT_BASE_PORT)
    .option('--host <host>', 'host to listen on', '127.0.0.1')
    .option('--ready-timeout-ms <ms>', 'give up if the controllers elect no leader, or the brokers are not all unfenced, within this long', intIn(1), 30_000)
    .option('--stop-grace-ms <ms>', 'SIGKILL a child this long after SIGTERM', intIn(1), 5_000)
    .option('--tick-ms <ms>', 'Raft tick length passed to every controller', intIn(1))
    .action(
      async (
        opts: { controllers: number; brokers: number; dataDir: string; basePort: number; host: string; readyTimeoutMs: number; stopGraceMs: number; tickMs?: number },
        cmd: Command,
      ) => {
        if (opts.basePort + opts.controllers - 1 > 65_535) throw new UsageError(`--base-port ${opts.basePort} leaves no room for ${opts.controllers} ports`);
        const brokerBasePort = opts.basePort + BROKER_PORT_OFFSET;
        if (opts.brokers > 0 && brokerBasePort + opts.brokers - 1 > 65_535) {
          throw new UsageError(`--base-port ${opts.basePort} leaves no room for ${opts.brokers} broker ports from ${brokerBasePort}`);
        }
        process.exitCode = await clusterUp({
          mainScript: __filename,
          controllers: opts.controllers,
          brokers: opts.brokers,
          dataDir: opts.dataDir,
          host: opts.host,
          basePort: opts.basePort,
          brokerBasePort,
          readyTimeoutMs: opts.readyTimeoutMs,
          stopGraceMs: opts.stopGraceMs,
          json: globals(cmd).json,
          controllerArgs: opts.tickMs !== undefined ? ['--tick-ms', String(opts.tickMs)] : [],
          defaultBootstrapReaches: opts.host === '127.0.0.1' && opts.basePort === DEFAULT_BASE_PORT && opts.brokers <= 3,
        });
      },
    );
  cluster
    .command('describe')
    .description('list the registered brokers and the active controller')
    .action(async (_opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const c = await admin.describeCluster();
        return g.json ? printJson(c) : print(formatCluster(c));
      }),
    );
}

function addQuorumCommands(program: Command): void {
  const quorum = program.command('quorum').description('inspect or change the controller quorum');
  quorum
    .command('status')
    .description('leader, term, commit index and each controller\'s replication lag')
    .action(async (_opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const q = await admin.describeQuorum();
        return g.json ? printJson(q) : print(formatQuorum(q));
      }),
    );
  quorum
    .command('add-controller')
    .description('add a controller (already started with --join) to the quorum')
    .argument('<id@host:port>', 'the new controller', parseMember)
    .action(async (member: { id: number; address: string }, _opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        await admin.addController(member.id, member.address);
        return g.json ? printJson({ added: member }) : print(`controller ${member.id} at ${member.address} added`);
      }),
    );
  quorum
    .command('remove-controller')
    .description('remove a controller from the quorum')
    .argument('<id>', 'controller id', intIn(1))
    .action(async (id: number, _opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        await admin.removeController(id);
        return g.json ? printJson({ removed: id }) : print(`controller ${id} removed`);
      }),
    );
  quorum
    .command('transfer-leadership')
    .description('ask the leader to hand leadership to another voter')
    .argument('<id>', 'controller id of the new leader', intIn(1))
    .action(async (id: number, _opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        await admin.transferLeadership(id);
        return g.json ? printJson({ transferringTo: id }) : print(`leadership transfer to controller ${id} started`);
      }),
    );
}

function addTopicCommands(program: Command): void {
  const topics = program.command('topics').description('create, list, describe and delete topics');
  topics
    .command('create')
    .description('create a topic')
    .argument('<name>', 'topic name')
    .requiredOption('--partitions <n>', 'number of partitions', intIn(1))
    .requiredOption('--replication-factor <n>', 'replicas per partition (at most the live brokers)', intIn(1))
    .option('--config <key=value...>', 'topic config override (repeatable)', collectConfig)
    .action(async (name: string, opts: { partitions: number; replicationFactor: number; config?: Record<string, string> }, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const t = await admin.createTopic({ name, partitions: opts.partitions, replicationFactor: opts.replicationFactor, configs: opts.config ?? {} });
        return g.json ? printJson(t) : print(`created topic ${t.name} (${t.partitions.length} partitions, id ${t.topicId})`);
      }),
    );
  topics
    .command('list')
    .description('list topic names')
    .action(async (_opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const names = await admin.listTopics();
        if (g.json) return printJson(names);
        print(names.length > 0 ? names.join('\n') : 'no topics');
      }),
    );
  topics
    .command('describe')
    .description('partitions, leaders, replicas, ISR and health of topics (all when none named)')
    .argument('[names...]', 'topic names')
    .action(async (names: string[], _opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        const ts = await admin.describeTopics(names);
        // High watermarks come from each partition's leader (ListOffsets latest); null ('-'
        // in the table) when it cannot be asked. Bounded so a down broker does not stall describe.
        const hwTimeoutMs = Math.min(g.timeoutMs, HIGH_WATERMARK_TIMEOUT_MS);
        const withHw = await Promise.all(
          ts.map(async (t) => {
            const offsets = await admin.fetchTopicOffsets(t.name, hwTimeoutMs).catch(() => []);
            const hw = new Map(offsets.map((o) => [o.partition, o.high ?? null]));
            return { ...t, partitions: t.partitions.map((p) => ({ ...p, highWatermark: hw.get(p.partition) ?? null })) };
          }),
        );
        return g.json ? printJson(withHw) : print(formatTopics(withHw));
      }),
    );
  topics
    .command('delete')
    .description('delete a topic')
    .argument('<name>', 'topic name')
    .action(async (name: string, _opts: unknown, cmd: Command) =>
      withAdmin(cmd, async (admin, g) => {
        await admin.deleteTopic(name);
        return g.json ? printJson({ deleted: name }) : print(`deleted topic ${name}`);
      }),
    );
}

function addProduceConsumeCommands(program: Command): void {
  program
    .command('produce')
    .description('send each line of stdin as a record (or --count generated ones); progress and throughput on stderr; exit 1 with the count when any record was not acknowledged')
    .argument('<topic>', 'topic name')
    .option('--key <key>', 'key for every record (same key, same partition)')
    .option('--acks <all|1|0>', 'acknowledgement level: all in-sync replicas, the leader, or none', parseAcks, 'all' as const)
    .option('--idempotent', 'idempotent producer: retries never duplicate (needs --acks all)', false)
    .option('--count <n>', 'send n generated records instead of reading stdin', intIn(0))
    .option('--size <bytes>', 'size of each generated record (with --count)', intIn(0, 15 * 1024 * 1024))
    .option('--linger-ms <ms>', 'how long a batch waits for more records', intIn(0, 60_000), 5)
    .action(async (topic: string, opts: { key?: string; acks: 'all' | 0 | 1; idempotent: boolean; count?: number; size?: number; lingerMs: number }, cmd: Command) => {
      if (opts.idempotent && opts.acks !== 'all') throw new UsageError('--idempotent needs --acks all');
      if (opts.size !== undefined && opts.count === undefined) throw new UsageError('--size needs --count');
      const g = globals(cmd);
      const s = await produce({
        bootstrap: g.bootstrap,
        topic,
        acks: opts.acks,
        idempotent: opts.idempotent,
        sizeBytes: opts.size ?? 100,
        lingerMs: opts.lingerMs,
        timeoutMs: g.timeoutMs,
        stdin: process.stdin,
        stderr: process.stderr,
        ...(opts.key !== undefined ? { key: opts.key } : {}),
        ...(opts.count !== undefined ? { count: opts.count } : {}),
      });
      if (g.json) printJson({ records: s.records, acknowledged: s.acknowledged, failed: s.failed, ...(s.firstError ? { firstError: { name: s.firstError.name, message: s.firstError.message } } : {}) });
      if (s.failed > 0) {
        const first = s.firstError ? ` (first error: ${s.firstError.name}: ${s.firstError.message})` : '';
        process.stderr.write(`error: ${s.failed} of ${s.records} records not acknowledged${first}\n`);
        process.exitCode = EXIT_FAILED;
      }
    });
  program
    .command('consume')
    .description('print one record value per line, from the end (default), the beginning or an offset; with the global --timeout-ms T, stop when nothing arrived for T ms')
    .argument('<topic>', 'topic name')
    .option('--from-beginning', 'start at the earliest offset of each partition', false)
    .option('--offset <n>', 'start at this offset (every partition read)', intIn(0))
    .option('--partition <p>', 'read only this partition (default: all)', intIn(0))
    .option('--max <n>', 'stop after n records', intIn(0))
    .action(async (topic: string, opts: { fromBeginning: boolean; offset?: number; partition?: number; max?: number }, cmd: Command) => {
      if (opts.fromBeginning && opts.offset !== undefined) throw new UsageError('--from-beginning and --offset exclude each other');
      const g = globals(cmd);
      // --timeout-ms is the global option; for consume it is the idle timeout, and only when given.
      const explicitTimeout = program.getOptionValueSource('timeoutMs') === 'cli' || program.getOptionValueSource('timeoutMs') === 'env';
      await consume({
        bootstrap: g.bootstrap,
        topic,
        from: opts.fromBeginning ? 'beginning' : (opts.offset ?? 'end'),
        metadataWaitMs: Math.min(g.timeoutMs, 5_000),
        stdout: process.stdout,
        ...(opts.partition !== undefined ? { partition: opts.partition } : {}),
        ...(opts.max !== undefined ? { max: opts.max } : {}),
        ...(explicitTimeout ? { idleTimeoutMs: g.timeoutMs } : {}),
      });
    });
}

/** The version in the repository's package.json (found from dist/cli or cli/). */
function packageVersion(): string {
  for (let dir = __dirname, i = 0; i < 4; i++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'flotilla' && pkg.version) return pkg.version;
    } catch {
      // not here: look one folder up
    }
  }
  return 'unknown';
}

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

async function withAdmin(cmd: Command, fn: (admin: Admin, g: GlobalOptions) => Promise<void>): Promise<void> {
  const g = globals(cmd);
  const admin = new Flotilla({ bootstrap: g.bootstrap, totalTimeoutMs: g.timeoutMs, requestTimeoutMs: Math.min(5_000, g.timeoutMs) }).admin();
  try {
    await fn(admin, g);
  } finally {
    await admin.close();
  }
}

function print(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version "fail" with exit code 0; everything else commander reports is usage.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (e instanceof UsageError) {
      process.stderr.write(`error: ${e.message}\n`);
      return EXIT_USAGE;
    }
    const fe = isFlotillaError(e) ? e : new FlotillaError('UNKNOWN', (e as Error)?.message ?? String(e));
    process.stderr.write(`error: ${fe.name}: ${fe.message}\n`);
    if (fe.name === 'UNKNOWN' && process.env.FLOTILLA_DEBUG === '1') process.stderr.write(`${(e as Error)?.stack}\n`);
    return EXIT_FAILED;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
