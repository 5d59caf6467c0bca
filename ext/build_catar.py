"""cffi build script for the private module ``desync_decl._catar_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/catar_leaves.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    struct ca_leaf_rules {
        uint64_t feature_flags;
        uint64_t entry_flags;
        uint64_t max_id;
        uint64_t time_unit;
        uint32_t files;
        uint32_t symlinks;
        uint32_t any_mode;
        uint32_t read_only;
    };
    struct ca_leaf {
        uint64_t mode;
        uint64_t flags;
        uint64_t uid;
        uint64_t gid;
        uint64_t mtime;
        uint64_t size;
        uint32_t name_at;
        uint32_t name_len;
        uint64_t data_at;
    };
    size_t ca_decode_leaves(const struct ca_leaf_rules *rules, const uint8_t *win, size_t len,
                            uint64_t name_size, uint64_t name_at, const uint8_t *last,
                            size_t last_len, size_t max, struct ca_leaf *out, uint64_t *hashes,
                            uint64_t *starts, uint64_t *ends, uint64_t *next);
    """
)
ffibuilder.set_source(
    "desync_decl._catar_cffi",
    '#include "catar_leaves.h"',
    sources=["ext/catar_leaves.c", "ext/siphash.c"],  # relative: run from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O2", "-std=gnu99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
