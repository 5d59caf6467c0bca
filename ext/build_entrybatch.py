"""cffi build script for the private module ``desync_decl._entrybatch_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/entry_batch.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    struct ca_entry_config {
        uint64_t feature_flags;
        int xattrs;
        int nodump;
        int symlinks;
        int exclude;
        uint64_t exclude_dev;
        uint64_t exclude_ino;
    };
    #define CA_ENTRY_ENCODED 0
    #define CA_ENTRY_PYTHON 1
    #define CA_KIND_FILE 1
    #define CA_KIND_DIR 2
    #define CA_KIND_OTHER 0
    #define CA_ENTRY_HEAD_MAX ...
    size_t ca_entry_batch(int dir_fd, const uint8_t *names, const uint32_t *ends,
                          const uint8_t *kinds, size_t n, const struct ca_entry_config *config,
                          uint8_t *out, size_t out_size, int64_t *results);
    long ca_list_dir(int dir_fd, uint8_t *out, size_t out_size, uint8_t *kinds,
                     size_t kinds_size, size_t *need_bytes, size_t *need_count);
    """
)
ffibuilder.set_source(
    "desync_decl._entrybatch_cffi",
    '#include "entrybatch.h"',
    sources=["ext/entrybatch.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O2", "-std=gnu99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
