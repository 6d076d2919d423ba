import { execFile } from 'node:child_process';

// The docker and nsenter commands the chaos harness runs on the host, each bounded by a
// timeout. Faults go through the CLI rather than testcontainers' API: `docker kill`, `pause`,
// `start` and `nsenter -t PID -n iptables|tc` are the same commands an operator would type,
// and they work on a container whatever testcontainers thinks its state is.

export const COMMAND_TIMEOUT_MS = 60_000;
/** Commands slower than this are reported on stderr (they delay faults and heals). */
const SLOW_COMMAND_MS = 2_000;

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | string | null,
    readonly stderr: string,
  ) {
    super(`${command} failed (${code}): ${stderr.trim().slice(0, 500)}`);
  }
}

/** Runs a command (with `input` on its stdin); resolves with stdout, rejects with CommandError (stderr included). */
export function run(file: string, args: readonly string[], timeoutMs = COMMAND_TIMEOUT_MS, input?: string): Promise<string> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = execFile(file, [...args], { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const tookMs = Date.now() - started;
      if (tookMs > SLOW_COMMAND_MS) process.stderr.write(`chaos: slow command (${tookMs} ms): ${file} ${args.join(' ').slice(0, 200)}\n`);
      if (err) {
        const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        reject(new CommandError(`${file} ${args.join(' ')}`, code, `${stderr}${err.killed ? ` (killed after ${timeoutMs} ms)` : ''}`));
      } else {
        resolve(stdout);
      }
    });
    child.stdin?.on('error', () => undefined); // a child that exits early: its error says why
    child.stdin?.end(input ?? '');
  });
}

export function docker(args: readonly string[], timeoutMs?: number): Promise<string> {
  return run('docker', args, timeoutMs);
}

/** Runs `cmd` in the network namespace of the container's main process (host binaries). */
export async function inNetns(containerId: string, cmd: readonly string[]): Promise<string> {
  const pid = (await docker(['inspect', '-f', '{{.State.Pid}}', containerId])).trim();
  if (pid === '' || pid === '0') throw new Error(`container ${containerId} has no process (not running)`);
  return run('nsenter', ['-t', pid, '-n', ...cmd]);
}

/**
 * Runs several commands in the container's network namespace with one nsenter (a host
 * shell), stopping at the first failure: a fault's rules go in together, not one process
 * each. Arguments must be plain words (addresses, numbers, flags, or `||` and `2>/dev/null`):
 * they are not quoted.
 */
export async function inNetnsAll(containerId: string, cmds: ReadonlyArray<readonly string[]>): Promise<string> {
  for (const c of cmds) for (const a of c) if (!/^([A-Za-z0-9_.:\/-]+|\|\||2>\/dev\/null)$/.test(a)) throw new Error(`inNetnsAll: "${a}" is not a plain word`);
  const pid = (await docker(['inspect', '-f', '{{.State.Pid}}', containerId])).trim();
  if (pid === '' || pid === '0') throw new Error(`container ${containerId} has no process (not running)`);
  return run('nsenter', ['-t', pid, '-n', 'sh', '-ec', cmds.map((c) => c.join(' ')).join('\n')]);
}

export type ContainerState = 'running' | 'paused' | 'exited' | 'created' | 'restarting' | 'dead' | 'removing' | 'missing';

export async function containerState(containerId: string): Promise<ContainerState> {
  try {
    return (await docker(['inspect', '-f', '{{.State.Status}}', containerId])).trim() as ContainerState;
  } catch {
    return 'missing';
  }
}

/** The container's address on the given docker network ('' when it has none, e.g. stopped). */
export async function containerIp(containerId: string, network: string): Promise<string> {
  const out = await docker(['inspect', '-f', `{{with index .NetworkSettings.Networks "${network}"}}{{.IPAddress}}{{end}}`, containerId]);
  return out.trim();
}
