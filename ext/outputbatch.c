/* A run of an output stream written in one call, without the GIL: byte runs the
 * caller packed into `heads` and whole files' contents, in order.
 *
 * `segments` holds n pairs (fd, len): fd < 0 takes the next `len` bytes of `heads`;
 * fd >= 0 is an open file whose contents, exactly `len` bytes, come next. Files are
 * read with pread from offset 0 into `buffer` and gathered with the byte runs into
 * one writev (up to IOV_MAX pieces); a file larger than the buffer is copied through
 * it. Exactly `len` bytes or CA_OUT_CHANGED: each read asks one byte more than is
 * left, so a file that grew shows without a read of its own, one that shrank by its
 * early end. Every file descriptor of the batch is closed, read or not, whatever
 * happens. */
#define _GNU_SOURCE
#include "outputbatch.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

static int write_all(int out, struct iovec *iov, int count)
{
    while (count > 0) {
        ssize_t n = writev(out, iov, count);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        while (count > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            count--;
        }
        if (count > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* pread with EINTR retried */
static ssize_t read_at(int fd, uint8_t *into, size_t want, off_t offset)
{
    ssize_t n;
    do {
        n = pread(fd, into, want, offset);
    } while (n < 0 && errno == EINTR);
    return n;
}

/* The whole file into `into` (room > len). 0, or CA_OUT_READ_FAILED / CA_OUT_CHANGED. */
static int read_whole(int fd, uint8_t *into, size_t room, int64_t len)
{
    int64_t left = len, filled = 0;
    for (;;) {
        size_t want = (size_t)(room - (size_t)filled);
        if ((int64_t)want > left + 1)
            want = (size_t)(left + 1);
        ssize_t n = read_at(fd, into + filled, want, (off_t)filled);
        if (n < 0)
            return CA_OUT_READ_FAILED;
        if (n > left)
            return CA_OUT_CHANGED;
        filled += n;
        left -= n;
        if (n == 0 || (left == 0 && (size_t)n < want))
            return left ? CA_OUT_CHANGED : 0;
    }
}

/* The file copied to `out` through `buffer`. 0, or a CA_OUT_* code. */
static int copy_through(int out, int fd, uint8_t *buffer, size_t size, int64_t len)
{
    int64_t left = len, offset = 0;
    for (;;) {
        size_t want = size;
        if ((int64_t)want > left + 1)
            want = (size_t)(left + 1);
        ssize_t n = read_at(fd, buffer, want, (off_t)offset);
        if (n < 0)
            return CA_OUT_READ_FAILED;
        if (n > left)
            return CA_OUT_CHANGED;
        struct iovec one = {buffer, (size_t)n};
        if (n > 0 && write_all(out, &one, 1) < 0)
            return CA_OUT_WRITE_FAILED;
        offset += n;
        left -= n;
        if (n == 0 || (left == 0 && (size_t)n < want))
            return left ? CA_OUT_CHANGED : 0;
    }
}

/* The file copied to `out` in the kernel (copy_file_range: one copy, page cache to page
 * cache, where pread and write make two through `buffer`). 0, a CA_OUT_* code, or -1
 * when the kernel cannot copy between these files (nothing copied then). */
static int copy_in_kernel(int out, int fd, int64_t len)
{
    loff_t in_at = 0;
    int64_t left = len;
    while (left > 0) {
        ssize_t n = copy_file_range(fd, &in_at, out, NULL, (size_t)left, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (in_at == 0)
                return -1; /* the careful way says which side failed */
            return errno == ENOSPC || errno == EDQUOT || errno == EFBIG || errno == EPIPE ||
                           errno == EBADF
                       ? CA_OUT_WRITE_FAILED
                       : CA_OUT_READ_FAILED;
        }
        if (n == 0)
            return CA_OUT_CHANGED; /* shrank */
        left -= n;
    }
    uint8_t more;
    ssize_t n = read_at(fd, &more, 1, (off_t)len); /* grew? */
    if (n < 0)
        return CA_OUT_READ_FAILED;
    return n ? CA_OUT_CHANGED : 0;
}

static void close_from(const int64_t *segments, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++)
        if (segments[2 * i] >= 0)
            close((int)segments[2 * i]);
}

int ca_output_batch(int out, const uint8_t *heads, const int64_t *segments, size_t n,
                    uint8_t *buffer, size_t buffer_size, size_t *failed, int *error)
{
    struct iovec iov[CA_OUT_MAX_IOV];
    int count = 0;
    size_t used = 0; /* bytes of buffer holding gathered files */
    size_t i;
    int rc = CA_OUT_OK;
    for (i = 0; i < n; i++) {
        int64_t fd = segments[2 * i], len = segments[2 * i + 1];
        if (fd < 0) {
            if (len > 0) {
                iov[count].iov_base = (void *)heads;
                iov[count].iov_len = (size_t)len;
                count++;
                heads += len;
            }
        } else {
            if ((uint64_t)len >= buffer_size - used || len >= CA_OUT_IN_KERNEL) {
                /* no room, or copied in the kernel: write what is gathered first */
                if (write_all(out, iov, count) < 0) {
                    rc = CA_OUT_WRITE_FAILED;
                    *error = errno;
                    close((int)fd);
                    break;
                }
                count = 0;
                used = 0;
            }
            rc = len >= CA_OUT_IN_KERNEL ? copy_in_kernel(out, (int)fd, len) : -1;
            if (rc >= 0) {
                /* copied in the kernel, or failed */
            } else if ((uint64_t)len < buffer_size) {
                rc = read_whole((int)fd, buffer + used, buffer_size - used, len);
                if (rc == 0 && len > 0) {
                    iov[count].iov_base = buffer + used;
                    iov[count].iov_len = (size_t)len;
                    count++;
                    used += (size_t)len;
                }
            } else {
                rc = copy_through(out, (int)fd, buffer, buffer_size, len);
            }
            if (rc != CA_OUT_OK)
                *error = errno;
            close((int)fd);
            if (rc != CA_OUT_OK)
                break;
        }
        if (count == CA_OUT_MAX_IOV) {
            if (write_all(out, iov, count) < 0) {
                rc = CA_OUT_WRITE_FAILED;
                *error = errno;
                break;
            }
            count = 0;
            used = 0;
        }
    }
    if (rc == CA_OUT_OK && write_all(out, iov, count) < 0) {
        rc = CA_OUT_WRITE_FAILED;
        *error = errno;
    }
    if (rc != CA_OUT_OK) {
        *failed = i;
        close_from(segments, i + 1, n);
    }
    return rc;
}

int ca_gather_batch(uint8_t *into, size_t room, const uint8_t *heads, const int64_t *segments,
                    size_t n, size_t *failed, int *error)
{
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t fd = segments[2 * i], len = segments[2 * i + 1];
        int rc = CA_OUT_OK;
        if (len < 0 || (uint64_t)len >= room - used) { /* `into` sized wrong: the caller's bug */
            *failed = i;
            *error = EINVAL;
            close_from(segments, i, n);
            return CA_OUT_READ_FAILED;
        }
        if (fd < 0) {
            memcpy(into + used, heads, (size_t)len);
            heads += len;
        } else {
            rc = read_whole((int)fd, into + used, room - used, len);
            if (rc != CA_OUT_OK)
                *error = errno;
            close((int)fd);
        }
        if (rc != CA_OUT_OK) {
            *failed = i;
            close_from(segments, i + 1, n);
            return rc;
        }
        used += (size_t)len;
    }
    return CA_OUT_OK;
}
