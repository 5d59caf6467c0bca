"""Port of desync's ``mount-index_linux_test.go`` (TestMountIndex): an index mounted
over FUSE with ``mount-index`` reads back as the blob it describes.

desync's test mounts ``testdata/blob1.caibx`` from ``testdata/blob1.store`` and
compares the SHA-256 of the file in the mount point with that of ``testdata/blob1``;
ours runs our ``mount-index`` as a real process on a real FUSE mount (fuse3).
"""

from __future__ import annotations

import hashlib
import os
import subprocess

from tests.test_mount import needs_fuse, start_mount


@needs_fuse
def test_mount_index(lib_data, tmp_path):
    """TestMountIndex: the mounted file's SHA-256 is blob1's."""
    mount = start_mount(tmp_path, "-s", lib_data / "blob1.store", lib_data / "blob1.caibx")
    try:
        got = hashlib.sha256((mount.path / "blob1").read_bytes()).digest()
        assert got == hashlib.sha256((lib_data / "blob1").read_bytes()).digest()
        assert mount.unmount() == 0
    finally:
        if os.path.ismount(mount.path):
            subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False)
        if mount.process.poll() is None:
            mount.process.kill()
            mount.process.wait()
