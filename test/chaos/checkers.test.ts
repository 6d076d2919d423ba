import { expect } from 'chai';
import { checkControllerLogs, checkLeaders, checkLog, checkMetadata, checkUnavailability } from './checkers';
import type { ControllerLog, FaultRecord, MetadataOp, Op, ReadOp, SendOp } from './history';

// The chaos checkers on synthetic histories: each anomaly is planted once and must be found,
// and a clean history must pass. (The chaos suite itself runs with `make chaos`.)

function create(topic: string, outcome: MetadataOp['outcome'], extra: Partial<MetadataOp> = {}): MetadataOp {
  return { kind: 'create-topic', process: 0, topic, via: 'broker-1', invokeMs: 0, completeMs: 1, outcome, ...extra };
}
function del(topic: string, outcome: MetadataOp['outcome'], extra: Partial<MetadataOp> = {}): MetadataOp {
  return { kind: 'delete-topic', process: 0, topic, via: 'controller-1', invokeMs: 2, completeMs: 3, outcome, ...extra };
}
function send(value: string, outcome: SendOp['outcome'], at?: { p: number; o: number }, t: { i: number; c: number } = { i: 0, c: 1 }, process = 0): SendOp {
  return { kind: 'send', process, value, topic: 't', invokeMs: t.i, completeMs: t.c, outcome, ...(at ? { partition: at.p, offset: at.o } : {}) };
}
function read(value: string, p: number, o: number): ReadOp {
  return { kind: 'read', process: 9, topic: 't', partition: p, offset: o, value, atMs: 100 };
}

describe('chaos checkers', () => {
  describe('checkMetadata', () => {
    it('passes when every acknowledged create exists with its id and deleted topics are gone', () => {
      const ops = [create('a', 'ok', { topicId: 'A' }), create('b', 'ok', { topicId: 'B' }), del('b', 'ok'), create('c', 'info'), create('d', 'fail', { error: 'INVALID_REPLICATION_FACTOR' })];
      const r = checkMetadata(ops, ['a', 'c'], new Map([['a', 'A'], ['c', 'C']]));
      expect(r.valid).to.equal(true);
      expect(r.creates).to.deep.equal({ ok: 2, fail: 1, info: 1 });
    });

    it('finds an acknowledged create that is missing at the end (lost)', () => {
      const r = checkMetadata([create('a', 'ok', { topicId: 'A' })], [], new Map());
      expect(r.valid).to.equal(false);
      expect(r.lost).to.deep.equal(['a']);
    });

    it('does not call a topic lost when a delete of it may have happened', () => {
      const r = checkMetadata([create('a', 'ok', { topicId: 'A' }), del('a', 'info')], [], new Map());
      expect(r.valid).to.equal(true);
    });

    it('treats TOPIC_ALREADY_EXISTS on a unique name as created by an earlier attempt', () => {
      const ops = [create('a', 'fail', { error: 'TOPIC_ALREADY_EXISTS' })];
      expect(checkMetadata(ops, [], new Map()).lost).to.deep.equal(['a']);
      expect(checkMetadata(ops, ['a'], new Map([['a', 'A']])).valid).to.equal(true);
    });

    it('finds a topic created twice (another id at the end) and a name listed twice', () => {
      const r = checkMetadata([create('a', 'ok', { topicId: 'A' })], ['a', 'a'], new Map([['a', 'A2']]));
      expect(r.valid).to.equal(false);
      expect(r.recreated).to.deep.equal([{ topic: 'a', ackedId: 'A', finalId: 'A2' }]);
      expect(r.listedTwice).to.deep.equal(['a']);
    });

    it('finds a phantom (every create failed definitely, yet the topic exists) and a resurrected topic', () => {
      const ops = [create('p', 'fail', { error: 'INVALID_REPLICATION_FACTOR' }), create('r', 'ok', { topicId: 'R' }), del('r', 'ok')];
      const r = checkMetadata(ops, ['p', 'r'], new Map([['p', 'P'], ['r', 'R']]));
      expect(r.phantoms).to.deep.equal(['p']);
      expect(r.resurrected).to.deep.equal(['r']);
      expect(r.valid).to.equal(false);
    });
  });

  describe('checkLog', () => {
    it('passes a clean history and counts indeterminate sends that were read', () => {
      const ops: Op[] = [send('1', 'ok', { p: 0, o: 0 }), send('2', 'info', undefined, { i: 2, c: 3 }), read('1', 0, 0), read('2', 0, 1)];
      const r = checkLog(ops);
      expect(r.valid).to.equal(true);
      expect(r.acked).to.equal(1);
      expect(r.recoveredIndeterminate).to.equal(1);
    });

    it('finds an acknowledged value never read (lost)', () => {
      const r = checkLog([send('1', 'ok', { p: 0, o: 0 }), send('2', 'ok', { p: 0, o: 1 }), read('1', 0, 0)]);
      expect(r.lost).to.deep.equal(['2']);
      expect(r.valid).to.equal(false);
    });

    it('finds a value read at two offsets (duplicated), allowed only when asked', () => {
      const ops = [send('1', 'ok', { p: 0, o: 0 }), read('1', 0, 0), read('1', 0, 1)];
      expect(checkLog(ops).duplicated).to.deep.equal([{ value: '1', at: ['t-0@0', 't-0@1'] }]);
      expect(checkLog(ops).valid).to.equal(false);
      expect(checkLog(ops, { allowDuplicates: true }).valid).to.equal(true);
    });

    it('finds one offset holding two values, and a value read at another offset than acknowledged', () => {
      const r = checkLog([send('1', 'ok', { p: 0, o: 0 }), send('2', 'ok', { p: 0, o: 5 }), read('1', 0, 0), read('2', 0, 0)]);
      expect(r.inconsistentOffsetsCount).to.equal(2);
      expect(r.inconsistentOffsets.map((x) => x.at)).to.have.members(['t-0@5', 't-0@0']);
    });

    it('finds a later send of one producer stored before an earlier one (reordered)', () => {
      // '2' was sent after '1' was acknowledged, both on partition 0, but sits at a lower offset.
      const ops = [send('1', 'ok', { p: 0, o: 1 }, { i: 0, c: 10 }), send('2', 'ok', { p: 0, o: 0 }, { i: 11, c: 12 }), read('2', 0, 0), read('1', 0, 1)];
      const r = checkLog(ops);
      expect(r.reordered).to.deep.equal([{ partition: 't-0', first: '1', second: '2', firstOffset: 1, secondOffset: 0 }]);
      expect(r.valid).to.equal(false);
    });

    it('does not call overlapping (concurrent) sends reordered', () => {
      const ops = [send('1', 'ok', { p: 0, o: 1 }, { i: 0, c: 10 }), send('2', 'ok', { p: 0, o: 0 }, { i: 5, c: 12 }), read('2', 0, 0), read('1', 0, 1)];
      expect(checkLog(ops).reorderedCount).to.equal(0);
    });

    it('finds a value read that no send produced (unexpected)', () => {
      expect(checkLog([read('x', 0, 0)]).unexpected).to.deep.equal(['x']);
    });
  });

  describe('checkUnavailability', () => {
    const fault: FaultRecord = { index: 0, type: 'kill', targetKind: 'active-controller', nodes: ['controller-1'], startMs: 100, healMs: 200, recoveredMs: 300 };

    it('measures failures and the longest stretch without a success inside the fault window', () => {
      const ops: Op[] = [
        create('a', 'ok', { invokeMs: 90, completeMs: 110 }),
        create('b', 'info', { invokeMs: 120, completeMs: 180 }),
        create('c', 'ok', { invokeMs: 190, completeMs: 250 }),
        create('d', 'ok', { invokeMs: 255, completeMs: 260 }),
      ];
      const { perFault, perType } = checkUnavailability(ops, [fault]);
      expect(perFault[0]).to.include({ failedOps: 1, okOps: 2, longestGapMs: 140, firstOkAfterHealMs: 50, recoveryMs: 100 });
      expect(perType).to.deep.equal([{ type: 'kill', faults: 1, failedOps: 1, longestGapMsMax: 140, recoveryMsMax: 100 }]);
    });

    it('counts the whole window as unavailable when nothing succeeded', () => {
      const { perFault } = checkUnavailability([create('a', 'info', { invokeMs: 150, completeMs: 160 })], [fault]);
      expect(perFault[0].longestGapMs).to.equal(200);
      expect(perFault[0].firstOkAfterHealMs).to.equal(undefined);
    });
  });

  describe('checkUnavailability of a tailing consumer (reads)', () => {
    it('takes reads as successes at their time: the longest stretch without a read in the window', () => {
      const fault: FaultRecord = { index: 0, type: 'kill', targetKind: 'partition-leader', nodes: ['broker-1'], startMs: 1_000, healMs: 5_000, recoveredMs: 6_000 };
      const at = (atMs: number): ReadOp => ({ ...read(`v${atMs}`, 0, atMs), atMs });
      const r = checkUnavailability([at(900), at(1_200), at(4_700), at(5_900)], [fault], new Set(['read']));
      expect(r.perFault[0]).to.include({ failedOps: 0, okOps: 3, longestGapMs: 3_500, firstOkAfterHealMs: 900 });
      // Sends are not counted when only reads are asked for.
      expect(checkUnavailability([send('a', 'info', undefined, { i: 1_100, c: 1_200 })], [fault], new Set(['read'])).perFault[0]!.failedOps).to.equal(0);
    });
  });

  describe('checkLeaders', () => {
    it('passes one leader per term, ignoring "no leader known"', () => {
      const r = checkLeaders([{ term: 2, leaderId: 1, source: 'a' }, { term: 2, leaderId: 1, source: 'b' }, { term: 3, leaderId: 0, source: 'c' }, { term: 3, leaderId: 2, source: 'd' }]);
      expect(r).to.deep.equal({ valid: true, terms: 2, violations: [] });
    });

    it('finds two leaders in one term', () => {
      const r = checkLeaders([{ term: 4, leaderId: 1, source: 'controller-1 log' }, { term: 4, leaderId: 3, source: 'controller-3 log' }]);
      expect(r.valid).to.equal(false);
      expect(r.violations).to.deep.equal([{ term: 4, leaders: [{ leaderId: 1, source: 'controller-1 log' }, { leaderId: 3, source: 'controller-3 log' }] }]);
    });
  });

  describe('checkControllerLogs', () => {
    const log = (controller: string, entries: Array<[number, number, string]>, imageOffset: number, imageDigest: string): ControllerLog => ({
      controller,
      entries: entries.map(([offset, term, digest]) => ({ offset, term, digest })),
      imageOffset,
      imageDigest,
    });

    it('passes identical logs, also when one controller started from a snapshot', () => {
      const r = checkControllerLogs([log('c1', [[1, 1, 'x'], [2, 1, 'y'], [3, 2, 'z']], 3, 'I'), log('c2', [[3, 2, 'z']], 3, 'I')]);
      expect(r.valid).to.equal(true);
    });

    it('finds an offset committed with different entries (log matching broken)', () => {
      const r = checkControllerLogs([log('c1', [[1, 1, 'x'], [2, 1, 'y']], 2, 'I'), log('c2', [[1, 1, 'x'], [2, 2, 'w']], 2, 'I')]);
      expect(r.divergent.map((d) => d.offset)).to.deep.equal([2]);
      expect(r.valid).to.equal(false);
    });

    it('finds different images at one offset, and controllers ending at different offsets', () => {
      expect(checkControllerLogs([log('c1', [], 5, 'I'), log('c2', [], 5, 'J')]).imageMismatch).to.have.length(1);
      const behind = checkControllerLogs([log('c1', [], 5, 'I'), log('c2', [], 4, 'H')]);
      expect(behind.sameFinalOffset).to.equal(false);
      expect(behind.valid).to.equal(false);
    });
  });
});
