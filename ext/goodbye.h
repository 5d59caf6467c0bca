/* The item part of a catar GOODBYE table, built and compared in C.
 *
 * A directory of a million entries has a million items: as Python tuples and
 * ints, sorting and laying them out took about 300 MB; here it is the 24 bytes
 * an item occupies plus 16 bytes of scratch each, freed before returning.
 *
 * Contract: the caller owns every buffer; the functions keep nothing after
 * returning, so they are safe to call with the GIL released. Items are three
 * native uint64 values (offset back from the GOODBYE record to the
 * child's FILENAME, size of FILENAME + serialization, SipHash of the name).
 */
#ifndef DESYNC_DECL_GOODBYE_H
#define DESYNC_DECL_GOODBYE_H

#include <stddef.h>
#include <stdint.h>

/* Lay out the items of n children (child i: name hash hashes[i], FILENAME at
 * starts[i], serialization ending at ends[i]; starts strictly increasing) for a
 * GOODBYE record at offset at: sorted by (hash, position), in the Eytzinger
 * order of an implicit binary search tree (children of slot k at 2k+1, 2k+2),
 * 3 * n values into items. Returns 0, or -1 when memory ran out. */
int ca_goodbye_items(const uint64_t *hashes, const uint64_t *starts, const uint64_t *ends,
                     size_t n, uint64_t at, uint64_t *items);

/* Sort n items (3 values each) in place by (offset, size, hash): two tables hold
 * the same items exactly when their sorted forms are equal. */
void ca_goodbye_sort_items(uint64_t *items, size_t n);

#endif
