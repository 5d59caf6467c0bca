/* New regular files written in a batch, without the GIL (see filebatch.c). */
#ifndef CA_FILEBATCH_H
#define CA_FILEBATCH_H

#include <stddef.h>
#include <stdint.h>

#define CA_FILE_CHOWN 1u  /* fchown to uid, gid */
#define CA_FILE_CHMOD 2u  /* made 0600, then fchmod to mode (else made with mode) */
#define CA_FILE_TIMES 4u  /* atime and mtime set to mtime_ns */
#define CA_FILE_INLINE 8u /* the contents follow the name in the batch, else src_offset */

/* One file of a batch; its name (name_len bytes, NUL-terminated) follows, then its
   contents when CA_FILE_INLINE, then padding to 8 bytes. */
struct ca_file_job {
    int32_t dir_fd;
    uint32_t mode;
    uint32_t uid;
    uint32_t gid;
    int64_t mtime_ns;
    int64_t src_offset;
    uint64_t size;
    uint32_t what;
    uint32_t name_len;
};

/* How untar makes the plain files of a run of decoded leaves (catar_leaves.h) in one
   new directory: disk_writer.Writer._plain's choices, fixed for the directory. */
struct ca_leaf_policy {
    int32_t dir_fd;
    uint32_t umask;
    uint32_t archive_modes; /* the mode is the archive's, else 0666 & ~umask */
    uint32_t read_only;     /* with archive_modes 0: no write bits where the archive has none */
    uint32_t always_chmod;  /* the directory has a default ACL */
    uint32_t chown;         /* owners restored (as root, the archive has them) */
    uint32_t new_uid;       /* the owner a new file gets without a chown */
    uint32_t new_gid;
    uint32_t times;         /* mtimes restored */
    uint32_t pad;
    uint64_t python_flags;  /* ENTRY flags (chattr) only the Python writer sets */
};

size_t ca_write_leaves(const uint8_t *leaves, size_t n, const uint8_t *window,
                       const struct ca_leaf_policy *policy, const char *temp_prefix,
                       const uint64_t *starts, size_t start, int *error, uint64_t *made);

size_t ca_write_files(const uint8_t *batch, size_t batch_len, size_t n, int src_fd,
                      size_t start, int *error);

#endif
