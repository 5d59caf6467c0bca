"""cffi build script for the private module ``desync_decl._outputbatch_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/output_batch.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    #define CA_OUT_OK 0
    #define CA_OUT_WRITE_FAILED 1
    #define CA_OUT_READ_FAILED 2
    #define CA_OUT_CHANGED 3
    #define CA_OUT_MAX_IOV 512
    int ca_output_batch(int out, const uint8_t *heads, const int64_t *segments, size_t n,
                        uint8_t *buffer, size_t buffer_size, size_t *failed, int *error);
    int ca_gather_batch(uint8_t *into, size_t room, const uint8_t *heads,
                        const int64_t *segments, size_t n, size_t *failed, int *error);
    """
)
ffibuilder.set_source(
    "desync_decl._outputbatch_cffi",
    '#include "outputbatch.h"',
    sources=["ext/outputbatch.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O2", "-std=gnu99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
