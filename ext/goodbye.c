#include "goodbye.h"

#include <stdlib.h>

typedef struct {
    uint64_t hash;
    uint64_t index; /* position among the children: starts increase with it */
} key;

static int by_hash_then_position(const void *a, const void *b)
{
    const key *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->index < y->index ? -1 : (x->index > y->index);
}

int ca_goodbye_items(const uint64_t *hashes, const uint64_t *starts, const uint64_t *ends,
                     size_t n, uint64_t at, uint64_t *items)
{
    if (n == 0)
        return 0;
    key *keys = malloc(n * sizeof *keys);
    if (!keys)
        return -1;
    for (size_t i = 0; i < n; i++) {
        keys[i].hash = hashes[i];
        keys[i].index = i;
    }
    qsort(keys, n, sizeof *keys, by_hash_then_position);

    /* In-order walk of the implicit tree: the s-th slot visited holds the s-th
     * smallest key. The tree is at most 64 levels deep for any size_t n. */
    size_t stack[64], depth = 0, k = 0, s = 0;
    while (depth > 0 || k < n) {
        while (k < n) {
            stack[depth++] = k;
            k = 2 * k + 1;
        }
        k = stack[--depth];
        size_t i = keys[s++].index;
        items[3 * k] = at - starts[i];
        items[3 * k + 1] = ends[i] - starts[i];
        items[3 * k + 2] = hashes[i];
        k = 2 * k + 2;
    }
    free(keys);
    return 0;
}

static int by_values(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    for (int j = 0; j < 3; j++)
        if (x[j] != y[j])
            return x[j] < y[j] ? -1 : 1;
    return 0;
}

void ca_goodbye_sort_items(uint64_t *items, size_t n)
{
    qsort(items, n, 3 * sizeof *items, by_values);
}
