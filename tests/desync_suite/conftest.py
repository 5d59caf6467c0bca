"""Shared by the ports of desync's own tests: where desync's fixture files are.

``lib_data`` is desync's ``testdata/`` (the library tests' fixtures), ``cmd_data``
its ``cmd/desync/testdata/`` (the command tests'). Both are read-only: a test that
writes (a cache, a store) copies what it needs into its own ``tmp_path`` first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

UPSTREAM = Path(__file__).parent / "upstream"


@pytest.fixture(scope="session")
def lib_data() -> Path:
    return UPSTREAM / "testdata"


@pytest.fixture(scope="session")
def cmd_data() -> Path:
    return UPSTREAM / "cmd" / "desync" / "testdata"
