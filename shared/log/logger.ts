import pino from 'pino';
import pretty from 'pino-pretty';

// One logger shape for every process: JSON lines on stdout, each carrying the node id and
// role, so the output of a whole cluster can be merged and filtered with `jq`.
//
// Environment:
//   FLOTILLA_LOG_LEVEL  trace | debug | info | warn | error | fatal | silent (default info)
//   FLOTILLA_PRETTY=1   human-readable lines instead of JSON (for `make up` on a terminal)

export type Logger = pino.Logger;

export interface LoggerOptions {
  /** The node this process is (controller or broker id); anything stable for a cli or client. */
  readonly nodeId: number | string;
  /** What the process is: 'controller', 'broker', 'cli', ... */
  readonly role: string;
  /** Overrides FLOTILLA_LOG_LEVEL (a --log-level flag beats the environment). */
  readonly level?: string;
  /** Where lines go instead of stdout; tests pass an in-memory stream. */
  readonly destination?: pino.DestinationStream;
  /** Overrides FLOTILLA_PRETTY. */
  readonly pretty?: boolean;
}

export function createLogger(options: LoggerOptions): Logger {
  const level = options.level ?? process.env.FLOTILLA_LOG_LEVEL ?? 'info';
  const usePretty = options.pretty ?? process.env.FLOTILLA_PRETTY === '1';
  return pino(
    {
      level: checkedLevel(level),
      // pid instead of hostname: a local cluster is several processes on one host.
      base: { nodeId: options.nodeId, role: options.role, pid: process.pid },
    },
    usePretty ? prettyStream(options.destination) : (options.destination ?? stdoutSync()),
  );
}

/** A logger that drops everything, for tests of code that wants a Logger. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

// Synchronous writes: an invariant failure crashes the process right after logging it
// (STYLE.md "Errors"), and an asynchronous write would lose exactly that last line.
function stdoutSync(): pino.DestinationStream {
  return pino.destination({ dest: 1, sync: true });
}

// pino-pretty's stream API runs in this thread, unlike a pino transport (a worker thread),
// so it works the same in child processes and flushes before a crash.
function prettyStream(destination?: pino.DestinationStream): pino.DestinationStream {
  return pretty({
    sync: true,
    destination: destination ?? 1,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,nodeId,role',
    messageFormat: '[{role} {nodeId}] {msg}',
    singleLine: true,
  });
}

function checkedLevel(level: string): string {
  if (level !== 'silent' && !(level in pino.levels.values)) {
    const known = Object.keys(pino.levels.values).join(', ');
    throw new Error(`unknown log level "${level}" (FLOTILLA_LOG_LEVEL or level option); use one of ${known}, silent`);
  }
  return level;
}
