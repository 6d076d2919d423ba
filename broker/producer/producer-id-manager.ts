import { strict as assert } from 'node:assert';
import { FlotillaError, isFlotillaError } from '../../shared/errors/error-codes';
import { silentLogger } from '../../shared/log';
import type { Logger } from '../../shared/log';

// Producer ids for InitProducerId (Kafka's RPCProducerIdManager): the controller hands each
// broker blocks of ids ([firstProducerId, firstProducerId + count), recorded in the metadata
// log as ProducerIdBlock, never overlapping); the broker gives them out one by one, with
// epoch 0 for a fresh id, and fetches the next block when the current one is 90 % used, so
// a steady stream of InitProducerId rarely waits for the controller. The first block is
// fetched ahead too (prefetch(), once the broker is unfenced), not on the first request.
//
// The broker wires `allocate` to the controller's AllocateProducerIds through
// broker/controller-channel.ts, e.g.
//   allocate: () => channel.call('AllocateProducerIds', { brokerId, brokerEpoch },
//                                { deadlineMs: Date.now() + 5000, idempotent: false })
// (not idempotent: a lost answer wastes a block, which is harmless, but must not be
// retried blindly on another controller).
//
// Concurrency: JavaScript runs one callback at a time, so taking an id from the current block
// is atomic. At most one allocate() is in flight; callers that find no id left wait for that
// one call, then take ids in turn; a caller whose block was used up by others waits for the
// next one (bounded by attemptsMax). No id is ever issued twice: a block is accepted only if
// it starts at or after the end of every block accepted before (the controller's blocks
// increase), and each id of a block is handed out once.
//
// Failure: a failed or invalid allocation is PRODUCER_ID_UNAVAILABLE (retriable, with the
// cause) for every caller waiting on it, and for retryBackoffMs afterwards callers fail fast
// instead of each sending its own request to a controller that is down (Kafka answers
// COORDINATOR_LOAD_IN_PROGRESS without waiting at all).

export interface ProducerIdBlock {
  readonly firstProducerId: number;
  readonly count: number;
}

export interface ProducerIdAndEpoch {
  readonly producerId: number;
  readonly producerEpoch: number;
}

export interface ProducerIdManagerOptions {
  /** One block from the controller (AllocateProducerIds). */
  readonly allocate: () => Promise<ProducerIdBlock>;
  readonly logger?: Logger;
  readonly nowMs?: () => number;
  /** Share of the current block handed out at which the next block is fetched. Default 0.9. */
  readonly prefetchFraction?: number;
  /** After a failed allocation, calls fail fast for this long. Default 100. */
  readonly retryBackoffMs?: number;
  /** Allocations one call waits for before giving up (others may take the ids). Default 3. */
  readonly attemptsMax?: number;
}

interface CurrentBlock {
  readonly firstProducerId: number;
  readonly count: number;
  /** The next id to hand out. */
  next: number;
}

export class ProducerIdManager {
  private current: CurrentBlock | undefined;
  private prefetched: ProducerIdBlock | undefined;
  private inFlight: Promise<void> | undefined;
  /** Every block accepted lies below this: the next one must start at or after it. */
  private acceptedEnd = 0;
  private lastFailure: { readonly atMs: number; readonly error: FlotillaError } | undefined;
  private readonly allocateBlock: () => Promise<ProducerIdBlock>;
  private readonly logger: Logger;
  private readonly nowMs: () => number;
  private readonly prefetchFraction: number;
  private readonly retryBackoffMs: number;
  private readonly attemptsMax: number;

  constructor(o: ProducerIdManagerOptions) {
    this.allocateBlock = o.allocate;
    this.logger = o.logger ?? silentLogger();
    this.nowMs = o.nowMs ?? Date.now;
    this.prefetchFraction = o.prefetchFraction ?? 0.9;
    this.retryBackoffMs = o.retryBackoffMs ?? 100;
    this.attemptsMax = o.attemptsMax ?? 3;
    assert(this.prefetchFraction > 0 && this.prefetchFraction <= 1, `prefetchFraction ${this.prefetchFraction}`);
    assert(Number.isSafeInteger(this.retryBackoffMs) && this.retryBackoffMs >= 0, `retryBackoffMs ${this.retryBackoffMs}`);
    assert(Number.isSafeInteger(this.attemptsMax) && this.attemptsMax >= 1, `attemptsMax ${this.attemptsMax}`);
  }

  /** A producer id never issued before by this cluster, with epoch 0. PRODUCER_ID_UNAVAILABLE when none can be had. */
  async generateProducerId(): Promise<ProducerIdAndEpoch> {
    for (let attempt = 0; attempt < this.attemptsMax; attempt++) {
      const id = this.take();
      if (id !== undefined) {
        this.maybePrefetch();
        return { producerId: id, producerEpoch: 0 };
      }
      const failure = this.recentFailure();
      if (failure !== undefined) throw failure;
      await this.fetchBlock();
    }
    throw new FlotillaError('PRODUCER_ID_UNAVAILABLE', `producer id blocks were used up by concurrent callers ${this.attemptsMax} times in a row; retry`, {
      attempts: this.attemptsMax,
    });
  }

  /**
   * Fetches a block now unless one is held or on its way: the broker calls it once it is
   * unfenced, so the first InitProducerId after a (re)start does not wait for a Raft write on
   * the controller (measured ~9 s during a chaos roll-restart). Never throws; a failure is
   * logged and the next InitProducerId tries again.
   */
  prefetch(): void {
    if (this.idsAvailable > 0 || this.inFlight !== undefined || this.recentFailure() !== undefined) return;
    this.fetchBlock().catch((e: unknown) => this.logger.warn({ err: e }, 'fetching a producer id block ahead of use failed; will retry on InitProducerId'));
  }

  /** Ids left in the current and the prefetched block (for tests and metrics). */
  get idsAvailable(): number {
    const inCurrent = this.current === undefined ? 0 : this.current.firstProducerId + this.current.count - this.current.next;
    return inCurrent + (this.prefetched?.count ?? 0);
  }

  private take(): number | undefined {
    if (this.current !== undefined && this.current.next < this.current.firstProducerId + this.current.count) return this.current.next++;
    if (this.prefetched !== undefined) {
      this.current = { ...this.prefetched, next: this.prefetched.firstProducerId };
      this.prefetched = undefined;
      return this.current.next++;
    }
    return undefined;
  }

  private maybePrefetch(): void {
    const c = this.current;
    if (c === undefined || this.prefetched !== undefined || this.inFlight !== undefined || this.recentFailure() !== undefined) return;
    if (c.next - c.firstProducerId < this.prefetchFraction * c.count) return;
    this.fetchBlock().catch((e: unknown) => this.logger.warn({ err: e }, 'prefetching the next producer id block failed; will retry on a later InitProducerId'));
  }

  private recentFailure(): FlotillaError | undefined {
    if (this.lastFailure === undefined || this.nowMs() - this.lastFailure.atMs >= this.retryBackoffMs) return undefined;
    return this.lastFailure.error;
  }

  /** One allocation, shared by every caller that asks while it is in flight. */
  private fetchBlock(): Promise<void> {
    if (this.inFlight !== undefined) return this.inFlight;
    const p = (async () => {
      let block: ProducerIdBlock;
      try {
        block = await this.allocateBlock();
      } catch (e) {
        throw this.failed(
          new FlotillaError(
            'PRODUCER_ID_UNAVAILABLE',
            `could not get a producer id block from the controller: ${(e as Error).message}`,
            { cause: isFlotillaError(e) ? e.name : 'error' },
            { cause: e },
          ),
        );
      }
      const why = this.invalid(block);
      if (why !== undefined) {
        this.logger.error({ block, acceptedEnd: this.acceptedEnd }, `refused a producer id block: ${why}`);
        throw this.failed(new FlotillaError('PRODUCER_ID_UNAVAILABLE', `the controller's producer id block is unusable: ${why}`, { ...block }));
      }
      this.acceptedEnd = block.firstProducerId + block.count;
      this.lastFailure = undefined;
      const exhausted = this.current === undefined || this.current.next >= this.current.firstProducerId + this.current.count;
      if (exhausted && this.prefetched === undefined) this.current = { ...block, next: block.firstProducerId };
      else this.prefetched = block;
      this.logger.info({ ...block }, `got producer ids ${block.firstProducerId}..${block.firstProducerId + block.count - 1}`);
    })();
    this.inFlight = p.finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private invalid(b: ProducerIdBlock): string | undefined {
    if (!Number.isSafeInteger(b.firstProducerId) || b.firstProducerId < 0) return `first id ${b.firstProducerId}`;
    if (!Number.isSafeInteger(b.count) || b.count < 1 || b.firstProducerId + b.count > Number.MAX_SAFE_INTEGER) return `count ${b.count}`;
    if (b.firstProducerId < this.acceptedEnd) return `it starts at ${b.firstProducerId}, inside ids already accepted (below ${this.acceptedEnd})`;
    return undefined;
  }

  private failed(e: FlotillaError): FlotillaError {
    this.lastFailure = { atMs: this.nowMs(), error: e };
    return e;
  }
}
