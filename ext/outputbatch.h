#ifndef DESYNC_OUTPUTBATCH_H
#define DESYNC_OUTPUTBATCH_H

#include <stddef.h>
#include <stdint.h>

/* Where a batch stopped (see outputbatch.c). */
#define CA_OUT_OK 0
#define CA_OUT_WRITE_FAILED 1   /* writing to the output failed: errno in *error */
#define CA_OUT_READ_FAILED 2    /* reading segment *failed failed: errno in *error */
#define CA_OUT_CHANGED 3        /* segment *failed's file is not `len` bytes long any more */
#define CA_OUT_MAX_IOV 512      /* pieces written by one writev */
#define CA_OUT_IN_KERNEL 65536  /* files from this size copied by copy_file_range */

int ca_output_batch(int out, const uint8_t *heads, const int64_t *segments, size_t n,
                    uint8_t *buffer, size_t buffer_size, size_t *failed, int *error);

/* The segments' bytes gathered into `into`, heads and whole files in order, for a reader
 * that wants them in memory (tar -i's chunker): room must exceed their total by at
 * least one byte (a file that grew shows in that byte). 0, or CA_OUT_READ_FAILED /
 * CA_OUT_CHANGED for segment *failed with errno in *error. Every file descriptor of
 * the segments is closed, read or not, whatever happens. */
int ca_gather_batch(uint8_t *into, size_t room, const uint8_t *heads, const int64_t *segments,
                    size_t n, size_t *failed, int *error);

#endif
