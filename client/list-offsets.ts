import { FlotillaError } from '../shared/errors/error-codes';
import type { BrokerConnections } from './broker-connections';
import { errorFromWire } from './cluster-metadata';
import type { ListOffsetsResponseWire } from './wire';

// ListOffsets (Kafka's ListOffsets API): earliest (-2), latest (-1, the high watermark) or
// by timestamp, asked of a partition's leader. Used by the consumer's position resets and
// the admin client's fetchTopicOffsets.

export interface OffsetQuery {
  readonly topic: string;
  readonly partition: number;
  /** -2 earliest, -1 latest (the high watermark), >= 0 by timestamp. */
  readonly timestampMs: number;
  readonly currentLeaderEpoch?: number;
}

export interface OffsetAnswer {
  readonly offset: number;
  readonly error?: FlotillaError;
}

/** One ListOffsets call to the leader at `address`; per-query errors in the answers. */
export async function listOffsets(connections: BrokerConnections, address: string, queries: readonly OffsetQuery[], timeoutMs: number): Promise<OffsetAnswer[]> {
  const res = await connections.unary<ListOffsetsResponseWire>(
    address,
    'ListOffsets',
    { isolationLevel: 'READ_UNCOMMITTED', partitions: queries.map((q) => ({ topic: q.topic, partition: q.partition, timestampMs: q.timestampMs, currentLeaderEpoch: q.currentLeaderEpoch ?? -1 })) },
    Date.now() + timeoutMs,
  );
  const answers = res.partitions ?? [];
  return queries.map((q, i) => {
    // One answer per query, in request order (proto/broker.proto): matched by position, since
    // one partition may be asked twice (earliest and latest, as fetchTopicOffsets does).
    const at = answers[i];
    const r = at && at.topic === q.topic && at.partition === q.partition ? at : undefined;
    if (!r) return { offset: -1, error: new FlotillaError('UNKNOWN', `ListOffsets answer lacks ${q.topic}-${q.partition}`) };
    if (r.error && r.error.code !== 0) return { offset: -1, error: errorFromWire(r.error, { topic: q.topic, partition: q.partition }) };
    return { offset: r.offset };
  });
}

