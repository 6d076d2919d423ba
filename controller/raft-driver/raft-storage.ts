// Durable Raft storage on LevelDB (`level`), under <dataDir>/raft.
//
// Key layout (utf8 keys, binary values; LevelDB keeps keys sorted bytewise):
//   "v"                      format version (JSON number)
//   "c"                      bootstrap ConfState, written once on first open (JSON)
//   "h"                      HardState {term, vote, commit} (JSON)
//   "s"                      snapshot header {index, term, confState, dataBytes, chunks} (JSON)
//   "s/<chunk, 8 digits>"    snapshot data, cut into SNAPSHOT_VALUE_BYTES pieces so no single
//                            value is tens of MB (LevelDB copies values whole on compaction)
//   "e/<index, 16 digits>"   one log entry: [type u8][term u48 BE][data...]. 16 decimal digits
//                            cover Number.MAX_SAFE_INTEGER, so string order is index order.
//
// `applied` is not stored: on restart the state machine is rebuilt from the snapshot and
// the committed entries after it are re-applied (RaftStorageState.applied = snapshot index).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Level } from 'level';
import { ConfChangeType, ConfState, Entry, EntryType, HardState, RaftStorageState, Ready, Snapshot, SnapshotMetadata, encodeConfChange } from '../raft';

const FORMAT_VERSION = 1;
const KEY_VERSION = 'v';
const KEY_BOOTSTRAP_CONF = 'c';
const KEY_HARD_STATE = 'h';
const KEY_SNAPSHOT = 's';
const ENTRY_PREFIX = 'e/';
/** Upper bound of the entry key range: '0' is the byte after '/'. */
const ENTRY_PREFIX_END = 'e0';
const INDEX_DIGITS = 16;
/** Snapshot data is stored in pieces of this size. */
export const SNAPSHOT_VALUE_BYTES = 4 * 1024 * 1024;
/** Entry value header: one byte of type, six bytes of term (terms stay far below 2^48). */
const ENTRY_HEADER_BYTES = 7;

type Op = { type: 'put'; key: string; value: Uint8Array } | { type: 'del'; key: string };

interface SnapshotHeader {
  index: number;
  term: number;
  confState: ConfState;
  dataBytes: number;
  chunks: number;
}

export function entryKey(index: number): string {
  assert(Number.isSafeInteger(index) && index > 0, `bad entry index ${index}`);
  return ENTRY_PREFIX + String(index).padStart(INDEX_DIGITS, '0');
}

function chunkKey(i: number): string {
  return `${KEY_SNAPSHOT}/${String(i).padStart(8, '0')}`;
}

export function encodeEntry(e: Entry): Uint8Array {
  const b = Buffer.allocUnsafe(ENTRY_HEADER_BYTES + e.data.length);
  b[0] = e.type;
  b.writeUIntBE(e.term, 1, 6);
  b.set(e.data, ENTRY_HEADER_BYTES);
  return b;
}

export function decodeEntry(index: number, v: Uint8Array): Entry {
  assert(v.length >= ENTRY_HEADER_BYTES, `entry ${index}: ${v.length} bytes is shorter than its header`);
  const b = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  const type = b[0] as EntryType;
  assert(type === EntryType.Normal || type === EntryType.ConfChange, `entry ${index}: unknown type ${type}`);
  return { index, term: b.readUIntBE(1, 6), type, data: b.subarray(ENTRY_HEADER_BYTES) };
}

const json = (v: unknown): Uint8Array => Buffer.from(JSON.stringify(v), 'utf8');
const unjson = <T>(v: Uint8Array): T => JSON.parse(Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('utf8')) as T;

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(`raft-storage invariant broken: ${msg}`);
}

export class RaftStorage {
  /** Index range of the entries on disk, [firstIndex, lastIndex]; empty when lastIndex < firstIndex. */
  private firstIndex = 1;
  private lastIndex = 0;
  private snapshotIndex = 0;
  private snapshotChunks = 0;
  /** The last hard state written, to tell a commit-only change from a term/vote change. */
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  /** hardState holds a commit index newer than the stored one (see persist). */
  private hardStateDirty = false;
  private closed = false;

  private constructor(private readonly db: Level<string, Uint8Array>, readonly dir: string) {}

  /** Open (creating if needed) <dataDir>/raft. */
  static async open(dataDir: string): Promise<RaftStorage> {
    const dir = path.join(dataDir, 'raft');
    fs.mkdirSync(dir, { recursive: true });
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await db.open();
    const version = await db.get(KEY_VERSION);
    if (version === undefined) {
      await db.put(KEY_VERSION, json(FORMAT_VERSION));
    } else if (unjson<number>(version) !== FORMAT_VERSION) {
      await db.close();
      throw new Error(`${dir}: raft storage format ${unjson<number>(version)} is not ${FORMAT_VERSION}`);
    }
    return new RaftStorage(db, dir);
  }

  /**
   * Read everything the core needs to restart. `bootstrap` is the configuration to use when
   * the log holds no ConfChange yet (configured voters, or none when joining); it is stored
   * on first start and the stored one wins afterwards, so editing the voter list of an
   * existing node cannot silently change its bootstrap membership.
   */
  /**
   * First start. As etcd's bootstrap does, the initial voters become committed AddVoter
   * entries 1..n of term 1, identical on every founding node (voters sorted), so the
   * membership is part of the replicated log: a controller added later receives these
   * entries (or a snapshot that covers them) and so learns who the voters are. Without
   * this a joiner would know only the changes after bootstrap and could count itself as
   * the whole quorum. A joining node writes nothing and starts with an empty log.
   */
  private async writeBootstrap(bootstrap: ConfState): Promise<void> {
    const ops: Op[] = [{ type: 'put', key: KEY_BOOTSTRAP_CONF, value: json(bootstrap) }];
    const voters = [...bootstrap.voters].sort((a, b) => a - b);
    if (voters.length > 0) {
      const entries: Entry[] = voters.map((id, i) => ({
        term: 1,
        index: i + 1,
        type: EntryType.ConfChange,
        data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: id }),
      }));
      await this.persist({ entries, hardState: { term: 1, vote: 0, commit: voters.length } });
    }
    await this.db.batch(ops, { sync: true });
  }

  async load(bootstrap: ConfState): Promise<RaftStorageState> {
    let initialConfState = bootstrap;
    const storedConf = await this.db.get(KEY_BOOTSTRAP_CONF);
    if (storedConf === undefined) {
      await this.writeBootstrap(bootstrap);
    } else {
      initialConfState = unjson<ConfState>(storedConf);
    }
    // The bootstrap membership lives in the log itself (see writeBootstrap), so the core
    // starts from an empty configuration and replays it; a joining node learns it the same way.
    if (initialConfState.voters.length > 0) initialConfState = { voters: [], learners: [] };

    const hsValue = await this.db.get(KEY_HARD_STATE);
    let hardState: HardState = hsValue === undefined ? { term: 0, vote: 0, commit: 0 } : unjson<HardState>(hsValue);

    let snapshot: Snapshot | undefined;
    const header = await this.readSnapshotHeader();
    if (header) {
      snapshot = { metadata: { index: header.index, term: header.term, confState: header.confState }, data: await this.readSnapshotData(header) };
      this.snapshotIndex = header.index;
      this.snapshotChunks = header.chunks;
    }

    const entries: Entry[] = [];
    for await (const [key, value] of this.db.iterator({ gte: entryKey(this.snapshotIndex + 1), lt: ENTRY_PREFIX_END })) {
      const index = Number(key.slice(ENTRY_PREFIX.length));
      if (index <= this.snapshotIndex) continue;
      const prev = entries.length ? entries[entries.length - 1].index : this.snapshotIndex;
      assert(index === prev + 1, `log gap: entry ${index} follows ${prev}`);
      entries.push(decodeEntry(index, value));
    }
    this.firstIndex = this.snapshotIndex + 1;
    this.lastIndex = entries.length ? entries[entries.length - 1].index : this.snapshotIndex;
    // A snapshot received from a leader is itself committed; never report commit below it.
    if (hardState.commit < this.snapshotIndex) hardState = { ...hardState, commit: this.snapshotIndex };
    this.hardState = hardState;
    return { hardState, snapshot, entries, initialConfState, applied: this.snapshotIndex };
  }

  /**
   * Step 1 of the Ready contract (controller/raft/types.ts): the snapshot, then the entries
   * (replacing stored entries at or after the first new index), then the hard state.
   *
   * THE FSYNC: everything goes into ONE LevelDB batch written with `sync: true`, so the write
   * is atomic and on stable storage when this promise resolves. The driver sends the Ready's
   * messages (votes, append acknowledgements) only after that, which is what makes a vote or
   * an acknowledgement a promise that survives a crash (thesis §3.8, etcd rawnode.go).
   *
   * One refinement, after etcd's MustSync rule: a Ready that changes nothing but the commit
   * index is not written at all — the new commit index is kept in memory and goes into the
   * next batch that is written (or the final one at close). Nothing promised to a peer
   * depends on it: the stored commit index is only ever a lower bound (a restarted node
   * applies up to it and learns the rest from the leader again), and skipping the write takes
   * a LevelDB round trip off every write's commit-to-apply path. Returns whether it synced.
   */
  async persist(rd: Pick<Ready, 'snapshot' | 'entries' | 'hardState'>): Promise<boolean> {
    assert(!this.closed, 'persist after close');
    if (!rd.snapshot && rd.entries.length === 0 && !rd.hardState) return false;
    const ops: Op[] = [];
    const sync = !!rd.snapshot || rd.entries.length > 0 || (!!rd.hardState && (rd.hardState.term !== this.hardState.term || rd.hardState.vote !== this.hardState.vote));
    if (!sync) {
      // Commit index only: remembered, written with the next batch.
      this.hardState = rd.hardState!;
      this.hardStateDirty = true;
      return false;
    }
    const hs = rd.hardState ?? (this.hardStateDirty ? this.hardState : undefined);
    let firstIndex = this.firstIndex;
    let lastIndex = this.lastIndex;
    let snapshotIndex = this.snapshotIndex;
    let snapshotChunks = this.snapshotChunks;

    if (rd.snapshot) {
      // The core installs a snapshot only when its log does not already contain the
      // snapshot's last entry, and then discards its whole log: so do we.
      for (let i = firstIndex; i <= lastIndex; i++) ops.push({ type: 'del', key: entryKey(i) });
      snapshotChunks = this.putSnapshot(ops, rd.snapshot, snapshotChunks);
      snapshotIndex = rd.snapshot.metadata.index;
      firstIndex = snapshotIndex + 1;
      lastIndex = snapshotIndex;
    }

    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      assert(first > snapshotIndex, `entry ${first} is covered by the snapshot at ${snapshotIndex}`);
      assert(first <= lastIndex + 1, `entry ${first} would leave a gap after ${lastIndex}`);
      // A conflicting append truncates the log: stored entries from `first` on are replaced.
      for (let i = first + rd.entries.length; i <= lastIndex; i++) ops.push({ type: 'del', key: entryKey(i) });
      let expected = first;
      for (const e of rd.entries) {
        assert(e.index === expected++, `entries not contiguous at ${e.index}`);
        ops.push({ type: 'put', key: entryKey(e.index), value: encodeEntry(e) });
      }
      lastIndex = rd.entries[rd.entries.length - 1].index;
    }

    if (hs) ops.push({ type: 'put', key: KEY_HARD_STATE, value: json(hs) });

    await this.db.batch(ops, { sync });
    if (hs) this.hardState = hs;
    this.hardStateDirty = false;
    this.firstIndex = firstIndex;
    this.lastIndex = lastIndex;
    this.snapshotIndex = snapshotIndex;
    this.snapshotChunks = snapshotChunks;
    return sync;
  }

  /**
   * Store a snapshot the local node took (after core.compact()) and delete the entries it
   * replaces (index <= snapshot index). Entries after it stay. One synced batch: a crash
   * leaves either the old snapshot with the full log or the new one with the shorter log.
   */
  async saveSnapshotAndCompact(snapshot: Snapshot): Promise<void> {
    assert(!this.closed, 'saveSnapshotAndCompact after close');
    const index = snapshot.metadata.index;
    if (index <= this.snapshotIndex) return;
    assert(index <= this.lastIndex, `snapshot at ${index} is past the last stored entry ${this.lastIndex}`);
    const ops: Op[] = [];
    for (let i = this.firstIndex; i <= index; i++) ops.push({ type: 'del', key: entryKey(i) });
    const chunks = this.putSnapshot(ops, snapshot, this.snapshotChunks);
    await this.db.batch(ops, { sync: true });
    this.snapshotIndex = index;
    this.snapshotChunks = chunks;
    this.firstIndex = index + 1;
  }

  /** The stored entry range, for status and tests. */
  range(): { firstIndex: number; lastIndex: number; snapshotIndex: number } {
    return { firstIndex: this.firstIndex, lastIndex: this.lastIndex, snapshotIndex: this.snapshotIndex };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // The newest commit index, so a clean restart applies everything it had applied.
    if (this.hardStateDirty) await this.db.put(KEY_HARD_STATE, json(this.hardState));
    await this.db.close();
  }

  /** Adds the ops writing `snapshot` (and deleting surplus old chunks); returns the new chunk count. */
  private putSnapshot(ops: Op[], snapshot: Snapshot, oldChunks: number): number {
    const data = snapshot.data;
    const chunks = Math.ceil(data.length / SNAPSHOT_VALUE_BYTES);
    const m: SnapshotMetadata = snapshot.metadata;
    const header: SnapshotHeader = { index: m.index, term: m.term, confState: m.confState, dataBytes: data.length, chunks };
    for (let i = 0; i < chunks; i++) {
      ops.push({ type: 'put', key: chunkKey(i), value: data.subarray(i * SNAPSHOT_VALUE_BYTES, (i + 1) * SNAPSHOT_VALUE_BYTES) });
    }
    for (let i = chunks; i < oldChunks; i++) ops.push({ type: 'del', key: chunkKey(i) });
    ops.push({ type: 'put', key: KEY_SNAPSHOT, value: json(header) });
    return chunks;
  }

  private async readSnapshotHeader(): Promise<SnapshotHeader | undefined> {
    const v = await this.db.get(KEY_SNAPSHOT);
    return v === undefined ? undefined : unjson<SnapshotHeader>(v);
  }

  private async readSnapshotData(h: SnapshotHeader): Promise<Uint8Array> {
    const data = new Uint8Array(h.dataBytes);
    let offset = 0;
    for (let i = 0; i < h.chunks; i++) {
      const chunk = await this.db.get(chunkKey(i));
      assert(chunk !== undefined, `snapshot chunk ${i}/${h.chunks} missing`);
      data.set(chunk, offset);
      offset += chunk.length;
    }
    assert(offset === h.dataBytes, `snapshot has ${offset} bytes, header says ${h.dataBytes}`);
    return data;
  }
}
