"""cffi build script for the private module ``desync_decl._siphash_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/siphash.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    uint64_t ca_siphash24(const uint8_t *key, const uint8_t *data, size_t len);
    void ca_siphash24_many(const uint8_t *key, const uint8_t *data, const uint64_t *ends,
                           size_t n, uint64_t *out);
    """
)
ffibuilder.set_source(
    "desync_decl._siphash_cffi",
    '#include "siphash.h"',
    sources=["ext/siphash.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
