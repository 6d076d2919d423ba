import * as crypto from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { CHANNEL_OPTIONS, loadProto } from '../../shared/rpc/proto';
import { fromGrpcError } from '../../shared/rpc/grpc-errors';

// Until brokers exist (issue 3), integration tests need registered, heartbeating brokers
// so that topics can be placed (replication factor <= live brokers). A stand-in speaks
// the real broker-facing RPCs (RegisterBroker, BrokerHeartbeat) to any controller; a
// follower forwards them to the active controller. It claims to have applied the
// metadata log up to its own registration record, which is all the controller needs
// to unfence it.

type Unary = (req: object, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: any) => void) => void;

export class StandInBrokers {
  private readonly clients: grpc.Client[];
  private readonly epochs = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private cursor = 0;
  /** Brokers whose heartbeats are withheld (to make the controller fence them). */
  private readonly silenced = new Set<number>();

  constructor(private readonly controllers: string[], private readonly brokerIds: number[]) {
    const pkg = loadProto('controller.proto') as any;
    const Service = pkg.flotilla.controller.Controller as grpc.ServiceClientConstructor;
    this.clients = controllers.map((a) => new Service(a, grpc.credentials.createInsecure(), CHANNEL_OPTIONS));
  }

  private async call(method: string, req: object): Promise<any> {
    let lastErr: unknown;
    for (let attempt = 0; attempt < 3 * this.clients.length; attempt++) {
      const client = this.clients[this.cursor % this.clients.length] as unknown as Record<string, Unary>;
      try {
        return await new Promise((resolve, reject) => {
          client[method].call(client, req, new grpc.Metadata(), { deadline: Date.now() + 2000 }, (err, res) => (err ? reject(fromGrpcError(err)) : resolve(res)));
        });
      } catch (e) {
        lastErr = e;
        this.cursor++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw lastErr;
  }

  async register(): Promise<void> {
    for (const id of this.brokerIds) {
      const res = await this.call('RegisterBroker', { brokerId: id, incarnationId: crypto.randomUUID(), host: '127.0.0.1', port: 19000 + id, rack: '' });
      this.epochs.set(id, Number(res.brokerEpoch));
    }
    await this.heartbeatAll();
  }

  async heartbeatAll(): Promise<boolean[]> {
    const fenced: boolean[] = [];
    for (const id of this.brokerIds) {
      if (this.silenced.has(id)) continue;
      const epoch = this.epochs.get(id)!;
      try {
        const res = await this.call('BrokerHeartbeat', { brokerId: id, brokerEpoch: epoch, currentMetadataOffset: epoch, wantShutdown: false });
        fenced.push(Boolean(res.isFenced));
      } catch {
        fenced.push(true);
      }
    }
    return fenced;
  }

  /** Stop heartbeating for one broker, as if its process hung or its network failed. */
  silence(brokerId: number): void {
    this.silenced.add(brokerId);
  }

  /** Heartbeat every intervalMs until stop(). */
  start(intervalMs = 500): void {
    const loop = async () => {
      await this.heartbeatAll().catch(() => undefined);
      if (this.timer) this.timer = setTimeout(loop, intervalMs);
    };
    this.timer = setTimeout(loop, intervalMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const c of this.clients) c.close();
  }
}
