import type { PartitionState } from './image';
import { NO_LEADER } from './records';

// Partition leader election (Kafka's PartitionChangeBuilder and
// PartitionLeaderElectionAlgorithms). Pure: given a partition and the live brokers, what
// should its leader and ISR be? The caller turns a non-null answer into a PartitionChange.
//
// Rules, as in KRaft:
// - a fenced broker leaves the ISR, except that the ISR never becomes empty: its last member
//   stays, so the partition can come back when that broker returns without losing data;
// - the leader stays if it is alive and in the ISR (no needless leader churn);
// - otherwise the first replica, in replica order, that is alive and in the ISR leads;
// - with none, an unclean election picks the first alive replica and the ISR becomes just it
//   (data not on it is lost) - only when the topic allows it;
// - otherwise the partition is offline (leader -1).

export interface ElectionResult {
  readonly leader: number;
  readonly isr: readonly number[];
  /** One line for the event log, e.g. "orders-0: leader 2 -> 1 (from ISR [1,3])". */
  readonly reason: string;
}

export interface ElectionOptions {
  /** The topic's unclean.leader.election.enable. */
  readonly uncleanLeaderElection: boolean;
  /** How to name the partition in the reason, e.g. "orders-0". */
  readonly label?: string;
}

export type LiveBrokers = ReadonlySet<number> | ((brokerId: number) => boolean);

function liveFn(live: LiveBrokers): (id: number) => boolean {
  return typeof live === 'function' ? live : (id) => live.has(id);
}

function list(ids: readonly number[]): string {
  return `[${ids.join(',')}]`;
}

function sameMembers(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * The leader and ISR `state` should have given which brokers are alive, or null when it
 * should not change.
 */
export function electLeader(state: PartitionState, live: LiveBrokers, options: ElectionOptions): ElectionResult | null {
  const alive = liveFn(live);
  const label = options.label ?? `partition ${state.partition}`;
  let isr = state.isr.filter(alive);
  if (isr.length === 0 && state.isr.length > 0) {
    // Keep one member: the one most likely to hold every committed record.
    isr = [state.isr.includes(state.leader) ? state.leader : state.isr[0]];
  }
  let leader: number;
  let how: string;
  if (state.leader !== NO_LEADER && alive(state.leader) && isr.includes(state.leader)) {
    leader = state.leader;
    how = '';
  } else {
    const fromIsr = state.replicas.find((r) => alive(r) && isr.includes(r));
    if (fromIsr !== undefined) {
      leader = fromIsr;
      how = `from ISR ${list(isr)}`;
    } else {
      const unclean = options.uncleanLeaderElection ? state.replicas.find(alive) : undefined;
      if (unclean !== undefined) {
        leader = unclean;
        how = `unclean election: no live ISR member in ${list(isr)}, records not on broker ${unclean} are lost`;
        isr = [unclean];
      } else {
        leader = NO_LEADER;
        how = `no live ISR member in ${list(isr)}${options.uncleanLeaderElection ? ' and no live replica' : ', unclean leader election disabled'}`;
      }
    }
  }
  if (leader === state.leader && sameMembers(isr, state.isr)) return null;
  const parts: string[] = [];
  if (leader !== state.leader) parts.push(`leader ${state.leader} -> ${leader}${how === '' ? '' : ` (${how})`}`);
  if (!sameMembers(isr, state.isr)) parts.push(`ISR ${list(state.isr)} -> ${list(isr)}`);
  return { leader, isr, reason: `${label}: ${parts.join(', ')}` };
}

/** The preferred leader: the first assigned replica (Kafka's preferred replica). */
export function preferredLeader(state: PartitionState): number {
  return state.replicas.length > 0 ? state.replicas[0] : NO_LEADER;
}

/**
 * Preferred-leader election: move leadership back to the preferred replica when it is alive
 * and in the ISR but does not lead; null when nothing should change.
 */
export function preferredLeaderChange(state: PartitionState, live: LiveBrokers, label?: string): ElectionResult | null {
  const preferred = preferredLeader(state);
  if (preferred === NO_LEADER || state.leader === preferred) return null;
  if (!liveFn(live)(preferred) || !state.isr.includes(preferred)) return null;
  return {
    leader: preferred,
    isr: state.isr,
    reason: `${label ?? `partition ${state.partition}`}: leader ${state.leader} -> ${preferred} (preferred replica is back in the ISR)`,
  };
}
