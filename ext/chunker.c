/* casync-compatible content-defined chunker; see chunker.h for the contract
 * and casync's src/cachunker.c (ca_chunker_scan) for the exact cut rule. */
#include "chunker.h"
#include "buzhash_table.h"

static inline uint32_t rol32(uint32_t x, unsigned n) {
    n &= 31;
    return n ? (x << n) | (x >> (32 - n)) : x;
}

/* buzhash_table rotated by WINDOW (= 16 mod 32): the contribution of the byte
 * leaving the window. Built once; the values never change. */
static uint32_t table_out[256];
static int table_out_ready;

static void init_table_out(void) {
    if (table_out_ready)
        return;
    for (int i = 0; i < 256; i++)
        table_out[i] = rol32(buzhash_table[i], CA_CHUNKER_WINDOW);
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
    /* Lemire's fastmod: exact h % d for any 32-bit h and d. */
    c->fastmod_m = UINT64_MAX / d + 1;
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

static inline uint64_t fastmod(uint32_t h, uint64_t m, uint64_t d) {
    uint64_t low = m * h;
    return (uint64_t)(((__uint128_t)low * d) >> 64);
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

size_t ca_chunker_scan(ca_chunker *c, const uint8_t *buf, size_t len,
                       uint64_t *cuts, size_t max_cuts) {
    if (c->fixed)
        return scan_fixed(c, len, cuts, max_cuts);

    const uint64_t max = c->max, d = c->discriminator, m = c->fastmod_m;
    const uint64_t target = d - 1, first = c->first_test;
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
        const uint64_t limit = avail < max ? avail : max;
        for (;;) {
            if (fastmod(h, m, d) == target || size >= max)
                goto cut;
            if (size >= limit)
                goto need_more;  /* size < max here, so limit == avail */
            h = rol32(h, 1) ^ table_out[p[size - CA_CHUNKER_WINDOW]] ^ buzhash_table[p[size]];
            size++;
        }
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
