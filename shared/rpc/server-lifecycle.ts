import * as grpc from '@grpc/grpc-js';

// Starting and stopping the one gRPC server each Flotilla process runs.

export function splitHostPort(listen: string): [string, string] {
  const m = /^(.+):(\d{1,5})$/.exec(listen);
  if (!m) throw new Error(`listen address "${listen}" is not host:port`);
  return [m[1]!, m[2]!];
}

/** Bind insecurely to host:port (port 0 picks one); resolves with the bound port. */
export function bindServer(server: grpc.Server, host: string, port: string): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
}

/** Let calls in flight finish for up to graceMs, then cut the rest. */
export async function shutdownServer(server: grpc.Server, graceMs: number): Promise<void> {
  await new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
