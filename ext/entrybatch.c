/* The plain children of a directory read and encoded in one call, without the GIL.
 *
 * For each name (in the caller's order), a regular file or a symlink whose metadata
 * the archive's flags store in the ENTRY record alone is opened (files) or read
 * (symlink targets), and its FILENAME, ENTRY and PAYLOAD header or SYMLINK records
 * are written to `out`, exactly as the Python encoder writes them
 * (formats/catar/entry.py, records.py) for flags with 32-bit ids, nanosecond times
 * and permissions, and no chattr, ACL, SELinux, fcaps or quota records (the caller
 * checks the flags). Anything else -- a directory, a device, a file with a stored
 * extended attribute or chattr +d, an id that does not fit, an error of any kind --
 * is left to the caller (CA_ENTRY_PYTHON), which then redoes it and says why.
 *
 * results: 4 int64 per name: status, payload fd (-1 when none), payload size, end of
 * its head bytes in `out`. The batch stops before a directory (returned as the last
 * entry, CA_ENTRY_PYTHON) so that no file stays open while the caller descends into
 * it, and when `out` may not hold another entry. Returns the names done. */
#define _GNU_SOURCE
#include "entrybatch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define T_ENTRY 0x1396FABCEA5BBB51ULL
#define T_SYMLINK 0x664A6FB6830E0D6CULL
#define T_PAYLOAD 0x8B9E1D93D6DCFFC9ULL
#define T_FILENAME 0x6DBB6EBCB3161F0BULL
#define NAME_MAX_BYTES 255
#define TARGET_MAX 4096
#define MAX_ID 0xFFFFFFFEULL
#define FS_IOC_GETFLAGS_ 0x80086601UL
#define FS_NODUMP_FL_ 0x40
#define O_FILE (O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

static uint8_t *header(uint8_t *p, uint64_t size, uint64_t type)
{
    return put64(put64(p, size), type);
}

static int id_allowed(uint64_t id)
{
    return id <= MAX_ID && id != 0xFFFF;
}

/* 1 when the listed attributes hold one the archive stores (user.*, trusted.*) or
 * cannot be listed; 0 when none does */
static int has_stored_xattr(const char *list, ssize_t size)
{
    if (size < 0)
        return errno != ENOTSUP && errno != EOPNOTSUPP;
    for (ssize_t at = 0; at < size;) {
        const char *name = list + at;
        if (strncmp(name, "user.", 5) == 0 || strncmp(name, "trusted.", 8) == 0)
            return 1;
        at += (ssize_t)strlen(name) + 1;
    }
    return 0;
}

static uint8_t *entry(uint8_t *p, const struct ca_entry_config *c, uint64_t mode,
                      const struct stat *st)
{
    int64_t mtime = (int64_t)st->st_mtim.tv_sec * 1000000000LL + st->st_mtim.tv_nsec;
    p = header(p, 64, T_ENTRY);
    p = put64(p, c->feature_flags);
    p = put64(p, mode);
    p = put64(p, 0); /* chattr flags: none stored */
    p = put64(p, st->st_uid);
    p = put64(p, st->st_gid);
    return put64(p, (uint64_t)(mtime < 0 ? 0 : mtime));
}

static int excluded(const struct ca_entry_config *c, const struct stat *st)
{
    return !id_allowed(st->st_uid) || !id_allowed(st->st_gid) ||
           (c->exclude && (uint64_t)st->st_dev == c->exclude_dev &&
            (uint64_t)st->st_ino == c->exclude_ino);
}

/* A regular file: its fd (open) in *fd, head written at p; NULL to leave it to Python. */
static uint8_t *file(int dir_fd, const char *name, size_t len, const struct ca_entry_config *c,
                     uint8_t *p, int *fd, int64_t *size, char *xattrs, size_t xattrs_size)
{
    struct stat st;
    int f = openat(dir_fd, name, O_FILE);
    if (f < 0)
        return NULL;
    if (fstat(f, &st) != 0 || !S_ISREG(st.st_mode) || excluded(c, &st))
        goto python;
    if (c->nodump) {
        int flags = 0;
        if (ioctl(f, FS_IOC_GETFLAGS_, &flags) != 0) {
            if (errno != ENOTTY && errno != EOPNOTSUPP && errno != EINVAL && errno != ENOSYS)
                goto python;
            flags = 0;
        }
        if (flags & FS_NODUMP_FL_)
            goto python;
    }
    if (c->xattrs && has_stored_xattr(xattrs, flistxattr(f, xattrs, xattrs_size)))
        goto python;
    p = header(p, 16 + len + 1, T_FILENAME);
    memcpy(p, name, len + 1);
    p = entry(p + len + 1, c, S_IFREG | (st.st_mode & 07777), &st);
    p = header(p, 16 + (uint64_t)st.st_size, T_PAYLOAD);
    *fd = f;
    *size = st.st_size;
    return p;
python:
    close(f);
    return NULL;
}

static uint8_t *symlink_(int dir_fd, const char *name, size_t len,
                         const struct ca_entry_config *c, uint8_t *p, char *xattrs,
                         size_t xattrs_size)
{
    struct stat st;
    char target[TARGET_MAX + 2];
    if (!c->symlinks || fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISLNK(st.st_mode) || excluded(c, &st))
        return NULL;
    ssize_t n = readlinkat(dir_fd, name, target, sizeof target);
    if (n <= 0 || n > TARGET_MAX)
        return NULL;
    if (c->xattrs) {
        char path[64 + NAME_MAX_BYTES];
        snprintf(path, sizeof path, "/proc/self/fd/%d/%s", dir_fd, name);
        if (has_stored_xattr(xattrs, llistxattr(path, xattrs, xattrs_size)))
            return NULL;
    }
    p = header(p, 16 + len + 1, T_FILENAME);
    memcpy(p, name, len + 1);
    p = entry(p + len + 1, c, S_IFLNK | 0777, &st);
    p = header(p, 16 + (uint64_t)n + 1, T_SYMLINK);
    memcpy(p, target, (size_t)n);
    p[n] = 0;
    return p + n + 1;
}

size_t ca_entry_batch(int dir_fd, const uint8_t *names, const uint32_t *ends,
                      const uint8_t *kinds, size_t n, const struct ca_entry_config *config,
                      uint8_t *out, size_t out_size, int64_t *results)
{
    char name[NAME_MAX_BYTES + 1];
    char xattrs[4096];
    uint8_t *p = out;
    size_t i;
    for (i = 0; i < n && (size_t)(p - out) + CA_ENTRY_HEAD_MAX <= out_size; i++) {
        uint32_t start = i ? ends[i - 1] : 0;
        size_t len = ends[i] - start;
        int64_t *r = results + 4 * i;
        int fd = -1;
        int64_t size = 0;
        uint8_t *done = NULL;
        if (len > 0 && len <= NAME_MAX_BYTES && !memchr(names + start, 0, len) &&
            !memchr(names + start, '/', len)) {
            memcpy(name, names + start, len);
            name[len] = 0;
            if (kinds[i] == CA_KIND_FILE)
                done = file(dir_fd, name, len, config, p, &fd, &size, xattrs, sizeof xattrs);
            else if (kinds[i] == CA_KIND_OTHER)
                done = symlink_(dir_fd, name, len, config, p, xattrs, sizeof xattrs);
        }
        r[0] = done ? CA_ENTRY_ENCODED : CA_ENTRY_PYTHON;
        r[1] = fd;
        r[2] = size;
        if (done)
            p = done;
        r[3] = p - out;
        if (kinds[i] == CA_KIND_DIR) {
            i++;
            break;
        }
    }
    return i;
}

struct listed {
    uint32_t at; /* of the name in the listing's buffer */
    uint8_t kind;
};

static int by_name(const void *a, const void *b, void *names)
{
    return strcmp((const char *)names + ((const struct listed *)a)->at,
                  (const char *)names + ((const struct listed *)b)->at);
}

long ca_list_dir(int dir_fd, uint8_t *out, size_t out_size, uint8_t *kinds, size_t kinds_size,
                 size_t *need_bytes, size_t *need_count)
{
    char *names = NULL;
    struct listed *list = NULL;
    size_t names_used = 0, names_size = 0, count = 0, list_size = 0;
    long rc = -2;
    char buf[32768];
    if (lseek(dir_fd, 0, SEEK_SET) < 0)
        return -2;
    for (;;) {
        long n = syscall(SYS_getdents64, dir_fd, buf, sizeof buf);
        if (n < 0)
            goto done;
        if (n == 0)
            break;
        for (long at = 0; at < n;) {
            struct dirent64 *d = (struct dirent64 *)(buf + at);
            at += d->d_reclen;
            const char *name = d->d_name;
            if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
                continue;
            size_t len = strlen(name) + 1;
            if (names_used + len > names_size) {
                size_t size = names_size ? 2 * names_size : 65536;
                while (size < names_used + len)
                    size *= 2;
                char *grown = realloc(names, size);
                if (!grown)
                    goto done;
                names = grown;
                names_size = size;
            }
            if (count == list_size) {
                size_t size = list_size ? 2 * list_size : 1024;
                struct listed *grown = realloc(list, size * sizeof *list);
                if (!grown)
                    goto done;
                list = grown;
                list_size = size;
            }
            memcpy(names + names_used, name, len);
            list[count].at = (uint32_t)names_used;
            list[count].kind = d->d_type == DT_REG   ? CA_KIND_FILE
                               : d->d_type == DT_DIR ? CA_KIND_DIR
                                                     : CA_KIND_OTHER;
            names_used += len;
            count++;
        }
    }
    *need_bytes = names_used;
    *need_count = count;
    if (names_used > out_size || count > kinds_size || names_used > UINT32_MAX) {
        rc = -1;
        goto done;
    }
    qsort_r(list, count, sizeof *list, by_name, names);
    for (size_t i = 0; i < count; i++) {
        size_t len = strlen(names + list[i].at) + 1;
        memcpy(out, names + list[i].at, len);
        out += len;
        kinds[i] = list[i].kind;
    }
    rc = (long)count;
done:
    free(names);
    free(list);
    return rc;
}
