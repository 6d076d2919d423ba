import { InvalidArgumentError } from 'commander';

// Argument parsers for commander: each throws InvalidArgumentError, which commander reports
// as a usage error (exit code 2 in main.ts).

/** `cluster up`: controller N listens on base port + N - 1 ... */
export const DEFAULT_BASE_PORT = 9093;
/** ... and broker N on base port + BROKER_PORT_OFFSET + N - 1. */
export const BROKER_PORT_OFFSET = 100;

/**
 * Where the CLI looks without --bootstrap or FLOTILLA_BOOTSTRAP: the three controllers and
 * the three brokers of a default `flotilla cluster up` (brokers serve the admin API too, so
 * either kind of address works; the list is tried in turn).
 */
export const DEFAULT_BOOTSTRAP = [0, 1, 2, BROKER_PORT_OFFSET, BROKER_PORT_OFFSET + 1, BROKER_PORT_OFFSET + 2]
  .map((i) => `127.0.0.1:${DEFAULT_BASE_PORT + i}`)
  .join(',');

/** How --help shows DEFAULT_BOOTSTRAP. */
export const DEFAULT_BOOTSTRAP_HELP = `controllers 127.0.0.1:${DEFAULT_BASE_PORT}-${DEFAULT_BASE_PORT + 2}, then brokers 127.0.0.1:${DEFAULT_BASE_PORT + BROKER_PORT_OFFSET}-${DEFAULT_BASE_PORT + BROKER_PORT_OFFSET + 2}`;

const HOST_PORT = /^([^\s@,]+):(\d{1,5})$/;

export function parseHostPort(value: string): string {
  const m = HOST_PORT.exec(value.trim());
  const port = m ? Number(m[2]) : -1;
  if (!m || port < 0 || port > 65_535) throw new InvalidArgumentError(`"${value}" is not HOST:PORT`);
  return `${m[1]}:${port}`;
}

/** "a:1,b:2" -> ["a:1", "b:2"]. */
export function parseAddressList(value: string): string[] {
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (list.length === 0) throw new InvalidArgumentError('expected one or more HOST:PORT, comma-separated');
  return list.map(parseHostPort);
}

/** A parser for an integer within [min, max]. */
export function intIn(min: number, max: number = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^-?\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(max === Number.MAX_SAFE_INTEGER ? `expected an integer >= ${min}` : `expected an integer in ${min}..${max}`);
    }
    return n;
  };
}

/** "ID@HOST:PORT" -> { id, address }. */
export function parseMember(value: string): { id: number; address: string } {
  const at = value.indexOf('@');
  if (at <= 0) throw new InvalidArgumentError(`"${value}" is not ID@HOST:PORT`);
  const id = intIn(1)(value.slice(0, at));
  return { id, address: parseHostPort(value.slice(at + 1)) };
}

/** "1@h:p,2@h:p" -> Map(1 -> "h:p", 2 -> "h:p"), ids unique. */
export function parseVoters(value: string): Map<number, string> {
  const voters = new Map<number, string>();
  for (const part of value.split(',').map((s) => s.trim()).filter((s) => s.length > 0)) {
    const { id, address } = parseMember(part);
    if (voters.has(id)) throw new InvalidArgumentError(`controller id ${id} appears twice`);
    voters.set(id, address);
  }
  if (voters.size === 0) throw new InvalidArgumentError('expected ID@HOST:PORT, comma-separated');
  return voters;
}

/** Collects repeated or variadic `key=value` into a record. */
export function collectConfig(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf('=');
  if (eq <= 0) throw new InvalidArgumentError(`"${value}" is not key=value`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** `--acks`: all (or -1), 1 or 0. */
export function parseAcks(value: string): 'all' | 0 | 1 {
  const v = value.trim();
  if (v === 'all' || v === '-1') return 'all';
  if (v === '1') return 1;
  if (v === '0') return 0;
  throw new InvalidArgumentError('expected all, 1 or 0');
}
