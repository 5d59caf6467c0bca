"""What the prune tests share: chunk files made old, as they are when a prune runs a
day after they were written (prune keeps chunks younger than its minimum age, an
hour by default), and a site whose store is a local directory or a moto S3 bucket."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from desync_decl.stores.base import Store
from desync_decl.stores.location import open_store

A_DAY = 24 * 3600


def backdate(store: Path, seconds: float = A_DAY) -> None:
    """Set the modification time of every file in the local store ``store`` back by
    ``seconds``."""
    when = time.time() - seconds
    for path in store.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (when, when))


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Site:
    root: Path
    store: str  # as the manifests name it: a path or an s3+http:// URL
    bucket: str | None  # the moto bucket, for an S3 store

    def open(self) -> Store:
        return open_store(self.store)

    def age(self, seconds: float = A_DAY) -> None:
        """Make everything in the store ``seconds`` older, as time does."""
        if self.bucket is None:
            backdate(Path(self.store), seconds)
            return
        # moto keeps objects in this process: its LastModified is moved back as a day
        # passing would (real S3 cannot be told; this is time, not a fault)
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        keys = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[self.bucket].keys
        for name in list(keys):
            for key in keys.getlist(name):
                key.last_modified -= timedelta(seconds=seconds)

    def apply(
        self, manifest: Path, machine: str, *, lock_timeout: float | None = None
    ) -> subprocess.Popen[str]:
        """``apply`` as the machine ``machine`` (its own state directory); with
        ``lock_timeout``, waiting that long for a held store lock (default 10 s)."""
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        state = str(self.root / f"state-{machine}")
        wait = [] if lock_timeout is None else ["--lock-timeout", str(lock_timeout)]
        argv = ["apply", str(manifest), "--state-dir", state, *wait]
        return subprocess.Popen(
            [sys.executable, "-m", "desync_decl", *argv],
            cwd=self.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture(name="site", params=["local", "s3"])
def site_fixture(request, tmp_path) -> Site:
    """The same cases on a local store and a moto S3 bucket."""
    if request.param == "local":
        return Site(tmp_path, str(tmp_path / "store"), None)
    bucket = request.getfixturevalue("s3_bucket")
    endpoint = request.getfixturevalue("moto_server").endpoint
    return Site(tmp_path, f"s3+{endpoint}/{bucket}/store", bucket)
