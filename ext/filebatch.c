/* The common case of untar's regular files, one batch per call without the GIL.

   A worker thread of untar (desync_decl/archive/write_queue.py) that made each file
   in Python released and took back the GIL around each of its five system calls,
   and waited for it behind the decoding thread each time: two threads wrote no
   faster than one. Here a whole batch of files is made in one call. Each is made as
   disk_writer.Writer.file makes it: unnamed (O_TMPFILE) in the directory fd, filled
   (from the archive file by offset, or from the batch), its owner, mode and times
   set on the open fd, then linked in under its final name, which must not exist
   (linkat never replaces and never follows a symlink there). A file that fails is
   left to the caller (nothing of it remains: an unnamed file vanishes when closed),
   which makes it again the careful way and reports its error. */
#define _GNU_SOURCE
#include "filebatch.h"

#include "catar_leaves.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int fill(int fd, int src_fd, int64_t offset, uint64_t size, const uint8_t *data)
{
    while (size) {
        ssize_t n;
        if (data) {
            n = write(fd, data, size);
        } else {
            off_t off = (off_t)offset;
            n = sendfile(fd, src_fd, &off, size > (1u << 30) ? (1u << 30) : size);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0) { /* the archive ends inside the payload: the caller says so */
            errno = 0;
            return -1;
        }
        size -= (uint64_t)n;
        offset += n;
        if (data)
            data += n;
    }
    return 0;
}

/* Whether linkat(fd, "", ..., AT_EMPTY_PATH) is allowed here (root, or Linux >= 6.10):
   cleared at its first ENOENT, the kernel's answer when it is not. It is the cheaper
   way: the /proc/self/fd/N link is a path walk through procfs for every file (linkat
   alone 22 -> 18.5 us a file on ext4, measured). Racing threads at worst both try the
   refused call once. */
static int empty_path_links = 1; /* read and cleared atomically (worker threads) */

/* Names the unnamed file ``fd`` ``name`` in ``dir_fd``; never replaces. */
static int link_unnamed(int fd, int dir_fd, const char *name)
{
    if (__atomic_load_n(&empty_path_links, __ATOMIC_RELAXED)) {
        if (linkat(fd, "", dir_fd, name, AT_EMPTY_PATH) == 0)
            return 0;
        if (errno != ENOENT)
            return -1;
        __atomic_store_n(&empty_path_links, 0, __ATOMIC_RELAXED);
    }
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    return linkat(AT_FDCWD, proc, dir_fd, name, AT_SYMLINK_FOLLOW);
}

static int one_file(const struct ca_file_job *job, const char *name, const uint8_t *data,
                    int src_fd)
{
    /* made with its final mode where the kernel gives exactly that, else 0600 and
       fchmod'ed, as disk_writer.Writer.file decides */
    mode_t made = (job->what & CA_FILE_CHMOD) ? 0600 : (mode_t)(job->mode & 07777);
    int fd = openat(job->dir_fd, ".", O_WRONLY | O_TMPFILE | O_CLOEXEC, made);
    if (fd < 0)
        return -1;
    int failed = fill(fd, src_fd, job->src_offset, job->size, data) ||
                 ((job->what & CA_FILE_CHOWN) && fchown(fd, job->uid, job->gid)) ||
                 ((job->what & CA_FILE_CHMOD) && fchmod(fd, (mode_t)(job->mode & 07777)));
    if (!failed && (job->what & CA_FILE_TIMES)) {
        struct timespec times[2];
        times[0].tv_sec = job->mtime_ns / 1000000000;
        times[0].tv_nsec = job->mtime_ns % 1000000000;
        times[1] = times[0];
        failed = futimens(fd, times) != 0;
    }
    if (!failed)
        failed = link_unnamed(fd, job->dir_fd, name) != 0;
    int saved = errno;
    close(fd);
    errno = saved;
    return failed ? -1 : 0;
}

/* Makes the files of the batch from the one at index ``start`` (at the batch's
   start, the caller having skipped the records before it) on; returns the index of
   the first that failed, with its errno in *error (0: the archive ended inside its
   payload; EINVAL: a name that is not one path component), or n when all were made
   (or with *error EINVAL when the batch is not one FileBatch made: nothing more). */
size_t ca_write_files(const uint8_t *batch, size_t batch_len, size_t n, int src_fd,
                      size_t start, int *error)
{
    size_t at = 0;
    *error = 0;
    for (size_t i = 0; i < n; i++) {
        struct ca_file_job job;
        if (at + sizeof job > batch_len) { /* not a batch FileBatch made: nothing more */
            *error = EINVAL;
            return n;
        }
        memcpy(&job, batch + at, sizeof job);
        const char *name = (const char *)batch + at + sizeof job;
        const uint8_t *data =
            (job.what & CA_FILE_INLINE) ? batch + at + sizeof job + job.name_len + 1 : NULL;
        size_t len = sizeof job + job.name_len + 1 + (data ? job.size : 0);
        len = (len + 7) & ~(size_t)7;
        if (job.name_len > batch_len || (data && job.size > batch_len) || at + len > batch_len) {
            *error = EINVAL;
            return n;
        }
        at += len;
        if (i < start)
            continue;
        /* one path component, as the caller checked: never a path to somewhere else */
        if (name[job.name_len] != 0 || job.name_len == 0 || memchr(name, '/', job.name_len) ||
            memchr(name, 0, job.name_len)) {
            *error = EINVAL;
            return i;
        }
        if (one_file(&job, name, data, src_fd) != 0) {
            *error = errno;
            return i;
        }
    }
    return n;
}

#define MAX_ID 0xFFFFFFFEu
#define MAX_TIME_NS 0x7FFFFFFFFFFFFFFFull
#define S_FMT 0170000u
#define S_REG 0100000u

/* A symlink to target made under a temporary name in dir_fd, given its owner and
   mtime, and renamed to name, as disk_writer.Writer.other makes one; nothing of it
   is left behind when a step fails. */
static int one_symlink(const struct ca_leaf_policy *p, const struct ca_leaf *leaf,
                       const char *name, const char *target, const char *temp_prefix,
                       uint64_t key, int chown_it)
{
    char tmp[128];
    snprintf(tmp, sizeof tmp, "%s%llu@", temp_prefix, (unsigned long long)key);
    if (symlinkat(target, p->dir_fd, tmp) != 0)
        return -1;
    int failed = chown_it && fchownat(p->dir_fd, tmp, (uid_t)leaf->uid, (gid_t)leaf->gid,
                                      AT_SYMLINK_NOFOLLOW) != 0;
    if (!failed && p->times) {
        struct timespec times[2];
        times[0].tv_sec = (time_t)(leaf->mtime / 1000000000);
        times[0].tv_nsec = (long)(leaf->mtime % 1000000000);
        times[1] = times[0];
        failed = utimensat(p->dir_fd, tmp, times, AT_SYMLINK_NOFOLLOW) != 0;
    }
    if (!failed)
        failed = renameat(p->dir_fd, tmp, p->dir_fd, name) != 0;
    if (failed) {
        int saved = errno;
        unlinkat(p->dir_fd, tmp, 0);
        errno = saved;
        return -1;
    }
    return 0;
}

/* Makes leaves[start..n) (n packed struct ca_leaf, catar_leaves.h) in p->dir_fd: the
   regular files as ca_write_files makes a batch's, their contents from the window,
   each one's mode and steps chosen as disk_writer.Writer._plain does; the symlinks as
   one_symlink, under temporary names temp_prefix + starts[i] + "@" (the leaf's
   archive offset: unique in the extraction). Returns the index of the first leaf
   not made: with *error -1 one the Python writer must make (chattr flags, an id or
   time out of C's range), else its errno; n when all were. made[0] counts the
   entries made, made[1] the file bytes written. */
size_t ca_write_leaves(const uint8_t *leaves, size_t n, const uint8_t *window,
                       const struct ca_leaf_policy *p, const char *temp_prefix,
                       const uint64_t *starts, size_t start, int *error, uint64_t *made)
{
    *error = 0;
    for (size_t i = start; i < n; i++) {
        struct ca_leaf one; /* leaves: packed struct ca_leaf, as decoded */
        memcpy(&one, leaves + i * sizeof one, sizeof one);
        const struct ca_leaf *leaf = &one;
        int chown_it = p->chown && (leaf->uid != p->new_uid || leaf->gid != p->new_gid);
        int file = (leaf->mode & S_FMT) == S_REG;
        if ((leaf->flags & p->python_flags) || leaf->mtime > MAX_TIME_NS ||
            (chown_it && (leaf->uid > MAX_ID || leaf->gid > MAX_ID))) {
            *error = -1;
            return i;
        }
        const char *name = (const char *)window + leaf->name_at;
        /* one path component, as the decoder checked: never a path to somewhere else */
        if (name[leaf->name_len] != 0 || leaf->name_len == 0 ||
            memchr(name, '/', leaf->name_len) || memchr(name, 0, leaf->name_len)) {
            *error = EINVAL;
            return i;
        }
        if (!file) {
            const char *target = (const char *)window + leaf->data_at; /* NUL-terminated */
            if (one_symlink(p, leaf, name, target, temp_prefix, starts[i], chown_it) != 0) {
                *error = errno;
                return i;
            }
            made[0] += 1;
            continue;
        }
        uint32_t mode;
        if (p->archive_modes) {
            mode = (uint32_t)(leaf->mode & 07777);
        } else {
            mode = 0666 & ~p->umask;
            if (p->read_only && !(leaf->mode & 0222))
                mode &= ~0222u;
        }
        struct ca_file_job job = {
            .dir_fd = p->dir_fd,
            .mode = mode,
            .uid = (uint32_t)leaf->uid,
            .gid = (uint32_t)leaf->gid,
            .mtime_ns = (int64_t)leaf->mtime,
            .src_offset = 0,
            .size = leaf->size,
            .what = ((mode & (07000 | p->umask)) || p->always_chmod ? CA_FILE_CHMOD : 0) |
                    (chown_it ? CA_FILE_CHOWN : 0) | (p->times ? CA_FILE_TIMES : 0),
            .name_len = leaf->name_len,
        };
        if (one_file(&job, name, window + leaf->data_at, -1) != 0) {
            *error = errno;
            return i;
        }
        made[0] += 1;
        made[1] += leaf->size;
    }
    return n;
}
