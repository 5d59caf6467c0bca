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

size_t ca_write_files(const uint8_t *batch, size_t batch_len, size_t n, int src_fd,
                      size_t start, int *error);

#endif
