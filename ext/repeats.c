#include "repeats.h"

#include <stdlib.h>
#include <string.h>

#include "siphash.h"

int ca_first_positions(const uint8_t *key, const uint8_t *ids, size_t id_size, uint32_t n,
                       uint32_t *first, uint8_t *repeated) {
    size_t capacity = 16;
    while (capacity < (size_t)n * 2) capacity <<= 1; /* at most half full */
    uint32_t *slots = calloc(capacity, sizeof *slots); /* 0: empty; else position + 1 */
    if (slots == NULL) return -1;
    size_t mask = capacity - 1;
    memset(repeated, 0, n);
    for (uint32_t j = 0; j < n; j++) {
        const uint8_t *id = ids + (size_t)j * id_size;
        size_t at = (size_t)ca_siphash24(key, id, id_size) & mask;
        for (;;) {
            uint32_t slot = slots[at];
            if (slot == 0) {
                slots[at] = j + 1;
                first[j] = j;
                break;
            }
            if (memcmp(ids + (size_t)(slot - 1) * id_size, id, id_size) == 0) {
                first[j] = slot - 1;
                repeated[j] = repeated[slot - 1] = 1;
                break;
            }
            at = (at + 1) & mask;
        }
    }
    free(slots);
    return 0;
}
