import { expect } from 'chai';
import { BATCHES_RETAINED_PER_PRODUCER, ProducerStateTable, isNextSequence, lastSequenceOf } from '../../broker/producer';
import { expectThrowsFlotilla } from '../broker-log/helpers';
import { BASE_TIMESTAMP_MS, hdr, leaderAppend, withOffsets } from './helpers';

// The pure per-partition rules of the idempotent producer (broker/producer/producer-state.ts).
// Each test names the rule it checks; offsets come from a simulated leader append.

const INT32_MAX = 0x7fffffff;

describe('producer state: the idempotent producer rules of one partition', () => {
  it('a new producer starting at sequence 0 is appended; starting elsewhere is UNKNOWN_PRODUCER_ID', () => {
    const t = new ProducerStateTable();
    expectThrowsFlotilla(() => t.check([hdr({ pid: 7, seq: 3 })]), 'UNKNOWN_PRODUCER_ID');
    expect(leaderAppend(t, [hdr({ pid: 7, seq: 0, count: 3 })])).to.deep.equal({ kind: 'append', baseOffset: 0, lastOffset: 2 });
    expect(t.get(7)).to.deep.equal({ producerId: 7, epoch: 0, lastTimestampMs: BASE_TIMESTAMP_MS, batches: [{ firstSeq: 0, lastSeq: 2, firstOffset: 0, lastOffset: 2 }] });
  });

  it('a retry of each of the last 5 batches is answered with its original offsets, and nothing changes', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 99, seq: 0, count: 2 })]); // another producer shifts the offsets
    const sent: { seq: number; count: number; baseOffset: number; lastOffset: number }[] = [];
    let seq = 0;
    for (let i = 0; i < 6; i++) {
      const count = i + 1;
      const r = leaderAppend(t, [hdr({ pid: 1, seq, count })]);
      expect(r.kind).to.equal('append');
      sent.push({ seq, count, baseOffset: r.baseOffset!, lastOffset: r.lastOffset! });
      seq += count;
      leaderAppend(t, [hdr({ pid: 2, seq: i, count: 1 })]); // interleaved writes of a second producer
    }
    const before = t.entries();
    const end = t.endOffset;
    for (const b of sent.slice(1)) {
      expect(t.check([hdr({ pid: 1, seq: b.seq, count: b.count })]), `retry of seq ${b.seq}`).to.deep.equal({
        kind: 'duplicate',
        baseOffset: b.baseOffset,
        lastOffset: b.lastOffset,
      });
    }
    expect(t.entries(), 'check changes nothing').to.deep.equal(before);
    expect(t.endOffset).to.equal(end);
  });

  it('the 6th-oldest batch is no longer recognized: its retry is OUT_OF_ORDER_SEQUENCE (as Kafka), never appended twice', () => {
    const t = new ProducerStateTable();
    for (let seq = 0; seq <= BATCHES_RETAINED_PER_PRODUCER; seq++) leaderAppend(t, [hdr({ pid: 1, seq })]);
    expect(t.get(1)!.batches.map((b) => b.firstSeq)).to.deep.equal([1, 2, 3, 4, 5]);
    const e = expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0 })]), 'OUT_OF_ORDER_SEQUENCE');
    expect(e.retriable).to.equal(false);
  });

  it('a batch with the same first sequence but another length is not a duplicate: OUT_OF_ORDER_SEQUENCE', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 1, seq: 0, count: 3 })]);
    expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0, count: 2 })]), 'OUT_OF_ORDER_SEQUENCE');
  });

  it('a gap in the sequence is OUT_OF_ORDER_SEQUENCE; the next sequence is accepted', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 1, seq: 0, count: 5 })]);
    expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 6 })]), 'OUT_OF_ORDER_SEQUENCE');
    expect(t.check([hdr({ pid: 1, seq: 5 })])).to.deep.equal({ kind: 'append' });
  });

  it('an older epoch is INVALID_PRODUCER_EPOCH, also for a retry of a batch the old epoch wrote', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 1, epoch: 0, seq: 0 })]);
    leaderAppend(t, [hdr({ pid: 1, epoch: 1, seq: 0 })]);
    expectThrowsFlotilla(() => t.check([hdr({ pid: 1, epoch: 0, seq: 1 })]), 'INVALID_PRODUCER_EPOCH');
    expectThrowsFlotilla(() => t.check([hdr({ pid: 1, epoch: 0, seq: 0 })]), 'INVALID_PRODUCER_EPOCH');
  });

  it('an epoch bump restarts the sequence at 0 (anything else is OUT_OF_ORDER_SEQUENCE) and forgets the old epoch\'s batches', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 1, epoch: 3, seq: 0, count: 10 })]);
    expectThrowsFlotilla(() => t.check([hdr({ pid: 1, epoch: 4, seq: 10 })]), 'OUT_OF_ORDER_SEQUENCE');
    expect(leaderAppend(t, [hdr({ pid: 1, epoch: 4, seq: 0, count: 2 })]).kind).to.equal('append');
    expect(t.get(1)).to.include({ epoch: 4 });
    expect(t.get(1)!.batches).to.deep.equal([{ firstSeq: 0, lastSeq: 1, firstOffset: 10, lastOffset: 11 }]);
    expect(t.check([hdr({ pid: 1, epoch: 4, seq: 2 })]).kind).to.equal('append');
  });

  it('non-idempotent batches (producer id -1) always pass and leave no state', () => {
    const t = new ProducerStateTable();
    leaderAppend(t, [hdr({ pid: 1, seq: 0 })]);
    expect(leaderAppend(t, [hdr({ pid: -1, seq: 0 }), hdr({ pid: -1, seq: 0 })]).kind).to.equal('append');
    expect(t.size).to.equal(1);
    expect(t.endOffset).to.equal(3);
  });

  it('an idempotent batch without an epoch or a sequence is INVALID_RECORD', () => {
    const t = new ProducerStateTable();
    expectThrowsFlotilla(() => t.check([{ ...hdr({ pid: 1, seq: 0 }), producerEpoch: -1 }]), 'INVALID_RECORD');
    expectThrowsFlotilla(() => t.check([{ ...hdr({ pid: 1, seq: 0 }), baseSequence: -1 }]), 'INVALID_RECORD');
    expectThrowsFlotilla(() => t.check([{ ...hdr({ pid: 1, seq: 0 }), producerId: -2 }]), 'INVALID_RECORD');
  });

  describe('several batches in one request', () => {
    it('batches of one producer must follow each other; two producers may interleave', () => {
      const t = new ProducerStateTable();
      expect(t.check([hdr({ pid: 1, seq: 0, count: 2 }), hdr({ pid: 2, seq: 0 }), hdr({ pid: 1, seq: 2 })]).kind).to.equal('append');
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0, count: 2 }), hdr({ pid: 1, seq: 3 })]), 'OUT_OF_ORDER_SEQUENCE');
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0 }), hdr({ pid: 1, seq: 0 })]), 'OUT_OF_ORDER_SEQUENCE');
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, epoch: 1, seq: 0 }), hdr({ pid: 1, epoch: 0, seq: 1 })]), 'INVALID_PRODUCER_EPOCH');
    });

    it('a retried multi-batch request is answered with the offsets of the whole original append', () => {
      const t = new ProducerStateTable();
      leaderAppend(t, [hdr({ pid: 9, seq: 0 })]);
      const req = [hdr({ pid: 1, seq: 0, count: 2 }), hdr({ pid: 2, seq: 0, count: 3 }), hdr({ pid: 1, seq: 2 })];
      expect(leaderAppend(t, req)).to.deep.equal({ kind: 'append', baseOffset: 1, lastOffset: 6 });
      expect(t.check(req)).to.deep.equal({ kind: 'duplicate', baseOffset: 1, lastOffset: 6 });
    });

    it('a request mixing a duplicate with a new batch, or reordering duplicates, is refused whole', () => {
      const t = new ProducerStateTable();
      leaderAppend(t, [hdr({ pid: 1, seq: 0 }), hdr({ pid: 1, seq: 1 })]);
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 1 }), hdr({ pid: 1, seq: 2 })]), 'OUT_OF_ORDER_SEQUENCE');
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 1 }), hdr({ pid: -1, seq: 0 })]), 'OUT_OF_ORDER_SEQUENCE');
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 1 }), hdr({ pid: 1, seq: 0 })]), 'OUT_OF_ORDER_SEQUENCE');
    });

    it('two retries that were appended separately are not one duplicate when something lies between them', () => {
      const t = new ProducerStateTable();
      leaderAppend(t, [hdr({ pid: 1, seq: 0 })]);
      leaderAppend(t, [hdr({ pid: 2, seq: 0 })]);
      leaderAppend(t, [hdr({ pid: 1, seq: 1 })]);
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0 }), hdr({ pid: 1, seq: 1 })]), 'OUT_OF_ORDER_SEQUENCE');
    });
  });

  describe('sequence numbers wrap at int32 max', () => {
    it('lastSequenceOf and isNextSequence wrap to 0', () => {
      expect(lastSequenceOf(INT32_MAX - 1, 2)).to.equal(0);
      expect(lastSequenceOf(INT32_MAX, 0)).to.equal(INT32_MAX);
      expect(lastSequenceOf(INT32_MAX, 1)).to.equal(0);
      expect(lastSequenceOf(5, 3)).to.equal(8);
      expect(isNextSequence(INT32_MAX, 0)).to.equal(true);
      expect(isNextSequence(INT32_MAX - 1, 0)).to.equal(false);
    });

    it('a producer continues across the wrap, and a retry of the wrapping batch is a duplicate', () => {
      const t = ProducerStateTable.restore(100, [
        { producerId: 1, epoch: 0, lastTimestampMs: 1000, batches: [{ firstSeq: INT32_MAX - 9, lastSeq: INT32_MAX - 2, firstOffset: 90, lastOffset: 97 }] },
      ]);
      const wrap = hdr({ pid: 1, seq: INT32_MAX - 1, count: 3 }); // INT32_MAX-1, INT32_MAX, 0
      expect(leaderAppend(t, [wrap])).to.deep.equal({ kind: 'append', baseOffset: 100, lastOffset: 102 });
      expect(t.check([wrap])).to.deep.equal({ kind: 'duplicate', baseOffset: 100, lastOffset: 102 });
      expectThrowsFlotilla(() => t.check([hdr({ pid: 1, seq: 0 })]), 'OUT_OF_ORDER_SEQUENCE');
      expect(t.check([hdr({ pid: 1, seq: 1 })]).kind).to.equal('append');
    });
  });

  describe('limits', () => {
    it('beyond producerIdsMax the least recently written producer is evicted; its next batch is UNKNOWN_PRODUCER_ID unless it restarts at 0', () => {
      const t = new ProducerStateTable(0, { producerIdsMax: 3 });
      for (const pid of [1, 2, 3]) leaderAppend(t, [hdr({ pid, seq: 0 })]);
      leaderAppend(t, [hdr({ pid: 1, seq: 1 })]); // 1 is now the most recently written
      const evicted = t.apply(withOffsets([hdr({ pid: 4, seq: 0 })], t.endOffset));
      expect(evicted).to.deep.equal([2]);
      expect(t.entries().map((e) => e.producerId)).to.deep.equal([3, 1, 4]);
      expectThrowsFlotilla(() => t.check([hdr({ pid: 2, seq: 1 })]), 'UNKNOWN_PRODUCER_ID');
    });

    it('a producer whose last batch is producerIdExpirationMs old is forgotten; younger ones stay', () => {
      const t = new ProducerStateTable(0, { producerIdExpirationMs: 1000 });
      leaderAppend(t, [hdr({ pid: 1, seq: 0, timestampMs: 5_000 })]);
      leaderAppend(t, [hdr({ pid: 2, seq: 0, timestampMs: 5_500 })]);
      expect(t.removeExpired(5_999)).to.deep.equal([]);
      expect(t.removeExpired(6_000)).to.deep.equal([1]);
      expect(t.entries().map((e) => e.producerId)).to.deep.equal([2]);
    });

    it('each producer keeps at most 5 batches', () => {
      const t = new ProducerStateTable();
      for (let seq = 0; seq < 50; seq++) leaderAppend(t, [hdr({ pid: 1, seq })]);
      expect(t.get(1)!.batches).to.have.length(BATCHES_RETAINED_PER_PRODUCER);
    });
  });

  it('apply follows the log without validating: a batch of another epoch, even older, restarts the entry (replication)', () => {
    const t = new ProducerStateTable();
    t.apply(withOffsets([hdr({ pid: 1, epoch: 2, seq: 0 })], 0));
    t.apply(withOffsets([hdr({ pid: 1, epoch: 1, seq: 7 })], 1));
    expect(t.get(1)).to.deep.include({ epoch: 1, batches: [{ firstSeq: 7, lastSeq: 7, firstOffset: 1, lastOffset: 1 }] });
  });
});
