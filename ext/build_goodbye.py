"""cffi build script for the private module ``desync_decl._goodbye_cffi``.

Out-of-line API mode, like ``build_chunker.py``: compiled when the package is
installed; calls release the GIL. Only ``desync_decl/goodbye_table.py`` imports it.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    int ca_goodbye_items(const uint64_t *hashes, const uint64_t *starts, const uint64_t *ends,
                         size_t n, uint64_t at, uint64_t *items);
    void ca_goodbye_sort_items(uint64_t *items, size_t n);
    """
)
ffibuilder.set_source(
    "desync_decl._goodbye_cffi",
    '#include "goodbye.h"',
    sources=["ext/goodbye.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
