import { expect } from 'chai';
import { encodeRecordBatch } from '../../shared/records/record-batch';
import { InProcessCluster, waitFor } from '../broker/in-process-cluster';
import { BrokerWire, errName } from './broker-wire';

// The broker bounds the memory of all its replicas' in-memory log tails together
// (ReplicaManager tailCacheTotalBytes): every replica gets an equal share in 64 KiB steps,
// shrinking as replicas arrive and growing as they go, and no tail holds more than its share.

const KIB = 1024;

describe('broker tail-cache budget (in-process cluster, one broker)', function () {
  this.timeout(60_000);
  let cluster: InProcessCluster;

  before(async () => {
    cluster = await InProcessCluster.start();
    await cluster.startBroker(1, { tailCacheTotalBytes: 512 * KIB });
    await waitFor('an unfenced broker', () => cluster.brokers.get(1)!.status().state === 'running');
  });

  after(async () => {
    await cluster?.stop();
  });

  function shares(topic: string, partitions: number): number[] {
    const rm = cluster.brokers.get(1)!.replicaManager;
    const out: number[] = [];
    for (let p = 0; p < partitions; p++) {
      const part = rm.lookup(topic, p)?.p;
      out.push(part ? part.log.config.tailCacheBytes : -1);
    }
    return out;
  }

  it('splits the budget evenly, shrinks every share as replicas are added, and grows them back after a delete', async () => {
    const admin = cluster.admin(cluster.bootstrap());
    await admin.createTopic({ name: 'first', partitions: 2, replicationFactor: 1 });
    await waitFor('2 replicas at a 256 KiB share', () => shares('first', 2).every((s) => s === 256 * KIB));

    await admin.createTopic({ name: 'second', partitions: 6, replicationFactor: 1 });
    await waitFor('8 replicas at a 64 KiB share', () => [...shares('first', 2), ...shares('second', 6)].every((s) => s === 64 * KIB));

    // A tail never holds more than its share, however much is appended.
    const rm = cluster.brokers.get(1)!.replicaManager;
    const w = new BrokerWire(cluster.brokers.get(1)!.address);
    try {
      for (let i = 0; i < 20; i++) {
        const records = encodeRecordBatch({ records: [{ value: Buffer.alloc(10 * KIB, i), timestampMs: Date.now() }] });
        const res = await w.produce({ acks: 1, partitions: [{ topic: 'second', partition: 0, records }] });
        expect(errName(res.results[0]!.error), res.results[0]!.error?.message).to.equal(null);
      }
    } finally {
      w.close();
    }
    const log = rm.lookup('second', 0)!.p!.log;
    expect(log.tailCachedBytes).to.be.greaterThan(0);
    expect(log.tailCachedBytes).to.be.at.most(64 * KIB);

    await admin.deleteTopic('second');
    await waitFor('the 2 remaining replicas back at 256 KiB', () => shares('first', 2).every((s) => s === 256 * KIB));
    expect(rm.tailCacheShareBytes()).to.equal(256 * KIB);
  });
});
