"""cffi build script for the private module ``desync_decl._filebatch_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/file_batch.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    struct ca_leaf_policy {
        int32_t dir_fd;
        uint32_t umask;
        uint32_t archive_modes;
        uint32_t read_only;
        uint32_t always_chmod;
        uint32_t chown;
        uint32_t new_uid;
        uint32_t new_gid;
        uint32_t times;
        uint32_t pad;
        uint64_t python_flags;
    };
    size_t ca_write_leaves(const uint8_t *leaves, size_t n, const uint8_t *window,
                           const struct ca_leaf_policy *policy, const char *temp_prefix,
                           const uint64_t *starts, size_t start, int *error,
                           uint64_t *made);
    size_t ca_write_files(const uint8_t *batch, size_t batch_len, size_t n, int src_fd,
                          size_t start, int *error);
    """
)
ffibuilder.set_source(
    "desync_decl._filebatch_cffi",
    '#include "filebatch.h"',
    sources=["ext/filebatch.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O2", "-std=gnu99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
