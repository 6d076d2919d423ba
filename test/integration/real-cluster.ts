import { Admin, Flotilla } from '../../client';
import type { FlotillaConfig } from '../../client';
import { BrokerLauncher } from './broker-launcher';
import { ControllerCluster, eventually } from './controller-launcher';

// Three controllers and three brokers as real processes on loopback, with the helpers the
// end-to-end tests share: topics that take writes, who leads what, kill -9 and come back,
// and reading a whole topic with the client's consumer. Every wait is bounded.

export interface RealClusterOptions {
  /** The controllers fence a broker after this long without a heartbeat. */
  readonly sessionTimeoutMs: number;
  /** An ISR member that has not caught up for this long leaves the ISR. */
  readonly replicaLagTimeMaxMs: number;
  readonly heartbeatIntervalMs: number;
}

export interface ConsumedRecord {
  readonly offset: number;
  readonly value: string;
}

export class RealCluster {
  private constructor(
    readonly controllers: ControllerCluster,
    readonly brokers: BrokerLauncher,
    readonly admin: Admin,
  ) {}

  static async start(o: RealClusterOptions): Promise<RealCluster> {
    const controllers = await ControllerCluster.start({ size: 3, extraArgs: ['--broker-session-timeout-ms', String(o.sessionTimeoutMs)] });
    let brokers: BrokerLauncher | undefined;
    try {
      brokers = await BrokerLauncher.start({
        controllers: controllers.bootstrap(),
        ids: [1, 2, 3],
        rootDir: controllers.rootDir,
        extraArgs: ['--replica-lag-time-max-ms', String(o.replicaLagTimeMaxMs), '--heartbeat-interval-ms', String(o.heartbeatIntervalMs)],
      });
      const admin = new Flotilla({ bootstrap: brokers.bootstrap(), totalTimeoutMs: 30_000 }).admin();
      const cluster = new RealCluster(controllers, brokers, admin);
      await cluster.allBrokersUnfenced(60_000);
      return cluster;
    } catch (e) {
      await brokers?.shutdown();
      await controllers.shutdown();
      throw e;
    }
  }

  bootstrap(): string[] {
    return this.brokers.bootstrap();
  }

  client(extra: Omit<FlotillaConfig, 'brokers' | 'bootstrap'> = {}): Flotilla {
    return new Flotilla({ brokers: this.bootstrap(), ...extra });
  }

  async shutdown(): Promise<void> {
    await this.admin.close();
    await this.brokers.shutdown();
    await this.controllers.shutdown();
  }

  /** The last lines of every broker's log (for a failed test). */
  logTails(lines = 25): string {
    return [...this.brokers.nodes.keys()].map((id) => `--- broker ${id} log tail ---\n${this.brokers.logOf(id).split('\n').slice(-lines).join('\n')}`).join('\n');
  }

  async allBrokersUnfenced(timeoutMs = 30_000): Promise<void> {
    await eventually('three unfenced brokers', async () => {
      const c = await this.admin.describeCluster();
      const up = c.brokers.filter((b) => !b.fenced).length;
      if (up !== 3) throw new Error(`${up} unfenced`);
    }, { timeoutMs });
  }

  /** Creates a topic and waits until every partition's leader answers for it. */
  async createTopic(name: string, partitions: number, configs: Record<string, string> = {}): Promise<void> {
    await this.admin.createTopic({ name, partitions, replicationFactor: 3, configs });
    await this.writable(name);
  }

  /** Every partition of `topic` has a leader that answers ListOffsets for it. */
  async writable(topic: string, timeoutMs = 30_000): Promise<void> {
    await eventually(`${topic} to have answering leaders`, async () => {
      const offsets = await this.admin.fetchTopicOffsets(topic, 5_000);
      const bad = offsets.filter((o) => o.error !== undefined);
      if (bad.length > 0) throw new Error(bad.map((o) => `${o.partition}: ${o.error!.name}`).join(', '));
    }, { timeoutMs });
  }

  async partitionsOf(topic: string): Promise<{ partition: number; leader: number; leaderEpoch: number; isr: number[] }[]> {
    const [t] = await this.admin.describeTopics([topic]);
    if (!t) throw new Error(`no topic ${topic}`);
    return t.partitions.map((p) => ({ partition: p.partition, leader: p.leader, leaderEpoch: p.leaderEpoch, isr: [...p.isr].sort() }));
  }

  async leaderOf(topic: string, partition: number): Promise<number> {
    const p = (await this.partitionsOf(topic)).find((x) => x.partition === partition);
    if (!p || p.leader < 0) throw new Error(`${topic}-${partition} has no leader`);
    return p.leader;
  }

  /** Waits until every partition of `topic` has all three brokers in its ISR. */
  async fullIsr(topic: string, timeoutMs = 60_000): Promise<void> {
    await eventually(`${topic}: every ISR of 3`, async () => {
      const ps = await this.partitionsOf(topic);
      const short = ps.filter((p) => p.isr.length !== 3 || p.leader < 0);
      if (short.length > 0) throw new Error(JSON.stringify(short));
    }, { timeoutMs });
  }

  /** Waits until `topic`'s partitions are led by none of `dead` (the controller fenced them and elected others). */
  async leadersMovedOff(topic: string, dead: readonly number[], timeoutMs = 30_000): Promise<void> {
    await eventually(`${topic} led by none of ${dead.join(',')}`, async () => {
      const ps = await this.partitionsOf(topic);
      const stuck = ps.filter((p) => p.leader < 0 || dead.includes(p.leader));
      if (stuck.length > 0) throw new Error(JSON.stringify(stuck));
    }, { timeoutMs });
    await this.writable(topic, timeoutMs);
  }

  /** Restarts every broker that is down and waits until all are unfenced. */
  async restartDead(): Promise<void> {
    for (const id of this.brokers.nodes.keys()) if (!this.brokers.isRunning(id)) this.brokers.spawn(id);
    await this.allBrokersUnfenced(60_000);
  }

  /** Per partition: its high watermark from its leader. */
  async highWatermarks(topic: string): Promise<Map<number, number>> {
    return eventually(`${topic} high watermarks`, async () => {
      const offsets = await this.admin.fetchTopicOffsets(topic, 5_000);
      const out = new Map<number, number>();
      for (const o of offsets) {
        if (o.error !== undefined || o.high === undefined) throw new Error(`${o.partition}: ${o.error?.name}`);
        out.set(o.partition, o.high);
      }
      return out;
    }, { timeoutMs: 30_000 });
  }

  /**
   * Every record of every partition of `topic`, read with the client's consumer from the
   * earliest offset up to the partition's current high watermark, per partition in the order
   * eachMessage saw them. Bounded by `timeoutMs`.
   */
  async consumeAll(topic: string, timeoutMs = 60_000): Promise<{ records: Map<number, ConsumedRecord[]>; highWatermarks: Map<number, number> }> {
    const highWatermarks = await this.highWatermarks(topic);
    const records = new Map<number, ConsumedRecord[]>([...highWatermarks.keys()].map((p) => [p, []]));
    const consumer = this.client().consumer({ autoOffsetReset: 'earliest', maxWaitMs: 200 });
    await consumer.connect();
    const done = (): boolean => [...highWatermarks].every(([p, hw]) => {
      const list = records.get(p)!;
      return hw === 0 || (list.length > 0 && list[list.length - 1]!.offset >= hw - 1);
    });
    try {
      consumer.assign([...highWatermarks.keys()].map((partition) => ({ topic, partition })));
      if (done()) return { records, highWatermarks };
      let finished!: () => void;
      const allRead = new Promise<void>((resolve) => (finished = resolve));
      await consumer.run({
        eachMessage: async ({ partition, message }) => {
          records.get(partition)!.push({ offset: message.offset, value: message.value?.toString('utf8') ?? '' });
          if (done()) finished();
        },
      });
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`consumed ${[...records].map(([p, l]) => `${p}:${l.length}/${highWatermarks.get(p)}`).join(' ')} within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        await Promise.race([allRead, timeout, consumer.join().then(() => Promise.reject(new Error('the consumer stopped early')))]);
      } finally {
        clearTimeout(timer);
      }
      return { records, highWatermarks };
    } finally {
      await consumer.disconnect();
    }
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
