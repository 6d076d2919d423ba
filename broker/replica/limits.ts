// Sizes and counts the data plane bounds (STYLE.md "Put a limit on everything"), in one place
// so the server, the fetcher and the docs agree.

const MIB = 1024 * 1024;

/**
 * gRPC max message size, both directions, on the broker's server and on the follower's fetch
 * client. Chosen from the largest batch a topic may accept — max.message.bytes is capped at
 * 100 MiB by the topic config table — plus 1 MiB for the request's other fields: a produce
 * request carrying such a batch must fit, and a fetch returns at least one whole batch even
 * when it is larger than max_bytes. Anything bigger is refused by gRPC itself
 * (RESOURCE_EXHAUSTED) before it is parsed.
 */
export const BROKER_MAX_MESSAGE_BYTES = 101 * MIB;
/** Partitions in one Produce, Fetch or ListOffsets request. */
export const REQUEST_PARTITIONS_MAX = 10_000;
/** Topics named in one Metadata request. */
export const METADATA_TOPICS_MAX = 10_000;
/** A Fetch's max_bytes is clamped to this (a response must stay under the message limit). */
export const FETCH_RESPONSE_MAX_BYTES = 64 * MIB;
/** Longest long-poll a fetch may ask for. */
export const FETCH_MAX_WAIT_MS_MAX = 30_000;
/** Fetches parked at once on one broker; beyond it a fetch is answered at once. */
export const DELAYED_FETCHES_MAX = 10_000;
/** acks=all partition appends waiting for the high watermark at once, broker-wide. */
export const DELAYED_PRODUCES_MAX = 100_000;
/** Replicate streams one broker serves at once (a follower opens one per leader it follows). */
export const REPLICA_STREAMS_MAX = 1_000;
/** Record bytes in one message of a Replicate stream (more goes in the next one). */
export const REPLICA_PUSH_MAX_BYTES = 16 * MIB;
/** Produce requests in flight on one ProduceStream before the broker stops reading it. */
export const STREAM_INFLIGHT_MAX = 1_024;
/** Default and bound of a Produce's timeout_ms. */
export const PRODUCE_TIMEOUT_MS_DEFAULT = 30_000;
export const PRODUCE_TIMEOUT_MS_MAX = 300_000;
