import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PartitionLog, encodeRecordBatch } from '../broker/log';
import type { RecordInput } from '../broker/log';

// Micro-benchmark of the partition log's share of one acks=all replication round, in one
// process and without any networking: the leader appends a producer batch (offsets
// stamped), then a follower reads it back from the leader's log at the tail (as a
// replica fetch does) and appends it to its own log. It prints CPU µs per record (user +
// system of the whole process, threadpool included, from process.cpuUsage) for the round and
// for tail reads alone, which is what matters on a shared, noisy machine. A third phase
// times a new follower catching up on the whole log with 1 MiB reads (multi-batch reads
// from the files, multi-batch appends). Wall-clock rates are printed too but are not
// comparable between runs.
//
//   node dist/bench/log-path.js [--batches 3000] [--records 64] [--value-bytes 1024] [--runs 2] [--tail-cache-bytes N]

interface Args {
  batches: number;
  records: number;
  valueBytes: number;
  runs: number;
  /** LogConfig.tailCacheBytes for both logs; undefined = the default. */
  tailCacheBytes?: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { batches: 3000, records: 64, valueBytes: 1024, runs: 2 };
  for (let i = 0; i < argv.length; i += 2) {
    const v = Number(argv[i + 1]);
    if (!Number.isSafeInteger(v) || v < (argv[i] === '--tail-cache-bytes' ? 0 : 1)) throw new Error(`${argv[i]} needs a positive integer`);
    if (argv[i] === '--batches') a.batches = v;
    else if (argv[i] === '--records') a.records = v;
    else if (argv[i] === '--value-bytes') a.valueBytes = v;
    else if (argv[i] === '--runs') a.runs = v;
    else if (argv[i] === '--tail-cache-bytes') a.tailCacheBytes = v;
    else throw new Error(`unknown option ${argv[i]}`);
  }
  return a;
}

function cpuMicros(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

async function runOnce(a: Args): Promise<{ roundUs: number; tailReadUs: number; catchUpUs: number; wallMs: number }> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'flotilla-bench-log-'));
  try {
    const config = a.tailCacheBytes === undefined ? {} : { tailCacheBytes: a.tailCacheBytes };
    const leader = await PartitionLog.open({ dir: path.join(root, 'leader'), config });
    const follower = await PartitionLog.open({ dir: path.join(root, 'follower'), config });
    const records: RecordInput[] = [];
    for (let i = 0; i < a.records; i++) records.push({ key: Buffer.from(`key-${i}`), value: Buffer.alloc(a.valueBytes, i), headers: [], timestampMs: 1_700_000_000_000 + i });
    const batch = encodeRecordBatch({ records });
    // process.cpuUsage is itself costly on some machines: read it once per phase, not per step.
    const start = Date.now();
    let t = cpuMicros();
    for (let i = 0; i < a.batches; i++) {
      await leader.append(batch, { assignOffsets: true, leaderEpoch: 0 });
      const r = await leader.read(follower.logEndOffset, 1024 * 1024, 'logEnd');
      await follower.append(r.records, { assignOffsets: false, leaderEpoch: 0 });
    }
    const roundUs = cpuMicros() - t;
    const wallMs = Date.now() - start;
    if (follower.logEndOffset !== a.batches * a.records) throw new Error(`follower ended at ${follower.logEndOffset}`);
    // Tail reads alone: one batch each (maxBytes 1), over the newest batches, as a caught-up
    // follower or consumer reads them.
    const tailBatches = Math.min(a.batches, 16);
    const tailRounds = 50;
    t = cpuMicros();
    for (let round = 0; round < tailRounds; round++) {
      for (let i = a.batches - tailBatches; i < a.batches; i++) await leader.read(i * a.records, 1, 'logEnd');
    }
    const tailReadUs = (cpuMicros() - t) / (tailRounds * tailBatches * a.records);
    // Catch-up: a new follower copies the whole log with 1 MiB reads (many batches per read
    // and per append, mostly from the files).
    const late = await PartitionLog.open({ dir: path.join(root, 'late'), config });
    t = cpuMicros();
    for (let i = 0; i < a.batches && late.logEndOffset < leader.logEndOffset; i++) {
      const r = await leader.read(late.logEndOffset, 1024 * 1024, 'logEnd');
      await late.append(r.records, { assignOffsets: false, leaderEpoch: 0 });
    }
    const catchUpUs = (cpuMicros() - t) / (a.batches * a.records);
    if (late.logEndOffset !== leader.logEndOffset) throw new Error(`catch-up ended at ${late.logEndOffset}`);
    await late.close();
    await leader.close();
    await follower.close();
    return { roundUs: roundUs / (a.batches * a.records), tailReadUs, catchUpUs, wallMs };
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  // One warm-up run (JIT) that is not reported.
  await runOnce({ ...a, batches: Math.min(a.batches, 500) });
  for (let run = 1; run <= a.runs; run++) {
    const r = await runOnce(a);
    const recsPerSec = Math.round((a.batches * a.records) / (r.wallMs / 1000));
    console.log(
      `run ${run}: ${a.batches} batches x ${a.records} records of ${a.valueBytes} B; CPU µs/record: round (leader append + tail read + follower append) ${r.roundUs.toFixed(2)}, ` +
        `tail read alone ${r.tailReadUs.toFixed(2)}, catch-up (1 MiB reads + appends) ${r.catchUpUs.toFixed(2)} (wall ${recsPerSec} records/s)`,
    );
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
