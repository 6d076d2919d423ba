import * as grpc from '@grpc/grpc-js';
import { argNumber, cpuMs, round, sleep } from './bench-support';
import { freePort } from '../test/integration/controller-launcher';

// The ceiling for the data-plane benchmark (issue 3 §8): what bare @grpc/grpc-js moves on this
// machine over one loopback bidi stream, with nothing else in the path — no protobuf (raw
// Buffers), no disk, no replication. The client sends messages of `batchRecords` records of
// `recordBytes` each (the shape a batching producer sends), keeps `inFlight` records
// outstanding, and the server answers each message with an 8-byte ack (as a produce response
// is small). The server runs in a child process so that client and server each have an event
// loop, as a producer and a broker would.
//
// Usage: node dist/bench/grpc-ceiling.js [--records 200000] [--record-bytes 1024]
//          [--batch-records 64] [--in-flight 512] [--time-cap-s 30]

export interface CeilingOptions {
  readonly records?: number;
  readonly recordBytes?: number;
  readonly batchRecords?: number;
  readonly inFlight?: number;
  readonly timeCapMs?: number;
}

export interface CeilingResult {
  readonly records: number;
  readonly recordBytes: number;
  readonly batchRecords: number;
  readonly inFlight: number;
  readonly durationMs: number;
  readonly recordsPerSec: number;
  readonly mbPerSec: number;
  /** CPU per record, µs: the server child and this client process. */
  readonly cpuUsPerRecord: { readonly server: number; readonly client: number };
}

const identity = (b: Buffer): Buffer => b;
const SERVICE: grpc.ServiceDefinition = {
  Pump: {
    path: '/flotilla.bench.Ceiling/Pump',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};
const OPTIONS = { 'grpc.max_receive_message_length': 16 * 1024 * 1024, 'grpc.max_send_message_length': 16 * 1024 * 1024 };

/** Child-process side: serve Pump on the given port until the parent goes away. */
async function serve(port: number): Promise<void> {
  const server = new grpc.Server(OPTIONS);
  server.addService(SERVICE, {
    Pump: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (b: Buffer) => {
        const ack = Buffer.allocUnsafe(8);
        ack.writeDoubleBE(b.length);
        call.write(ack);
      });
      call.on('end', () => call.end());
    },
  });
  await new Promise<void>((resolve, reject) => server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  process.send?.('ready');
  process.on('disconnect', () => process.exit(0));
}

export async function benchGrpcCeiling(o: CeilingOptions = {}): Promise<CeilingResult> {
  const records = o.records ?? 200_000;
  const recordBytes = o.recordBytes ?? 1024;
  const batchRecords = o.batchRecords ?? 64;
  const inFlight = o.inFlight ?? 512;
  const timeCapMs = o.timeCapMs ?? 30_000;
  const port = await freePort();
  const { fork } = await import('node:child_process');
  const child = fork(__filename, ['--serve', String(port)], { stdio: 'inherit' });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('message', () => resolve());
      child.once('exit', (c) => reject(new Error(`ceiling server exited ${c}`)));
    });
    const Client = grpc.makeGenericClientConstructor(SERVICE, 'Ceiling');
    const client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), OPTIONS);
    const call = (client as unknown as { Pump: () => grpc.ClientDuplexStream<Buffer, Buffer> }).Pump();
    const message = Buffer.alloc(recordBytes * batchRecords, 0x61);
    const windowMessages = Math.max(1, Math.floor(inFlight / batchRecords));
    const totalMessages = Math.ceil(records / batchRecords);
    let sent = 0;
    let acked = 0;
    const serverBefore = cpuMs(child.pid) ?? 0;
    const clientBefore = process.cpuUsage();
    const t0 = performance.now();
    const deadline = t0 + timeCapMs;
    await new Promise<void>((resolve, reject) => {
      const pump = (): void => {
        while (sent < totalMessages && sent - acked < windowMessages && performance.now() < deadline) {
          sent++;
          call.write(message);
        }
        if (acked === sent && (sent === totalMessages || performance.now() >= deadline)) resolve();
      };
      call.on('data', () => {
        acked++;
        pump();
      });
      call.on('error', reject);
      pump();
    });
    const durationMs = performance.now() - t0;
    const clientCpu = process.cpuUsage(clientBefore);
    const serverCpuMs = (cpuMs(child.pid) ?? 0) - serverBefore;
    call.end();
    client.close();
    const recs = acked * batchRecords;
    return {
      records: recs,
      recordBytes,
      batchRecords,
      inFlight: windowMessages * batchRecords,
      durationMs: round(durationMs, 1),
      recordsPerSec: round(recs / (durationMs / 1000), 0),
      mbPerSec: round((recs * recordBytes) / 1e6 / (durationMs / 1000), 1),
      cpuUsPerRecord: {
        server: recs ? round((serverCpuMs * 1000) / recs, 1) : NaN,
        client: recs ? round((clientCpu.user + clientCpu.system) / recs, 1) : NaN,
      },
    };
  } finally {
    child.kill('SIGKILL');
    await sleep(10);
  }
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  if (argv[0] === '--serve') {
    void serve(Number(argv[1]));
  } else {
    benchGrpcCeiling({
      records: argNumber(argv, 'records', 200_000),
      recordBytes: argNumber(argv, 'record-bytes', 1024),
      batchRecords: argNumber(argv, 'batch-records', 64),
      inFlight: argNumber(argv, 'in-flight', 512),
      timeCapMs: argNumber(argv, 'time-cap-s', 30) * 1000,
    })
      .then((r) => {
        console.log(`grpc-js stream ceiling: ${r.records} records of ${r.recordBytes} B in messages of ${r.batchRecords}, ${r.inFlight} in flight: ${r.recordsPerSec} records/s, ${r.mbPerSec} MB/s; CPU µs per record: server ${r.cpuUsPerRecord.server}, client ${r.cpuUsPerRecord.client}`);
        console.log(JSON.stringify(r));
        process.exit(0);
      })
      .catch((e) => {
        console.error(e);
        process.exit(1);
      });
  }
}
