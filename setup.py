"""Hooks the cffi extension into setuptools (pyproject.toml holds the metadata).

cffi's ``cffi_modules`` keyword has no pyproject.toml equivalent, so this
file stays as small as it can be.
"""

from setuptools import setup

setup(
    cffi_modules=[
        "ext/build_chunker.py:ffibuilder",
        "ext/build_siphash.py:ffibuilder",
        "ext/build_goodbye.py:ffibuilder",
        "ext/build_filebatch.py:ffibuilder",
        "ext/build_repeats.py:ffibuilder",
        "ext/build_outputbatch.py:ffibuilder",
        "ext/build_entrybatch.py:ffibuilder",
        "ext/build_catar.py:ffibuilder",
    ]
)
