#ifndef DESYNC_ENTRYBATCH_H
#define DESYNC_ENTRYBATCH_H

#include <stddef.h>
#include <stdint.h>

/* What the archive stores and leaves out, for the entries encoded here. */
struct ca_entry_config {
    uint64_t feature_flags; /* the ENTRY records' feature flags */
    int xattrs;             /* with-xattrs: a user.* or trusted.* attribute goes to Python */
    int nodump;             /* exclude-nodump: a file marked chattr +d goes to Python */
    int symlinks;           /* with-symlinks */
    int exclude;            /* exclude_dev/exclude_ino name a file left out (the output) */
    uint64_t exclude_dev;
    uint64_t exclude_ino;
};

#define CA_ENTRY_ENCODED 0 /* encoded: head bytes, and a payload fd for a regular file */
#define CA_ENTRY_PYTHON 1  /* anything else: the caller reads it the careful way */
#define CA_KIND_FILE 1     /* what the directory listing says */
#define CA_KIND_DIR 2
#define CA_KIND_OTHER 0
#define CA_ENTRY_HEAD_MAX (16 + 256 + 64 + 16 + 4097) /* FILENAME, ENTRY, SYMLINK at most */

size_t ca_entry_batch(int dir_fd, const uint8_t *names, const uint32_t *ends,
                      const uint8_t *kinds, size_t n, const struct ca_entry_config *config,
                      uint8_t *out, size_t out_size, int64_t *results);

/* The entries of a directory but . and .., sorted by name (bytes): each name and a NUL
 * in `out`, its CA_KIND_* in `kinds`. Returns how many; -1 when `out` or `kinds` is
 * too small (what they need in *need_bytes, *need_count); -2 when the directory
 * cannot be read (errno). */
long ca_list_dir(int dir_fd, uint8_t *out, size_t out_size, uint8_t *kinds, size_t kinds_size,
                 size_t *need_bytes, size_t *need_count);

#endif
