import type { BrokerRegistration, PartitionState } from './image';
import { NO_LEADER } from './records';

// The health of one partition as an operator wants to read it: a status and, when it is not
// online, why - in terms of brokers ("replica 3 out of ISR: broker 3 fenced").

export type PartitionStatus = 'online' | 'offline' | 'under-replicated';

export interface PartitionHealth {
  readonly status: PartitionStatus;
  /** Empty when online. */
  readonly why: string;
}

function brokerCondition(id: number, brokers: ReadonlyMap<number, BrokerRegistration>): 'alive' | 'fenced' | 'not registered' {
  const b = brokers.get(id);
  return b === undefined ? 'not registered' : b.fenced ? 'fenced' : 'alive';
}

export function partitionHealth(
  state: PartitionState,
  brokers: ReadonlyMap<number, BrokerRegistration>,
  minInsyncReplicas = 1,
): PartitionHealth {
  const leaderAlive = state.leader !== NO_LEADER && brokerCondition(state.leader, brokers) === 'alive';
  if (!leaderAlive) {
    const aliveIsr = state.isr.filter((id) => brokerCondition(id, brokers) === 'alive');
    const members = state.isr.map((id) => `broker ${id} ${brokerCondition(id, brokers)}`).join(', ');
    const isrPart =
      aliveIsr.length > 0
        ? `an election is pending (live ISR members: [${aliveIsr.join(',')}])`
        : state.isr.length === 0
          ? 'the ISR is empty'
          : `no ISR member is alive (${members})`;
    const why =
      state.leader === NO_LEADER
        ? `no leader: ${isrPart}`
        : `leader broker ${state.leader} is ${brokerCondition(state.leader, brokers)} and ${isrPart}`;
    return { status: 'offline', why };
  }
  const reasons: string[] = [];
  for (const r of state.replicas) {
    if (state.isr.includes(r)) continue;
    const condition = brokerCondition(r, brokers);
    reasons.push(`replica ${r} out of ISR: broker ${r} ${condition === 'alive' ? 'is catching up' : condition}`);
  }
  if (state.isr.length < minInsyncReplicas) {
    reasons.push(`ISR size ${state.isr.length} < min.insync.replicas ${minInsyncReplicas}: acks=all writes are rejected`);
  }
  if (reasons.length === 0) return { status: 'online', why: '' };
  return { status: 'under-replicated', why: reasons.join('; ') };
}
