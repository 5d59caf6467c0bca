/* Where each chunk id of an index first occurs, in one pass and little memory.
 *
 * Planning an extraction needs, for every chunk, whether its id occurred earlier
 * (then it is copied from the target instead of fetched again). A Python dict of
 * every id cost ~150 bytes per chunk (a 4 GiB random image: 10 MiB); this costs the
 * caller 5 bytes per chunk and a transient table of 8.
 *
 * Contract: reads the caller's buffers, writes only its outputs, keeps nothing after
 * it returns: safe to call with the GIL released. The table's hash is SipHash-2-4
 * under the caller's (random) key, so an index crafted to collide cannot make the
 * pass quadratic.
 */
#ifndef DESYNC_DECL_REPEATS_H
#define DESYNC_DECL_REPEATS_H

#include <stddef.h>
#include <stdint.h>

/* ids: n ids of id_size bytes end to end. For each j, first[j] is the position of
 * the first id equal to ids[j] (j itself when new); repeated[j] is 1 when ids[j]
 * occurs more than once, else 0. Returns 0, or -1 when the table cannot be
 * allocated. */
int ca_first_positions(const uint8_t *key, const uint8_t *ids, size_t id_size, uint32_t n,
                       uint32_t *first, uint8_t *repeated);

#endif
