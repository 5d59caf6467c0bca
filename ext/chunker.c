/* casync-compatible content-defined chunker; see chunker.h for the contract
 * and casync's src/cachunker.c (ca_chunker_scan) for the exact cut rule. */
#include "chunker.h"
#include "buzhash_table.h"

uint32_t ca_chunker_window_hash(const uint8_t *w);

static inline uint32_t rol32(uint32_t x, unsigned n) {
    n &= 31;
    return n ? (x << n) | (x >> (32 - n)) : x;
}

/* buzhash_table rotated by WINDOW (= 16 mod 32): the contribution of the byte
 * leaving the window. Built once; the values never change. */
static uint32_t table_out[256];
static int table_out_ready;
static uint32_t zero_hash;  /* hash of a window of WINDOW zero bytes */

static void init_table_out(void) {
    if (table_out_ready)
        return;
    for (int i = 0; i < 256; i++)
        table_out[i] = rol32(buzhash_table[i], CA_CHUNKER_WINDOW);
    static const uint8_t zeros[CA_CHUNKER_WINDOW];
    zero_hash = ca_chunker_window_hash(zeros);
    table_out_ready = 1;
}

uint64_t ca_chunker_discriminator(uint64_t avg) {
    return (uint64_t)((double)avg / (-1.42888852e-7 * (double)avg + 1.33237515));
}

int ca_chunker_init(ca_chunker *c, uint64_t min, uint64_t avg, uint64_t max) {
    if (min < 1 || min > avg || avg > max)
        return -1;
    c->min = min;
    c->avg = avg;
    c->max = max;
    c->fixed = (min == avg && avg == max);
    if (!c->fixed && max < CA_CHUNKER_WINDOW)
        return -1;
    uint64_t d = ca_chunker_discriminator(avg);
    if (d < min)
        d = min;
    if (d > max)
        d = max;
    c->discriminator = d;
    c->divisible_c = UINT64_MAX / d + 1;
    c->first_test = min > CA_CHUNKER_WINDOW ? min : CA_CHUNKER_WINDOW;
    c->hash = 0;
    c->scanned = 0;
    init_table_out();
    return 0;
}

uint32_t ca_chunker_window_hash(const uint8_t *w) {
    uint32_t h = 0;
    for (int i = 0; i < CA_CHUNKER_WINDOW; i++)
        h = rol32(h, 1) ^ buzhash_table[w[i]];
    return h;
}

/* casync cuts where h % d == d - 1, that is where d divides h + 1. Lemire,
 * Kaser & Kurz ("Faster remainder by direct computation", 2019, theorem 1 and
 * its divisibility corollary): with c = ceil(2^64 / d), n is a multiple of d
 * exactly when n * c mod 2^64 <= c - 1, for every n < 2^N with N + log2(d) <= 64.
 * Here n = h + 1 <= 2^32 (N = 33) and d <= max < 2^31: one multiplication
 * and one comparison, no division (tests/test_chunker_scan.py checks it
 * against h % d on edge and random values for many d). */
static inline int is_cut(uint32_t h, uint64_t c) {
    return ((uint64_t)h + 1) * c <= c - 1;
}

int ca_chunker_is_cut(const ca_chunker *c, uint32_t h) {
    return is_cut(h, c->divisible_c);
}

static size_t scan_fixed(ca_chunker *c, size_t len, uint64_t *cuts, size_t max_cuts) {
    size_t n = 0;
    uint64_t end = c->max;
    while (n < max_cuts && end <= len) {
        cuts[n++] = end;
        end += c->max;
    }
    return n;
}

/* The hash after the window moves on by one byte: `in` enters, `out` leaves. */
#define ROLL(h, out, in) (rol32((h), 1) ^ table_out[(out)] ^ buzhash_table[(in)])

size_t ca_chunker_scan(ca_chunker *c, const uint8_t *buf, size_t len,
                       uint64_t *cuts, size_t max_cuts) {
    if (c->fixed)
        return scan_fixed(c, len, cuts, max_cuts);

    const uint64_t max = c->max, dc = c->divisible_c, first = c->first_test;
    size_t n = 0;
    uint64_t start = 0;          /* current chunk's first byte, relative to buf */
    uint64_t size = c->scanned;  /* its length tested so far */
    uint32_t h = c->hash;

    while (n < max_cuts) {
        const uint64_t avail = len - start;
        const uint8_t *p = buf + start;
        if (size < first) {
            if (avail < first) {
                size = 0;        /* nothing tested yet: start afresh next time */
                break;
            }
            /* The window never reaches back before the chunk start, and
             * bytes before first - WINDOW cannot influence a cut. */
            h = ca_chunker_window_hash(p + first - CA_CHUNKER_WINDOW);
            size = first;
        }
        /* h is the hash of the window ending at `size`; test it, then every
         * length up to `end` (inclusive). A length of max is a cut anyway. */
        const uint64_t end = avail < max ? avail : max;
        if (is_cut(h, dc))
            goto cut;
        /* Four lengths per round, each tested as soon as its hash is known:
         * one bound check per four bytes. (Computing the four hashes from h
         * directly to shorten the loop-carried chain, and testing them with
         * one branch, measured slower: bench/results-scan.md.) */
        while (size + 4 <= end) {
            const uint8_t *o = p + size - CA_CHUNKER_WINDOW, *i = p + size;
            h = ROLL(h, o[0], i[0]);
            if (is_cut(h, dc)) { size += 1; goto cut; }
            h = ROLL(h, o[1], i[1]);
            if (is_cut(h, dc)) { size += 2; goto cut; }
            h = ROLL(h, o[2], i[2]);
            if (is_cut(h, dc)) { size += 3; goto cut; }
            h = ROLL(h, o[3], i[3]);
            size += 4;
            if (is_cut(h, dc))
                goto cut;
        }
        while (size < end) {
            h = ROLL(h, p[size - CA_CHUNKER_WINDOW], p[size]);
            size++;
            if (is_cut(h, dc))
                goto cut;
        }
        if (size < max)
            goto need_more;      /* end == avail: the rest of this chunk is not here yet */
    cut:
        start += size;
        cuts[n++] = start;
        size = 0;
    }
need_more:
    c->hash = h;
    c->scanned = size;
    return n;
}

uint64_t ca_chunker_skip_zeros(ca_chunker *c, uint64_t done, uint64_t zeros,
                               uint64_t *first, uint64_t *step) {
    const uint64_t end = done + zeros;
    uint64_t at, every;
    if (!c->fixed && is_cut(zero_hash, c->divisible_c)) {
        /* Every length tested from here on is a cut: the next one ends this
         * chunk, and each later chunk ends at its first tested length. */
        at = done >= c->first_test ? done + 1 : c->first_test;
        every = c->first_test;
    } else {
        at = every = c->max;  /* no window of zeros cuts: only the maximum does */
    }
    const uint64_t count = end >= at ? (end - at) / every + 1 : 0;
    const uint64_t rest = count ? end - (at + (count - 1) * every) : end;
    if (!c->fixed && rest >= c->first_test) {
        c->hash = zero_hash;  /* the window ending at `rest` holds zeros only */
        c->scanned = rest;
    } else {
        c->scanned = 0;
    }
    *first = at;
    *step = every;
    return count;
}
