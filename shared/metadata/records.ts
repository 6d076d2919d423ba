// The TypeScript view of proto/metadata.proto: one interface per record type, discriminated
// by `type`. The proto file is the schema of record (its comments say what each field
// means); these interfaces mirror it field for field, in camelCase.
//
// Decision records carry `reason` and `timestampMs`, set by the controller when it
// generates them; replay turns every applied record with a non-empty reason into an event
// and never reads a clock. Snapshot records (imageToRecords) leave reason '' and timestampMs 0.

/** Broker id meaning "no leader" (Kafka's LeaderConstants.NO_LEADER). */
export const NO_LEADER = -1;

/** Schema version written into every MetadataRecord; decoding refuses newer versions. */
export const RECORD_VERSION = 1;

export type ConfigResourceType = 'topic' | 'broker' | 'cluster';

export interface RegisterBrokerRecord {
  readonly type: 'RegisterBroker';
  readonly brokerId: number;
  readonly incarnationId: string;
  /** 0 = "the offset of this record" (the controller does not know it before appending). */
  readonly brokerEpoch: number;
  readonly host: string;
  readonly port: number;
  readonly rack: string | null;
  readonly fenced: boolean;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface UnregisterBrokerRecord {
  readonly type: 'UnregisterBroker';
  readonly brokerId: number;
  readonly brokerEpoch: number;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface BrokerFencedRecord {
  readonly type: 'BrokerFenced';
  readonly brokerId: number;
  readonly brokerEpoch: number;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface BrokerUnfencedRecord {
  readonly type: 'BrokerUnfenced';
  readonly brokerId: number;
  readonly brokerEpoch: number;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface TopicRecord {
  readonly type: 'Topic';
  readonly name: string;
  readonly topicId: string;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface PartitionRecord {
  readonly type: 'Partition';
  readonly topicId: string;
  readonly partition: number;
  readonly replicas: readonly number[];
  readonly isr: readonly number[];
  readonly leader: number;
  readonly leaderEpoch: number;
  readonly partitionEpoch: number;
}

/** Absent (undefined) fields are unchanged. */
export interface PartitionChangeRecord {
  readonly type: 'PartitionChange';
  readonly topicId: string;
  readonly partition: number;
  readonly leader?: number;
  readonly isr?: readonly number[];
  readonly replicas?: readonly number[];
  readonly reason: string;
  readonly timestampMs: number;
}

export interface RemoveTopicRecord {
  readonly type: 'RemoveTopic';
  readonly topicId: string;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface ConfigRecord {
  readonly type: 'Config';
  readonly resourceType: ConfigResourceType;
  /** Topic name, broker id in decimal, or '' for the cluster. */
  readonly resourceName: string;
  readonly key: string;
  /** null = the key is deleted (back to its default). */
  readonly value: string | null;
  readonly reason: string;
  readonly timestampMs: number;
}

export interface ProducerIdBlockRecord {
  readonly type: 'ProducerIdBlock';
  /** -1 in snapshots. */
  readonly brokerId: number;
  /** -1 in snapshots. */
  readonly brokerEpoch: number;
  readonly firstProducerId: number;
  readonly count: number;
  readonly reason: string;
  readonly timestampMs: number;
}

/** Snapshot-only: one entry of the image's event ring. */
export interface EventRecord {
  readonly type: 'Event';
  readonly offset: number;
  readonly timestampMs: number;
  readonly kind: string;
  readonly text: string;
}

export type MetadataRecord =
  | RegisterBrokerRecord
  | UnregisterBrokerRecord
  | BrokerFencedRecord
  | BrokerUnfencedRecord
  | TopicRecord
  | PartitionRecord
  | PartitionChangeRecord
  | RemoveTopicRecord
  | ConfigRecord
  | ProducerIdBlockRecord
  | EventRecord;

export type MetadataRecordType = MetadataRecord['type'];
