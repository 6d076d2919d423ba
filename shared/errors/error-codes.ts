// The one table of operating-condition errors (STYLE.md "Errors"): every error a client
// can see has a stable numeric code, a name, and a retriable flag. A broken invariant is
// not here: it is an assert() and a crash. Codes are never reused or renumbered.
// The gRPC mapping lives in shared/rpc (this file stays free of I/O imports).

export const ErrorCode = {
  UNKNOWN: { code: 1, retriable: false, about: 'an unexpected server error' },
  INVALID_REQUEST: { code: 2, retriable: false, about: 'the request is malformed or a field is out of range' },
  NOT_CONTROLLER: { code: 3, retriable: true, about: 'this controller is not the active controller; follow leaderHint' },
  CONTROLLER_UNAVAILABLE: { code: 4, retriable: true, about: 'no active controller is known right now (election in progress)' },
  REQUEST_TIMED_OUT: { code: 5, retriable: true, about: 'the request did not complete within its deadline' },
  INVALID_TOPIC_NAME: { code: 10, retriable: false, about: 'topic names are 1-249 characters of [a-zA-Z0-9._-], not "." or ".."' },
  TOPIC_ALREADY_EXISTS: { code: 11, retriable: false, about: 'a topic with this name exists' },
  UNKNOWN_TOPIC: { code: 12, retriable: false, about: 'no topic with this name exists' },
  INVALID_PARTITIONS: { code: 13, retriable: false, about: 'the partition count is outside its bounds' },
  INVALID_REPLICATION_FACTOR: { code: 14, retriable: false, about: 'the replication factor is outside its bounds or exceeds live brokers' },
  INVALID_CONFIG: { code: 15, retriable: false, about: 'a config key is unknown or its value is of the wrong type or out of bounds' },
  TOPIC_DELETION_IN_PROGRESS: { code: 16, retriable: true, about: 'the topic is being deleted' },
  LIMIT_EXCEEDED: { code: 17, retriable: false, about: 'a cluster-wide limit would be exceeded' },
  UNKNOWN_BROKER: { code: 20, retriable: false, about: 'no broker with this id is registered' },
  STALE_BROKER_EPOCH: { code: 21, retriable: false, about: 'the broker epoch/incarnation is older than the registered one' },
  BROKER_FENCED: { code: 22, retriable: true, about: 'the broker is fenced' },
  DUPLICATE_BROKER_REGISTRATION: { code: 23, retriable: false, about: 'another live incarnation holds this broker id' },
  STALE_PARTITION_EPOCH: { code: 30, retriable: false, about: 'the partition epoch in the request is older than the current one' },
  INVALID_ISR: { code: 31, retriable: false, about: 'the proposed ISR is not a subset of the replicas or is empty' },
  UNKNOWN_PARTITION: { code: 32, retriable: false, about: 'no such partition' },
  NOT_LEADER_FOR_PARTITION: { code: 33, retriable: true, about: 'the broker is not the leader of this partition' },
  OFFSET_OUT_OF_RANGE: { code: 34, retriable: false, about: 'the offset is outside the log' },
  METADATA_OFFSET_COMPACTED: { code: 35, retriable: false, about: 'the requested metadata offset was compacted into a snapshot' },
  PROPOSAL_DROPPED: { code: 40, retriable: true, about: 'the quorum could not accept the change (leader transfer or overload)' },
  RECONFIGURATION_IN_PROGRESS: { code: 41, retriable: true, about: 'a membership change is still uncommitted' },
  LEARNER_NOT_CAUGHT_UP: { code: 42, retriable: true, about: 'the learner has not caught up with the leader yet' },
  INVALID_MEMBERSHIP_CHANGE: { code: 43, retriable: false, about: 'the membership change is not valid for the current configuration' },
  CORRUPT_RECORD: { code: 50, retriable: true, about: 'a record batch failed its CRC32C or framing check (corrupted in transit or on disk)' },
  RECORD_TOO_LARGE: { code: 51, retriable: false, about: 'a record batch is larger than max.message.bytes' },
  INVALID_RECORD: { code: 52, retriable: false, about: 'a record batch is well-formed but breaks a rule of the log (empty, bad timestamps, unsupported attributes)' },
  UNEXPECTED_APPEND_OFFSET: { code: 53, retriable: false, about: 'a replicated batch does not continue the log contiguously at its end offset' },
  FENCED_LEADER_EPOCH: { code: 54, retriable: true, about: 'the leader epoch is older than one the log has already seen' },
  STORAGE_ERROR: { code: 55, retriable: true, about: 'the partition log hit an I/O error or found its files inconsistent and is offline on this broker' },
  NOT_ENOUGH_REPLICAS: { code: 56, retriable: true, about: 'acks=all and the ISR is smaller than min.insync.replicas: nothing was appended' },
  NOT_ENOUGH_REPLICAS_AFTER_APPEND: { code: 57, retriable: true, about: 'appended on the leader, but the ISR shrank below min.insync.replicas before it was replicated; may be retried (a duplicate unless idempotent)' },
  INVALID_REQUIRED_ACKS: { code: 58, retriable: false, about: 'acks must be -1 (all), 0 or 1' },
  UNKNOWN_LEADER_EPOCH: { code: 59, retriable: true, about: 'the leader epoch in the request is newer than the one this broker knows (its metadata is behind)' },
  LEADER_NOT_AVAILABLE: { code: 60, retriable: true, about: 'the partition has no leader right now (election in progress, or every ISR member is down)' },
  OUT_OF_ORDER_SEQUENCE: { code: 61, retriable: false, about: 'an idempotent batch skipped sequence numbers: an earlier batch of this producer is missing' },
  INVALID_PRODUCER_EPOCH: { code: 62, retriable: false, about: 'the producer epoch is older than the one the partition has seen: this producer was fenced by a newer instance' },
  UNKNOWN_PRODUCER_ID: { code: 63, retriable: false, about: 'the partition holds no state for this producer id (expired or never seen) and the batch does not start a sequence' },
  PRODUCER_ID_UNAVAILABLE: { code: 64, retriable: true, about: 'the broker could not get a producer id block from the controller right now' },
} as const;

export type ErrorName = keyof typeof ErrorCode;

const byCode = new Map<number, ErrorName>();
for (const [name, spec] of Object.entries(ErrorCode)) {
  if (byCode.has(spec.code)) throw new Error(`duplicate error code ${spec.code}`);
  byCode.set(spec.code, name as ErrorName);
}

export function errorNameForCode(code: number): ErrorName {
  return byCode.get(code) ?? 'UNKNOWN';
}

/** An operating condition, typed: clients branch on `name` and retry only when `retriable`. */
export class FlotillaError extends Error {
  override readonly name: ErrorName;
  readonly code: number;
  readonly retriable: boolean;
  /** Extra machine-readable facts, e.g. { leaderId, leaderAddress } for NOT_CONTROLLER. */
  readonly details: Readonly<Record<string, string | number>>;

  constructor(name: ErrorName, message: string, details: Record<string, string | number> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = name;
    this.code = ErrorCode[name].code;
    this.retriable = ErrorCode[name].retriable;
    this.details = details;
  }
}

export function isFlotillaError(e: unknown, name?: ErrorName): e is FlotillaError {
  return e instanceof FlotillaError && (name === undefined || e.name === name);
}
