#!/usr/bin/env node
// The image's HEALTHCHECK (exec form: the image has no shell). Healthy = the node accepts a
// TCP connection on the address it listens on (written by entrypoint.js), within
// TIMEOUT_MS. It says the gRPC server is up; whether a controller has a leader or a broker
// is unfenced is for `flotilla quorum status` / `cluster describe` to tell.
// Exit 0 healthy, 1 unhealthy (Docker's convention).
'use strict';

const fs = require('node:fs');
const net = require('node:net');

const LISTEN_FILE = process.env.FLOTILLA_HEALTH_FILE || '/tmp/flotilla-listen';
const TIMEOUT_MS = 2_000;

function fail(why) {
  process.stderr.write(`unhealthy: ${why}\n`);
  process.exit(1);
}

let listen;
try {
  listen = fs.readFileSync(LISTEN_FILE, 'utf8').trim();
} catch (e) {
  fail(`no listen address in ${LISTEN_FILE} (${e.message})`);
}
const m = /^(.+):(\d{1,5})$/.exec(listen);
if (!m) fail(`"${listen}" in ${LISTEN_FILE} is not host:port`);
// A wildcard bind is reached through loopback.
const host = m[1] === '0.0.0.0' || m[1] === '::' || m[1] === '[::]' ? '127.0.0.1' : m[1];
const socket = net.connect({ host, port: Number(m[2]) });
socket.setTimeout(TIMEOUT_MS, () => fail(`no connection to ${host}:${m[2]} within ${TIMEOUT_MS} ms`));
socket.on('connect', () => {
  socket.end();
  process.exit(0);
});
socket.on('error', (e) => fail(`${host}:${m[2]}: ${e.message}`));
