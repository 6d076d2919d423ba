import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

// Every .proto lives in <repo>/proto. Compiled code runs from <repo>/dist/shared/rpc,
// sources from <repo>/shared/rpc: walk up until a folder holding proto/ is found.
function protoDir(): string {
  let dir = __dirname;
  for (let i = 0; i < 6; i++) {
    const candidate = path.join(dir, 'proto');
    try {
      require('node:fs').accessSync(path.join(candidate, 'raft.proto'));
      return candidate;
    } catch {
      dir = path.dirname(dir);
    }
  }
  throw new Error(`proto/ not found above ${__dirname}`);
}

const cache = new Map<string, grpc.GrpcObject>();

/** Load a .proto from proto/ (cached). Longs as strings would surprise callers: use numbers. */
export function loadProto(fileName: string): grpc.GrpcObject {
  let pkg = cache.get(fileName);
  if (!pkg) {
    const def = protoLoader.loadSync(path.join(protoDir(), fileName), {
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [protoDir()],
    });
    pkg = grpc.loadPackageDefinition(def);
    cache.set(fileName, pkg);
  }
  return pkg;
}

/** Chosen deliberately for every server and client: large enough for a metadata snapshot chunk. */
export const MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
  // Reconnect quickly to a restarted peer: the default backoff grows to two minutes.
  'grpc.initial_reconnect_backoff_ms': 100,
  'grpc.max_reconnect_backoff_ms': 1_000,
  // A peer restarted under the same name may come back at another IP (containers): look the
  // name up again within a second of a failure, not after grpc-js's default 30 s.
  'grpc.dns_min_time_between_resolutions_ms': 1_000,
};

export const SERVER_OPTIONS: grpc.ServerOptions = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
};
