#!/usr/bin/env node
// The image's entrypoint: `flotilla` with configuration from FLOTILLA_* environment
// variables as well as flags, so a compose file or `docker run -e` can configure a node.
//
//   docker run flotilla controller --node-id 1 --listen c1:9093 --voters 1@c1:9093,...
//   docker run -e FLOTILLA_NODE_ID=1 -e FLOTILLA_LISTEN=c1:9093 -e FLOTILLA_VOTERS=... flotilla controller
//
// For `controller` and `broker`, every variable in ENV_FLAGS below that is set (and not
// empty) becomes its flag, unless the same flag is already on the command line (flags win).
// --data-dir defaults to /data, the image's volume. Every other subcommand (`topics list`,
// `quorum status`, ...) runs unchanged; the CLI reads FLOTILLA_BOOTSTRAP and
// FLOTILLA_LOG_LEVEL itself.
//
// `{container-ip}` in an advertised address (FLOTILLA_ADVERTISED_ADDRESS or
// --advertised-address) becomes the container's own IPv4 address (the first non-loopback
// interface, by name): for a broker reached at its IP on a container network whose IP is
// assigned at start and may change on restart (the chaos harness uses it). The image has no
// shell for `$(hostname -i)`.
//
// It also writes the listen address to LISTEN_FILE for healthcheck.js, which has no other
// way to learn it (the image has no shell and the health check gets no arguments).
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const APP_DIR = path.resolve(__dirname, '..', '..');
const LISTEN_FILE = process.env.FLOTILLA_HEALTH_FILE || '/tmp/flotilla-listen';
const DEFAULT_DATA_DIR = '/data';

/** FLOTILLA_<NAME> -> --<flag>, per role. Booleans map "true"/"1" to the bare flag. */
const ENV_FLAGS = {
  controller: {
    FLOTILLA_NODE_ID: '--node-id',
    FLOTILLA_LISTEN: '--listen',
    FLOTILLA_VOTERS: '--voters',
    FLOTILLA_DATA_DIR: '--data-dir',
    FLOTILLA_JOIN: { flag: '--join', boolean: true },
    FLOTILLA_TICK_MS: '--tick-ms',
    FLOTILLA_ELECTION_TIMEOUT_TICKS: '--election-timeout-ticks',
    FLOTILLA_HEARTBEAT_TIMEOUT_TICKS: '--heartbeat-timeout-ticks',
    FLOTILLA_SNAPSHOT_EVERY_ENTRIES: '--snapshot-every-entries',
    FLOTILLA_BROKER_SESSION_TIMEOUT_MS: '--broker-session-timeout-ms',
  },
  broker: {
    FLOTILLA_NODE_ID: '--node-id',
    FLOTILLA_LISTEN: '--listen',
    FLOTILLA_ADVERTISED_ADDRESS: '--advertised-address',
    FLOTILLA_CONTROLLERS: '--controllers',
    FLOTILLA_DATA_DIR: '--data-dir',
    FLOTILLA_RACK: '--rack',
    FLOTILLA_HEARTBEAT_INTERVAL_MS: '--heartbeat-interval-ms',
  },
};

/** The argv `flotilla` gets: the given one plus flags from the environment. */
function buildArgv(argv, env, interfaces = os.networkInterfaces()) {
  const role = argv[0];
  const table = ENV_FLAGS[role];
  if (!table) return [...argv];
  const given = new Set(argv.filter((a) => a.startsWith('--')).map((a) => a.split('=')[0]));
  const out = [...argv];
  for (const [name, spec] of Object.entries(table)) {
    const { flag, boolean } = typeof spec === 'string' ? { flag: spec, boolean: false } : spec;
    const value = env[name];
    if (value === undefined || value === '' || given.has(flag)) continue;
    if (boolean) {
      if (value === 'true' || value === '1') out.push(flag);
    } else {
      out.push(flag, value);
    }
    given.add(flag);
  }
  if (!given.has('--data-dir')) out.push('--data-dir', DEFAULT_DATA_DIR);
  return out.map((a, i) => (out[i - 1] === '--advertised-address' || a.startsWith('--advertised-address=') ? withContainerIp(a, interfaces) : a));
}

const IP_PLACEHOLDER = '{container-ip}';

/** `{container-ip}` replaced by the first non-internal IPv4 address (interfaces sorted by name). */
function withContainerIp(value, interfaces) {
  if (!value.includes(IP_PLACEHOLDER)) return value;
  const names = Object.keys(interfaces).sort();
  for (const name of names) {
    const a = (interfaces[name] || []).find((x) => (x.family === 'IPv4' || x.family === 4) && !x.internal);
    if (a) return value.split(IP_PLACEHOLDER).join(a.address);
  }
  throw new Error(`entrypoint: ${value} asks for the container's IP, but it has no IPv4 interface besides loopback`);
}

/** The value of --listen (either `--listen x` or `--listen=x`), if any. */
function listenOf(argv) {
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--listen') return argv[i + 1];
    if (argv[i].startsWith('--listen=')) return argv[i].slice('--listen='.length);
  }
  return undefined;
}

function main() {
  const argv = buildArgv(process.argv.slice(2), process.env);
  const listen = ENV_FLAGS[argv[0]] ? listenOf(argv) : undefined;
  if (listen !== undefined) {
    try {
      fs.writeFileSync(LISTEN_FILE, `${listen}\n`);
    } catch (e) {
      process.stderr.write(`entrypoint: cannot write ${LISTEN_FILE} (${e.message}); the health check will fail\n`);
    }
  }
  // In-process (no child): signals reach the CLI's own SIGTERM handler directly.
  const cli = require(path.join(APP_DIR, 'dist', 'cli', 'main.js'));
  cli.main(argv).then((code) => {
    process.exitCode = code;
  });
}

if (require.main === module) main();

module.exports = { buildArgv, listenOf, ENV_FLAGS, IP_PLACEHOLDER };
