import { strict as assert } from 'node:assert';

// Replica placement for new partitions: Kafka's AdminUtils.assignReplicasToBrokers
// (server-common/.../admin/AdminUtils.java), rack-unaware and rack-aware.
//
// Rack-unaware: partition p's first replica (its preferred leader) is broker
// (p + startIndex) mod n, so leaders spread round-robin; the followers sit at a shift from it
// that grows by one every n partitions, so followers spread too. Rack-aware: the same over a
// broker list that alternates racks, and a partition takes a broker from a rack it already
// uses only once every rack holds one of its replicas.
//
// Pure: the random start comes from an injected function, or is fixed for tests.

export interface PlacementBroker {
  readonly id: number;
  readonly rack: string | null;
}

export interface PlacementOptions {
  /** Index of the first partition's leader in the (arranged) broker list; default from `random`, else 0. */
  readonly startIndex?: number;
  /** Shift of the followers from the leader; default from `random`, else 0. */
  readonly replicaShift?: number;
  /** Uniform in [0, 1); used for whichever of startIndex/replicaShift is not given. */
  readonly random?: () => number;
  /** Id of the first partition to place (adding partitions to an existing topic); default 0. */
  readonly firstPartitionId?: number;
}

/**
 * Replicas for `partitions` new partitions of `replicationFactor` replicas each, over
 * `brokers` (the live ones). Result[i] is the replica list of partition firstPartitionId + i,
 * preferred leader first. Rack-aware when every broker declares a rack.
 */
export function assignReplicas(
  brokers: readonly PlacementBroker[],
  partitions: number,
  replicationFactor: number,
  options: PlacementOptions = {},
): number[][] {
  const n = brokers.length;
  assert(Number.isInteger(partitions) && partitions >= 0, `partitions ${partitions}`);
  assert(Number.isInteger(replicationFactor) && replicationFactor >= 1, `replication factor ${replicationFactor}`);
  assert(replicationFactor <= n, `replication factor ${replicationFactor} > ${n} brokers`);
  assert(new Set(brokers.map((b) => b.id)).size === n, 'duplicate broker ids');
  const draw = (given: number | undefined): number => {
    if (given !== undefined) return given;
    return options.random === undefined ? 0 : Math.floor(options.random() * n);
  };
  const startIndex = draw(options.startIndex);
  const replicaShift = draw(options.replicaShift);
  const firstPartitionId = Math.max(0, options.firstPartitionId ?? 0);
  const rackAware = n > 0 && brokers.every((b) => b.rack !== null && b.rack !== '');
  return rackAware
    ? rackAwareAssignment(brokers, partitions, replicationFactor, startIndex, replicaShift, firstPartitionId)
    : rackUnawareAssignment(
        [...brokers].map((b) => b.id).sort((a, b) => a - b),
        partitions,
        replicationFactor,
        startIndex,
        replicaShift,
        firstPartitionId,
      );
}

/** AdminUtils.replicaIndex: where the j-th follower sits relative to the leader. */
function replicaIndex(firstReplicaIndex: number, secondReplicaShift: number, j: number, n: number): number {
  const shift = 1 + ((secondReplicaShift + j) % (n - 1));
  return (firstReplicaIndex + shift) % n;
}

function rackUnawareAssignment(
  ids: readonly number[],
  partitions: number,
  rf: number,
  startIndex: number,
  initialShift: number,
  firstPartitionId: number,
): number[][] {
  const n = ids.length;
  const result: number[][] = [];
  let nextReplicaShift = initialShift;
  let partitionId = firstPartitionId;
  for (let i = 0; i < partitions; i++, partitionId++) {
    if (partitionId > 0 && partitionId % n === 0) nextReplicaShift++;
    const first = (partitionId + startIndex) % n;
    const replicas = [ids[first]];
    for (let j = 0; j < rf - 1; j++) replicas.push(ids[replicaIndex(first, nextReplicaShift, j, n)]);
    result.push(replicas);
  }
  return result;
}

/**
 * AdminUtils.getRackAlternatedBrokerList: brokers ordered so that consecutive entries sit on
 * different racks while racks last (racks and the brokers in each sorted).
 */
export function rackAlternatedBrokers(brokers: readonly PlacementBroker[]): number[] {
  const byRack = new Map<string, number[]>();
  for (const b of brokers) {
    const rack = b.rack ?? '';
    const list = byRack.get(rack) ?? [];
    list.push(b.id);
    byRack.set(rack, list);
  }
  const racks = [...byRack.keys()].sort();
  const queues = racks.map((r) => (byRack.get(r) as number[]).sort((a, b) => a - b));
  const result: number[] = [];
  for (let round = 0; result.length < brokers.length; round++) {
    for (const q of queues) if (round < q.length) result.push(q[round]);
  }
  return result;
}

function rackAwareAssignment(
  brokers: readonly PlacementBroker[],
  partitions: number,
  rf: number,
  startIndex: number,
  initialShift: number,
  firstPartitionId: number,
): number[][] {
  const rackOf = new Map(brokers.map((b) => [b.id, b.rack as string]));
  const arranged = rackAlternatedBrokers(brokers);
  const n = arranged.length;
  const numRacks = new Set(rackOf.values()).size;
  const result: number[][] = [];
  let nextReplicaShift = initialShift;
  let partitionId = firstPartitionId;
  for (let i = 0; i < partitions; i++, partitionId++) {
    if (partitionId > 0 && partitionId % n === 0) nextReplicaShift++;
    const first = (partitionId + startIndex) % n;
    const leader = arranged[first];
    const replicas = [leader];
    const racksUsed = new Set([rackOf.get(leader)]);
    const brokersUsed = new Set([leader]);
    let k = 0;
    for (let j = 0; j < rf - 1; j++) {
      // Terminates: once every rack is used any unused broker qualifies, and rf <= n.
      for (;;) {
        const candidate = arranged[replicaIndex(first, nextReplicaShift * numRacks, k, n)];
        k++;
        const rack = rackOf.get(candidate);
        const rackOk = !racksUsed.has(rack) || racksUsed.size === numRacks;
        const brokerOk = !brokersUsed.has(candidate) || brokersUsed.size === n;
        if (rackOk && brokerOk) {
          replicas.push(candidate);
          racksUsed.add(rack);
          brokersUsed.add(candidate);
          break;
        }
      }
    }
    result.push(replicas);
  }
  return result;
}
