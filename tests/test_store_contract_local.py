"""The store contract on the local directory store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from desync_decl.stores.local import LocalStore
from desync_decl.stores.options import StoreOptions
from tests.store_contract import ContractEnv, StoreContract, put_file


class TestLocalStore(StoreContract):
    @pytest.fixture
    def env(self, tmp_path) -> ContractEnv:
        root = tmp_path / "store"
        root.mkdir()

        def open_store(options: StoreOptions) -> LocalStore:
            return LocalStore(
                root, format=options.storage_format(), skip_verify=options.skip_verify
            )

        def break_store() -> None:  # the directory is replaced by a file: every access fails
            shutil.rmtree(root)
            Path(root).write_bytes(b"")

        return ContractEnv(
            str(root), open_store, put_file(root), break_store, reads_both_forms=True
        )
