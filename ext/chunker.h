/* casync-compatible content-defined chunker (buzhash, 48-byte window).
 *
 * Contract: the caller owns every byte. ca_chunker_scan() only reads the
 * caller's buffer and reports where chunks end; it never allocates, never
 * copies and keeps no pointer after it returns, so it is safe to call with the
 * GIL released.
 *
 * Streaming: buf[0] is always the first byte of the current, not yet finished
 * chunk.  The chunker remembers how far into that chunk it has already looked
 * (and the rolling hash there), so the caller passes the unfinished tail again
 * together with new data and no byte is hashed twice.
 */
#ifndef DESYNC_DECL_CHUNKER_H
#define DESYNC_DECL_CHUNKER_H

#include <stddef.h>
#include <stdint.h>

#define CA_CHUNKER_WINDOW 48

typedef struct ca_chunker {
    uint64_t min, avg, max;
    uint64_t discriminator;  /* casync's formula, clamped into [min, max] */
    uint64_t divisible_c;    /* ceil(2^64 / discriminator): the cut test without division */
    uint64_t first_test;     /* max(min, WINDOW): first chunk length tested */
    int fixed;               /* min == avg == max: cut every max bytes, no hash */
    uint32_t hash;           /* rolling hash of the window ending at `scanned` */
    uint64_t scanned;        /* bytes of the current chunk already tested (0 = none) */
} ca_chunker;

/* Discriminator for an average chunk size, as casync computes it (C double,
 * truncated), before clamping. */
uint64_t ca_chunker_discriminator(uint64_t avg);

/* Set up a chunker. Returns 0, or -1 when the sizes are not usable:
 * they must satisfy 1 <= min <= avg <= max, and max >= WINDOW unless fixed. */
int ca_chunker_init(ca_chunker *c, uint64_t min, uint64_t avg, uint64_t max);

/* Scan buf[0..len) (buf[0] = start of the current chunk). Writes up to
 * max_cuts chunk end offsets, relative to buf, in increasing order, and
 * returns how many it wrote. Bytes after the last cut belong to an unfinished
 * chunk: pass them again, followed by more data, in the next call. At end of
 * input the unfinished bytes are the final chunk. */
size_t ca_chunker_scan(ca_chunker *c, const uint8_t *buf, size_t len,
                       uint64_t *cuts, size_t max_cuts);

/* Move past `zeros` zero bytes that follow the `done` bytes of the current
 * chunk, without reading them: inside zeros the window hash is a constant, so
 * either every tested length is a cut or none is before max. Precondition:
 * every window the scan would test in them lies inside the zeros (the caller
 * scanned the first WINDOW of them, and the chunk's first_test if it is not
 * reached yet, with ca_chunker_scan). Returns the number of cuts among them;
 * they end *first + i * *step bytes after the current chunk's start, i < count.
 * The chunker then stands after the last of them (or after the zeros, in the
 * same chunk, if there was none), ready for ca_chunker_scan on the bytes that
 * follow (passed from that chunk's start, as always). */
uint64_t ca_chunker_skip_zeros(ca_chunker *c, uint64_t done, uint64_t zeros,
                               uint64_t *first, uint64_t *step);

/* Rolling hash of one full 48-byte window (exposed for tests). */
uint32_t ca_chunker_window_hash(const uint8_t *window);

/* Whether a window hash h is a cut point: h % discriminator == discriminator - 1,
 * computed without a division (exposed for tests). */
int ca_chunker_is_cut(const ca_chunker *c, uint32_t h);

#endif
