import { Prng } from '../sim/prng';
import type { TargetKind } from './faults';

// The seeded fault schedule. Everything a run decides at random — which fault, against which
// kind of target, for how long, how hard — comes from one Prng built from the seed, so a
// seed replays the same schedule (`make chaos SEED=n`). Which node a target kind resolves to
// depends on the cluster at that moment (who won the last election), which no seed fixes.

export type FaultType =
  | 'kill'
  | 'stop'
  | 'pause'
  | 'pause-long'
  | 'isolate'
  | 'isolate-outbound'
  | 'loss'
  | 'throttle'
  | 'disk-full'
  | 'restart'
  | 'kill-majority'
  | 'kill-brokers'
  | 'roll-restart';

export interface FaultSpec {
  readonly index: number;
  readonly type: FaultType;
  readonly target: TargetKind;
  /** How long the fault stays before it is healed. */
  readonly holdMs: number;
  /** loss: percent of packets dropped; throttle: kbit/s. */
  readonly param?: number;
}

interface FaultTypeSpec {
  readonly targets: readonly TargetKind[];
  readonly holdMs: readonly [number, number];
  readonly param?: readonly [number, number];
}

/** The broker session timeout the controllers use (9 s): pause-long must outlast it. */
export const BROKER_SESSION_TIMEOUT_MS = 9_000;

export const FAULT_TYPES: Readonly<Record<FaultType, FaultTypeSpec>> = {
  kill: { targets: ['partition-leader', 'active-controller', 'partition-follower', 'controller-follower'], holdMs: [2_000, 6_000] },
  stop: { targets: ['active-controller', 'partition-leader', 'any-broker'], holdMs: [2_000, 5_000] },
  pause: { targets: ['partition-leader', 'partition-follower', 'active-controller'], holdMs: [2_000, 4_000] },
  // Longer than the session timeout: the broker is fenced, or the controller deposed, while frozen.
  'pause-long': { targets: ['partition-leader', 'active-controller'], holdMs: [BROKER_SESSION_TIMEOUT_MS + 3_000, BROKER_SESSION_TIMEOUT_MS + 5_000] },
  isolate: { targets: ['active-controller', 'partition-leader', 'controller-follower'], holdMs: [8_000, 12_000] },
  'isolate-outbound': { targets: ['active-controller', 'partition-follower'], holdMs: [8_000, 12_000] },
  loss: { targets: ['active-controller', 'partition-leader'], holdMs: [8_000, 12_000], param: [20, 40] },
  throttle: { targets: ['active-controller', 'partition-leader'], holdMs: [8_000, 12_000], param: [32, 256] },
  'disk-full': { targets: ['active-controller', 'partition-leader'], holdMs: [4_000, 8_000] },
  restart: { targets: ['partition-follower', 'controller-follower', 'active-controller'], holdMs: [0, 0] },
  'kill-majority': { targets: ['controller-majority'], holdMs: [3_000, 6_000] },
  // Two brokers at once (scheduled only with 5 or more brokers, where 3 stay up and RF 3
  // creates still succeed): a partition's leader and a follower (its last ISR member must
  // take over with every acknowledged record; the partition is below min.insync.replicas
  // until one returns), or the two brokers outside it (it stays writable throughout).
  'kill-brokers': { targets: ['partition-leader-and-follower', 'brokers-outside-partition'], holdMs: [4_000, 8_000] },
  'roll-restart': { targets: ['whole-cluster'], holdMs: [0, 0] },
};

export const ALL_FAULT_TYPES = Object.keys(FAULT_TYPES) as FaultType[];

/** Brokers a run needs for `kill-brokers` (two down, and RF 3 placements still possible). */
export const KILL_BROKERS_MIN_BROKERS = 5;

/**
 * The fault types a cluster of `brokers` brokers gets. `kill-brokers` only with 5 or more:
 * on 3 it would leave one broker; and leaving it out keeps the schedules of 3-broker seeds
 * what they were before it existed.
 */
export function faultTypesFor(brokers: number): FaultType[] {
  return ALL_FAULT_TYPES.filter((t) => t !== 'kill-brokers' || brokers >= KILL_BROKERS_MIN_BROKERS);
}

export class FaultScheduler {
  private readonly prng: Prng;
  /** Target picks draw from their own stream: the schedule replays whatever the cluster did. */
  private readonly targets: Prng;
  private index = 0;
  private readonly firstRound: FaultType[];

  private readonly types: readonly FaultType[];

  /** `only`: restrict the run to these fault types (debugging one fault); `brokers`: the cluster's. */
  constructor(
    readonly seed: number,
    private readonly only?: readonly FaultType[],
    brokers = 3,
  ) {
    this.prng = new Prng(seed);
    this.targets = this.prng.fork();
    this.types = faultTypesFor(brokers);
    // Every fault type once, in a seeded order; the roll-restart last (it takes longest and
    // leaves every node freshly started for whatever follows).
    const round: FaultType[] = [...this.prng.shuffle(this.types.filter((t) => t !== 'roll-restart')), 'roll-restart'];
    this.firstRound = round.filter((t) => !only || only.includes(t));
  }

  /** The Prng for target picks, so they replay with the seed as well. */
  targetPrng(): Prng {
    return this.targets;
  }

  /** True while the first round (every fault type once: the CI-sized run) is not done. */
  inFirstRound(): boolean {
    return this.index < this.firstRound.length;
  }

  next(): FaultSpec {
    const type = this.index < this.firstRound.length ? this.firstRound[this.index] : this.prng.pick(this.types.filter((t) => t !== 'roll-restart' && (!this.only || this.only.includes(t))));
    const spec = FAULT_TYPES[type];
    const fault: FaultSpec = {
      index: this.index,
      type,
      target: this.prng.pick(spec.targets),
      holdMs: spec.holdMs[0] + this.prng.int(spec.holdMs[1] - spec.holdMs[0] + 1),
      ...(spec.param ? { param: spec.param[0] + this.prng.int(spec.param[1] - spec.param[0] + 1) } : {}),
    };
    this.index++;
    return fault;
  }
}

/** A fresh seed when none was given (printed, so the run can be replayed). */
export function freshSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}
