/* Runs of a directory's leaf children (files, symlinks) decoded from a window of a
   catar stream in one call (catar_leaves.c), and written in one (filebatch.c). */
#ifndef CA_CATAR_LEAVES_H
#define CA_CATAR_LEAVES_H

#include <stddef.h>
#include <stdint.h>

/* What the archive's first ENTRY allows a leaf's ENTRY to hold
   (formats/catar/feature_gates.EntryRules, worked out once per archive). */
struct ca_leaf_rules {
    uint64_t feature_flags; /* every ENTRY's, as the first one's */
    uint64_t entry_flags;   /* ENTRY.flags bits allowed */
    uint64_t max_id;        /* largest uid/gid (0xFFFF is never allowed) */
    uint64_t time_unit;     /* mtime must be a multiple (0: mtime must be 0) */
    uint32_t files;         /* regular files allowed */
    uint32_t symlinks;      /* symlinks allowed */
    uint32_t any_mode;      /* permissions stored: any mode bits */
    uint32_t read_only;     /* without: 0666 only; with read-only also 0444 */
};

/* One decoded leaf: its ENTRY's fields, and where its name and contents (a file's
   payload, a symlink's target without its NUL) are in the window. */
struct ca_leaf {
    uint64_t mode;
    uint64_t flags;
    uint64_t uid;
    uint64_t gid;
    uint64_t mtime;
    uint64_t size; /* payload bytes, or the target's length */
    uint32_t name_at;
    uint32_t name_len;
    uint64_t data_at;
};

/* Decodes leaf children of one directory from win[0..len), which starts right after
   a FILENAME header (body size name_size, at archive offset name_at); see
   catar_leaves.c. */
size_t ca_decode_leaves(const struct ca_leaf_rules *rules, const uint8_t *win, size_t len,
                        uint64_t name_size, uint64_t name_at, const uint8_t *last,
                        size_t last_len, size_t max, struct ca_leaf *out, uint64_t *hashes,
                        uint64_t *starts, uint64_t *ends, uint64_t *next);

#endif
