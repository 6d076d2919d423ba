import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { MetadataDelta, MetadataImage, decodeBatch, imageFromRecords, imageToRecords } from '../../shared/metadata';
import type { MetadataRecord } from '../../shared/metadata';
import { CHANNEL_OPTIONS, loadProto } from '../../shared/rpc/proto';
import type { FetchMetadataWireEntry } from '../../shared/rpc/metadata-wire';
import type { ChaosCluster } from './cluster';
import { sleep } from './cluster';
import type { CommittedEntry, ControllerLog, LeaderObservation } from './history';

// What the Raft checkers need from a live cluster: who claimed to lead which term (from the
// controllers' own logs and from `quorum status` samples taken during the run), and each
// controller's committed metadata log at the end (FetchMetadata is served from the local
// committed log of whichever controller receives it, never forwarded).

/** Every "raft role changed" line of every controller's log: its term and the leader it knew. */
export async function leaderObservationsFromLogs(c: ChaosCluster): Promise<LeaderObservation[]> {
  const out: LeaderObservation[] = [];
  for (const n of c.controllers()) {
    const text = await c.logs(n);
    for (const line of text.split('\n')) {
      if (!line.includes('"raft role changed"')) continue;
      try {
        const j = JSON.parse(line) as { term?: number; leaderId?: number; isLeader?: boolean; nodeId?: number; time?: number };
        if (typeof j.term !== 'number') continue;
        const leaderId = j.isLeader ? (j.nodeId ?? 0) : (j.leaderId ?? 0);
        out.push({ term: j.term, leaderId, source: `${n.name} log${j.isLeader ? ' (became leader)' : ''}`, ...(j.time ? { atMs: j.time } : {}) });
      } catch {
        // not a JSON line (a crash trace): skip
      }
    }
  }
  return out;
}

/** Samples `quorum status` of every controller (its own view) until stopped. */
export class QuorumSampler {
  private stopped = false;
  private loop?: Promise<void>;
  readonly observations: LeaderObservation[] = [];

  constructor(
    private readonly c: ChaosCluster,
    private readonly intervalMs = 1_000,
    private readonly samplesMax = 50_000,
  ) {}

  start(startedAtMs: number): void {
    this.loop = (async () => {
      while (!this.stopped && this.observations.length < this.samplesMax) {
        await Promise.all(
          this.c.controllers().map(async (n) => {
            try {
              const q = await (await this.c.adminOnly(n, 1_000)).describeQuorum();
              this.observations.push({ term: q.term, leaderId: q.leaderId, source: `quorum status via ${n.name}`, atMs: Date.now() - startedAtMs });
            } catch {
              // unreachable under a fault: nothing observed
            }
          }),
        );
        await sleep(this.intervalMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** A digest of an image that does not depend on map iteration order: sorted record JSON. */
export function imageDigest(image: MetadataImage): string {
  const lines = imageToRecords(image)
    .map((r) => JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v instanceof Uint8Array ? Buffer.from(v).toString('base64') : v)))
    .sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex');
}

/**
 * Reads one controller's committed metadata from offset 0 until it reaches `untilOffset`
 * (or nothing arrives for idleMs), replaying it into an image as a broker would.
 */
export async function fetchControllerLog(controller: string, address: string, untilOffset: number, idleMs = 2_000, timeoutMs = 30_000): Promise<ControllerLog> {
  const pkg = loadProto('controller.proto') as unknown as { flotilla: { controller: { Controller: grpc.ServiceClientConstructor } } };
  const client = new pkg.flotilla.controller.Controller(address, grpc.credentials.createInsecure(), CHANNEL_OPTIONS);
  const entries: CommittedEntry[] = [];
  let image = MetadataImage.EMPTY;
  let snapshot: MetadataRecord[] | null = null;
  try {
    await new Promise<void>((resolve, reject) => {
      const stream = (client as unknown as { fetchMetadata(req: object): grpc.ClientReadableStream<{ entries: FetchMetadataWireEntry[] }> }).fetchMetadata({
        fromOffset: 0,
        clientId: 'chaos-checker',
        maxEntries: 0,
      });
      let idle: NodeJS.Timeout | undefined;
      const finish = (err?: Error): void => {
        clearTimeout(idle);
        clearTimeout(overall);
        stream.removeAllListeners();
        stream.on('error', () => undefined);
        stream.cancel();
        if (err) reject(err);
        else resolve();
      };
      const overall = setTimeout(() => finish(new Error(`${controller}: FetchMetadata did not reach offset ${untilOffset} in ${timeoutMs} ms (at ${image.offset})`)), timeoutMs);
      const armIdle = (): void => {
        clearTimeout(idle);
        idle = setTimeout(() => finish(), idleMs);
      };
      armIdle();
      stream.on('data', (msg: { entries: FetchMetadataWireEntry[] }) => {
        let delta: MetadataDelta | null = null;
        for (const e of msg.entries) {
          const bytes = Buffer.from(e.batch);
          if (e.snapshot) {
            if (delta) image = delta.apply();
            delta = null;
            snapshot ??= [];
            if (bytes.length > 0) snapshot.push(...decodeBatch(bytes));
            if (e.snapshotDone) {
              image = imageFromRecords(snapshot, e.offset);
              snapshot = null;
            }
            continue;
          }
          // Beyond the target: later writes, compared another time.
          if (e.offset > untilOffset) continue;
          entries.push({ offset: e.offset, term: e.term, digest: createHash('sha256').update(bytes).digest('hex') });
          if (e.offset <= image.offset) continue;
          delta ??= new MetadataDelta(image);
          delta.replayBatch(decodeBatch(bytes), e.offset);
        }
        if (delta) image = delta.apply();
        const last = msg.entries[msg.entries.length - 1];
        if (image.offset >= untilOffset || (last !== undefined && last.offset >= untilOffset)) finish();
        else armIdle();
      });
      stream.on('error', (e) => finish(e));
      stream.on('end', () => finish());
    });
  } finally {
    client.close();
  }
  return { controller, entries, imageOffset: image.offset, imageDigest: imageDigest(image) };
}

/**
 * Every controller's log up to the leader's commit index, after waiting (bounded) for all
 * of them to apply it. Controllers that did not get there are compared where they are.
 */
export async function collectControllerLogs(c: ChaosCluster, waitMs: number): Promise<ControllerLog[]> {
  const deadline = Date.now() + waitMs;
  let target = 0;
  for (let i = 0; Date.now() < deadline && i < 1_000; i++) {
    const views = await Promise.all(c.controllers().map(async (n) => (await c.adminOnly(n, 2_000)).describeQuorum().catch(() => undefined)));
    const commits = views.map((v) => v?.commitIndex ?? -1);
    const applied = views.map((v) => v?.appliedIndex ?? -1);
    target = Math.max(...commits);
    if (applied.every((a) => a >= target)) break;
    await sleep(500);
  }
  const logs: ControllerLog[] = [];
  for (const n of c.controllers()) logs.push(await fetchControllerLog(n.name, await c.address(n), target));
  return logs;
}
