/* SipHash-2-4 with a 64-bit result (Aumasson & Bernstein), as casync uses it
 * to hash file names in catar GOODBYE tables.
 *
 * Contract: pure functions over the caller's buffers. Nothing is allocated,
 * nothing is kept after a call returns, so they are safe to call with the GIL
 * released. The key is 16 bytes, read as two little-endian u64 halves.
 */
#ifndef DESYNC_DECL_SIPHASH_H
#define DESYNC_DECL_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

/* SipHash-2-4 of data[0..len). */
uint64_t ca_siphash24(const uint8_t *key, const uint8_t *data, size_t len);

/* Hash n strings laid end to end in data: string i is data[ends[i-1]..ends[i])
 * (string 0 starts at 0). Writes n results to out. One call per directory
 * instead of one per name. */
void ca_siphash24_many(const uint8_t *key, const uint8_t *data, const uint64_t *ends,
                       size_t n, uint64_t *out);

#endif
