import { expect } from 'chai';
import { isEmptyChange, localChangesBetween } from '../../broker';
import { MetadataImage, MetadataRecord, replayOnto } from '../../shared/metadata';

// localChangesBetween: what a broker must do when a snapshot replaces its image. It must
// agree with MetadataDelta.localChanges on the same change, and report partitions the
// broker no longer hosts.

const topic = (name: string, id: string): MetadataRecord => ({ type: 'Topic', name, topicId: id, reason: '', timestampMs: 0 });
const partition = (topicId: string, p: number, replicas: number[], leader = replicas[0]!): MetadataRecord => ({
  type: 'Partition', topicId, partition: p, replicas, isr: replicas, leader, leaderEpoch: 0, partitionEpoch: 0,
});
const labels = (xs: readonly { topicName: string; partition: number }[]) => xs.map((x) => `${x.topicName}-${x.partition}`);

describe('broker: localChangesBetween', () => {
  const base = replayOnto(MetadataImage.EMPTY, [topic('a', 'id-a'), partition('id-a', 0, [1, 2]), partition('id-a', 1, [2, 1]), partition('id-a', 2, [3])], 5);

  it('from an empty image: every hosted partition, as leader or follower', () => {
    const c = localChangesBetween(MetadataImage.EMPTY, base, 1);
    expect(labels(c.leaders)).to.deep.equal(['a-0']);
    expect(labels(c.followers)).to.deep.equal(['a-1']);
    expect(c.deletes).to.deep.equal([]);
  });

  it('nothing for an unchanged image, or for partitions of other brokers', () => {
    expect(isEmptyChange(localChangesBetween(base, base.withOffset(9), 1))).to.equal(true);
    const other = replayOnto(base, [{ type: 'PartitionChange', topicId: 'id-a', partition: 2, isr: [3], reason: 'x', timestampMs: 1 }], 6);
    expect(isEmptyChange(localChangesBetween(base, other, 1))).to.equal(true);
  });

  it('a leader change and a deleted topic', () => {
    const next = replayOnto(
      base,
      [
        { type: 'PartitionChange', topicId: 'id-a', partition: 1, leader: 1, reason: 'moved', timestampMs: 1 },
        { type: 'RemoveTopic', topicId: 'id-a', reason: 'gone', timestampMs: 1 },
        topic('a', 'id-a2'),
        partition('id-a2', 0, [2]),
      ],
      7,
    );
    const c = localChangesBetween(base, next, 1);
    expect(labels(c.deletes)).to.deep.equal(['a-0', 'a-1']);
    expect(c.deletes.map((d) => d.topicId)).to.deep.equal(['id-a', 'id-a']);
    expect(labels(c.leaders)).to.deep.equal([]);
  });

  it('agrees with MetadataDelta.localChanges for a leader move', async () => {
    const { MetadataDelta } = await import('../../shared/metadata');
    const delta = new MetadataDelta(base);
    delta.replay({ type: 'PartitionChange', topicId: 'id-a', partition: 1, leader: 1, reason: 'moved', timestampMs: 1 }, 6);
    const after = delta.apply();
    for (const id of [1, 2, 3]) {
      const viaDiff = localChangesBetween(base, after, id);
      const viaDelta = delta.localChanges(id);
      expect(labels(viaDiff.leaders), `broker ${id} leaders`).to.deep.equal(labels(viaDelta.leaders));
      expect(labels(viaDiff.followers), `broker ${id} followers`).to.deep.equal(labels(viaDelta.followers));
      expect(labels(viaDiff.deletes), `broker ${id} deletes`).to.deep.equal(labels(viaDelta.deletes));
    }
  });
});
