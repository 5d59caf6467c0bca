"""cffi build script for the private module ``desync_decl._chunker_cffi``.

Out-of-line API mode (like python-zstandard's make_cffi.py): the C code is
compiled into an extension module when the package is installed, and calls into
it release the GIL, so hashing and compression threads keep running while a
chunker thread scans. Only ``desync_decl/chunker.py`` imports the result.
"""

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef(
    """
    typedef struct { ...; } ca_chunker;  /* layout taken from chunker.h by the compiler */
    uint64_t ca_chunker_discriminator(uint64_t avg);
    int ca_chunker_init(ca_chunker *c, uint64_t min, uint64_t avg, uint64_t max);
    size_t ca_chunker_scan(ca_chunker *c, const uint8_t *buf, size_t len,
                           uint64_t *cuts, size_t max_cuts);
    uint32_t ca_chunker_window_hash(const uint8_t *window);
    int ca_chunker_is_cut(const ca_chunker *c, uint32_t h);
    uint64_t ca_chunker_skip_zeros(ca_chunker *c, uint64_t done, uint64_t zeros,
                                   uint64_t *first, uint64_t *step);
    """
)
ffibuilder.set_source(
    "desync_decl._chunker_cffi",
    '#include "chunker.h"',
    sources=["ext/chunker.c"],  # relative: setuptools runs this from the project root
    include_dirs=["ext"],
    extra_compile_args=["-O3", "-std=c99"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
