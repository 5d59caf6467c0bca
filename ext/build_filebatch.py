"""cffi build script for the private module ``desync_decl._filebatch_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/file_batch.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
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
