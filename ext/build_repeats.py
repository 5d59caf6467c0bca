"""cffi build script for the private module ``desync_decl._repeats_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/repeats.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int ca_first_positions(const uint8_t *key, const uint8_t *ids, size_t id_size, uint32_t n,
                           uint32_t *first, uint8_t *repeated);
    """
)
ffibuilder.set_source(
    "desync_decl._repeats_cffi",
    '#include "repeats.h"',
    sources=["ext/repeats.c", "ext/siphash.c"],  # relative: run from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
