// proto/broker.proto messages as @grpc/proto-loader hands them over (camelCase fields,
// int64 as numbers, bytes as Buffers, defaults filled in). Only the client and the test
// fake use these shapes; the public API has its own types (types.ts, producer.ts, consumer.ts).

export interface ErrorWire {
  code: number;
  name: string;
  message: string;
  detailsJson: string;
}

export interface BrokerInfoWire {
  brokerId: number;
  host: string;
  port: number;
  rack: string;
  fenced: boolean;
}

export interface PartitionInfoWire {
  partition: number;
  leader: number;
  leaderEpoch: number;
  replicas: number[];
  isr: number[];
}

export interface TopicInfoWire {
  name: string;
  topicId: string;
  partitions: PartitionInfoWire[];
  error?: ErrorWire | null;
}

export interface MetadataResponseWire {
  brokers: BrokerInfoWire[];
  topics: TopicInfoWire[];
  metadataOffset: number;
  responderId: number;
}

export interface PartitionRecordsWire {
  topic: string;
  partition: number;
  records: Buffer;
}

export interface ProduceRequestWire {
  correlationId: number;
  acks: number;
  timeoutMs: number;
  partitions: PartitionRecordsWire[];
  transactionalId: string;
}

export interface PartitionProduceResultWire {
  topic: string;
  partition: number;
  baseOffset: number;
  logAppendTimeMs: number;
  logStartOffset: number;
  error?: ErrorWire | null;
}

export interface ProduceResponseWire {
  correlationId: number;
  results: PartitionProduceResultWire[];
  error?: ErrorWire | null;
}

export interface FetchPartitionWire {
  topic: string;
  partition: number;
  fetchOffset: number;
  partitionMaxBytes: number;
  currentLeaderEpoch: number;
  lastFetchedEpoch: number;
}

export interface FetchRequestWire {
  replicaId: number;
  replicaEpoch: number;
  maxWaitMs: number;
  minBytes: number;
  maxBytes: number;
  isolationLevel: string;
  partitions: FetchPartitionWire[];
}

export interface FetchPartitionResultWire {
  topic: string;
  partition: number;
  error?: ErrorWire | null;
  highWatermark: number;
  lastStableOffset: number;
  logStartOffset: number;
  records: Buffer;
  leaderEpoch: number;
}

export interface FetchResponseWire {
  partitions: FetchPartitionResultWire[];
}

export interface ListOffsetsResultWire {
  topic: string;
  partition: number;
  error?: ErrorWire | null;
  offset: number;
  timestampMs: number;
  leaderEpoch: number;
}

export interface ListOffsetsResponseWire {
  partitions: ListOffsetsResultWire[];
}

export interface InitProducerIdResponseWire {
  producerId: number;
  producerEpoch: number;
}
