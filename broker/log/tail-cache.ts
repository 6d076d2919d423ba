// The in-memory tail of a partition log: copies of the newest batches of the active segment,
// so that reads at the log end (followers, caught-up consumers) need no index lookup and no
// file read. PartitionLog owns one and keeps it equal to the end of the active segment:
// filled by append, cut by truncation, emptied on roll and restart (README "The in-memory
// tail").
//
// Why a ring buffer of copies rather than references to the appended buffers: keeping the
// append buffers alive for a while makes V8 promote them to the old generation, so their
// memory is freed only at the next full GC and every new append buffer lands on fresh pages
// (measured: 2.4x the minor page faults and more CPU per record than without any tail). One
// long-lived ring, allocated at the first append and reused, costs one memcpy per batch and
// leaves the transient buffers short-lived. Reads copy out of it (the ring is overwritten
// later, so a view could change under a caller).

interface Entry {
  readonly ringPos: number;
  readonly length: number;
  readonly baseOffset: number;
  readonly lastOffset: number;
}

export class TailCache {
  private ring: Buffer | undefined;
  /** Live entries, oldest first, from `head`; the batches are contiguous in offsets. */
  private entries: Entry[] = [];
  private head = 0;
  private writePos = 0;
  private bytes = 0;
  private capacityBytes = 0;

  /** Bytes of batches held. */
  get sizeBytes(): number {
    return this.bytes;
  }

  get isEmpty(): boolean {
    return this.entries.length === this.head;
  }

  /**
   * Adds the batch that was just written at the end of the log. `capacityBytes` is the bound
   * in force (0 = off); a change reallocates the ring and empties the tail.
   */
  add(batch: Buffer, baseOffset: number, lastOffset: number, capacityBytes: number): void {
    if (capacityBytes !== this.capacityBytes) {
      this.clear();
      this.capacityBytes = capacityBytes;
      this.ring = undefined;
    }
    if (batch.length > capacityBytes) {
      // It cannot be kept, and the tail must stay contiguous up to the log end: empty it.
      this.clear();
      return;
    }
    this.ring ??= Buffer.allocUnsafeSlow(capacityBytes);
    let at = this.writePos;
    if (at + batch.length > this.ring.length) {
      // Wrap: the entries in the skipped end of the ring are the oldest; evict them first.
      while (!this.isEmpty && this.entries[this.head]!.ringPos >= at) this.evictOldest();
      at = 0;
    }
    const end = at + batch.length;
    while (!this.isEmpty) {
      const e = this.entries[this.head]!;
      if (e.ringPos < end && e.ringPos + e.length > at) this.evictOldest();
      else break;
    }
    batch.copy(this.ring, at);
    this.entries.push({ ringPos: at, length: batch.length, baseOffset, lastOffset });
    this.bytes += batch.length;
    this.writePos = end;
    // Compact now and then, so eviction stays O(1) amortised without Array.shift.
    if (this.head >= 1024 && this.head * 2 >= this.entries.length) {
      this.entries = this.entries.slice(this.head);
      this.head = 0;
    }
  }

  private evictOldest(): void {
    this.bytes -= this.entries[this.head++]!.length;
  }

  /** Forgets every batch (roll, restart); the ring is kept for reuse. */
  clear(): void {
    this.entries = [];
    this.head = 0;
    this.writePos = 0;
    this.bytes = 0;
  }

  /** Frees the ring too (close). */
  release(): void {
    this.clear();
    this.ring = undefined;
    this.capacityBytes = 0;
  }

  /** Drops the batches at or past `offset` (the log was truncated there, at a batch boundary). */
  truncateFrom(offset: number): void {
    while (!this.isEmpty && this.entries[this.entries.length - 1]!.lastOffset >= offset) {
      const e = this.entries.pop()!;
      this.bytes -= e.length;
      this.writePos = e.ringPos;
    }
    if (this.isEmpty) this.clear();
  }

  /**
   * What LogSegment.read would return for a read from `firstOffset` — at least the batch
   * holding it, then whole batches within maxBytes, none holding an offset at or past
   * maxOffsetExclusive — as a fresh copy; undefined when that batch is not held here.
   * `logEndOffset` is the end of the log (the tail always reaches it).
   */
  read(firstOffset: number, maxBytes: number, maxOffsetExclusive: number, logEndOffset: number): { bytes: Buffer; nextOffset: number } | undefined {
    if (this.isEmpty || firstOffset < this.entries[this.head]!.baseOffset || firstOffset >= logEndOffset) return undefined;
    const t = this.entries;
    let lo = this.head;
    let hi = t.length - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid]!.lastOffset < firstOffset) lo = mid + 1;
      else hi = mid;
    }
    const limit = Math.max(maxBytes, t[lo]!.length);
    let total = 0;
    let last = lo;
    for (let i = lo; i < t.length; i++) {
      const e = t[i]!;
      if (total + e.length > limit || e.lastOffset >= maxOffsetExclusive) break;
      total += e.length;
      last = i + 1;
    }
    if (total === 0) return { bytes: Buffer.alloc(0), nextOffset: firstOffset };
    const out = Buffer.allocUnsafe(total);
    let pos = 0;
    for (let i = lo; i < last; i++) {
      const e = t[i]!;
      pos += this.ring!.copy(out, pos, e.ringPos, e.ringPos + e.length);
    }
    return { bytes: out, nextOffset: t[last - 1]!.lastOffset + 1 };
  }
}
