/* The common run of a catar directory decoded in C: its leaf children (regular
   files and symlinks with no optional record), each FILENAME, ENTRY and PAYLOAD or
   SYMLINK checked as formats/catar/decoder.py checks them.

   Only what the Python decoder accepts is decoded here: at the first child that is
   anything else (a directory, a device, an optional record, a value the rules
   refuse, a malformed or out-of-order record, or a child not whole in the window),
   the run ends before that child and the Python decoder takes it from its FILENAME
   header, refusing it with its own message or decoding it. Every record header met
   is read as the Python decoder reads it; the run always ends with one header read
   (next), so the Python loop goes on exactly where it would have been. */
#include "catar_leaves.h"

#include <string.h>

#include "siphash.h"

#define HEADER 16u
#define ENTRY_TYPE 0x1396FABCEA5BBB51ull
#define FILENAME_TYPE 0x6DBB6EBCB3161F0Bull
#define PAYLOAD_TYPE 0x8B9E1D93D6DCFFC9ull
#define SYMLINK_TYPE 0x664A6FB6830E0D6Cull
#define ENTRY_SIZE 64u
#define FILENAME_MAX_BODY 256u /* NAME_MAX + NUL */
#define SYMLINK_MAX_BODY 4097u /* PATH_MAX + NUL */
#define NO_TIME 0xFFFFFFFFFFFFFFFFull
#define S_FMT 0170000u
#define S_REG 0100000u
#define S_LNK 0120000u

static const uint8_t CATAR_KEY[16] = {0xb3, 0x84, 0x1d, 0x0f, 0x2b, 0x44, 0x74, 0x85,
                                      0xc1, 0x2e, 0xc2, 0xd1, 0x30, 0xed, 0x36, 0x27};

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* records.read_name_problem finds nothing, and the name sorts after the last one */
static int good_name(const uint8_t *name, size_t n, const uint8_t *last, size_t last_len,
                     int have_last)
{
    if (n == 0 || (n == 1 && name[0] == '.') || (n == 2 && name[0] == '.' && name[1] == '.'))
        return 0;
    if (memchr(name, '/', n) || memchr(name, 0, n) || memchr(name, '\\', n))
        return 0;
    if (have_last) { /* Python's bytes order: name must be > last */
        size_t k = n < last_len ? n : last_len;
        int c = memcmp(name, last, k);
        if (c < 0 || (c == 0 && n <= last_len))
            return 0;
    }
    return 1;
}

/* feature_gates.EntryRules.problem (and the decoder's own checks) find nothing */
static int good_entry(const struct ca_leaf_rules *r, const uint8_t *b, struct ca_leaf *leaf)
{
    uint64_t ff = le64(b), mode = le64(b + 8), flags = le64(b + 16);
    uint64_t uid = le64(b + 24), gid = le64(b + 32), mtime = le64(b + 40);
    if (ff != r->feature_flags || mode >> 16)
        return 0;
    uint64_t fmt = mode & S_FMT, perms = mode & 07777;
    if (fmt == S_REG) {
        if (!r->files)
            return 0;
        if (!r->any_mode && perms != 0666 && !(r->read_only && perms == 0444))
            return 0;
    } else if (fmt == S_LNK) {
        if (!r->symlinks || perms != 0777 || flags)
            return 0;
    } else {
        return 0; /* directories and special nodes: the Python decoder */
    }
    if (flags & ~r->entry_flags)
        return 0;
    if (uid > r->max_id || uid == 0xFFFF || gid > r->max_id || gid == 0xFFFF)
        return 0;
    if (r->time_unit ? (mtime % r->time_unit || mtime == NO_TIME) : mtime != 0)
        return 0;
    leaf->mode = mode;
    leaf->flags = flags;
    leaf->uid = uid;
    leaf->gid = gid;
    leaf->mtime = mtime;
    return 1;
}

/* Decodes up to max leaf children from win (see catar_leaves.h): for each, its ENTRY
   in out, its name's GOODBYE hash, FILENAME offset and end in hashes, starts, ends.
   A child counts only once the header after it is in the window too; next receives
   that header's type, body size and offset (or, with none decoded, the FILENAME
   header given), next[3] the bytes of win consumed (up to and with it), next[4] and
   next[5] the regular files among the leaves and their bytes. */
size_t ca_decode_leaves(const struct ca_leaf_rules *rules, const uint8_t *win, size_t len,
                        uint64_t name_size, uint64_t name_at, const uint8_t *last,
                        size_t last_len, size_t max, struct ca_leaf *out, uint64_t *hashes,
                        uint64_t *starts, uint64_t *ends, uint64_t *next)
{
    uint64_t base = name_at + HEADER; /* archive offset of win[0] */
    size_t cur = 0, n = 0;
    int have_last = last != NULL;
    next[0] = FILENAME_TYPE;
    next[1] = name_size;
    next[2] = name_at;
    next[3] = next[4] = next[5] = 0;
    while (n < max) {
        struct ca_leaf *leaf = &out[n];
        /* FILENAME body */
        if (name_size == 0 || name_size > FILENAME_MAX_BODY || name_size > len - cur)
            break;
        const uint8_t *name = win + cur;
        size_t name_len = (size_t)name_size - 1;
        if (name[name_len] != 0 || !good_name(name, name_len, last, last_len, have_last))
            break;
        size_t c = cur + (size_t)name_size;
        /* ENTRY */
        if (len - c < ENTRY_SIZE || le64(win + c + 8) != ENTRY_TYPE ||
            le64(win + c) != ENTRY_SIZE || !good_entry(rules, win + c + HEADER, leaf))
            break;
        c += ENTRY_SIZE;
        /* PAYLOAD or SYMLINK, nothing between */
        if (len - c < HEADER)
            break;
        uint64_t size = le64(win + c), type = le64(win + c + 8);
        if (size < HEADER)
            break;
        size -= HEADER;
        c += HEADER;
        if (size > len - c)
            break;
        if ((leaf->mode & S_FMT) == S_REG) {
            if (type != PAYLOAD_TYPE)
                break;
            leaf->size = size;
        } else {
            const uint8_t *t = win + c;
            if (type != SYMLINK_TYPE || size > SYMLINK_MAX_BODY || size < 2 || t[size - 1] ||
                memchr(t, 0, (size_t)size - 1))
                break;
            leaf->size = size - 1;
        }
        leaf->data_at = c;
        c += (size_t)size;
        /* the header after it: the child is whole */
        if (len - c < HEADER || le64(win + c) < HEADER)
            break;
        leaf->name_at = (uint32_t)cur;
        leaf->name_len = (uint32_t)name_len;
        if ((leaf->mode & S_FMT) == S_REG) {
            next[4] += 1;
            next[5] += leaf->size;
        }
        hashes[n] = ca_siphash24(CATAR_KEY, name, name_len);
        starts[n] = next[2];
        ends[n] = base + c;
        n++;
        last = name;
        last_len = name_len;
        have_last = 1;
        next[0] = le64(win + c + 8);
        next[1] = le64(win + c) - HEADER;
        next[2] = base + c;
        next[3] = c + HEADER;
        if (next[0] != FILENAME_TYPE)
            break;
        name_size = next[1];
        cur = c + HEADER;
    }
    return n;
}
