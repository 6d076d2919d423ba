import fastCrc32c = require('@chainsafe/fast-crc32c');

// CRC32C (Castagnoli, polynomial 0x1EDC6F41 reflected 0x82F63B78), the checksum of Kafka's
// RecordBatch v2, iSCSI and ext4. Check value: crc32c("123456789") = 0xE3069283.
//
// Why @chainsafe/fast-crc32c and not our own table: it is maintained (ChainSafe, used by
// Lodestar), calls @node-rs/crc32 (SSE4.2/ARMv8 CRC instructions through a prebuilt N-API
// binary shipped inside registry packages, ~6 GB/s here) and falls back to a pure-JS table
// (~300 MB/s) when no binary fits the platform. Its loader checks the implementation against
// a known value before using it, and test/broker-log checks the standard check value. Every
// append and every read checks a CRC over all its bytes, so the hardware path matters.

/** CRC32C of `bytes` as an unsigned 32-bit integer. */
export function crc32c(bytes: Uint8Array): number {
  return fastCrc32c.calculate(bytes) >>> 0;
}
