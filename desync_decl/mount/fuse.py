"""Running a FUSE filesystem in the foreground: mfusepy over libfuse 3.

mfusepy is optional: it is imported when a mount starts, with an install hint
when it (or libfuse) is missing. It loads libfuse 3 (Debian's ``fuse3``) unless
``FUSE_LIBRARY_PATH`` or ``FUSE_LIBRARY_NAME`` choose another libfuse.

libfuse unmounts cleanly on SIGINT and SIGTERM and then reports the signal as a
loop error; a filesystem that was mounted and then stopped that way has ended
normally. With a ``reload``, SIGHUP is blocked in every thread and taken by a
thread of ours that calls it (libfuse would otherwise unmount on SIGHUP).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from ctypes.util import find_library
from types import ModuleType

from desync_decl.errors import DesyncError

INSTALL_HINT = "pip install mfusepy; apt-get install fuse3"


def _nothing() -> None:
    pass


class Filesystem:
    """Base of our FUSE operation classes: times in nanoseconds, and whether the
    kernel has mounted it (libfuse calls ``init`` once the mount is up)."""

    use_ns = True  # mfusepy: st_*time are integer nanoseconds

    def __init__(self, *, on_mount: Callable[[], None] = _nothing) -> None:
        self.mounted = threading.Event()
        self.workdir = os.getcwd()
        self._on_mount = on_mount

    def init(self, path: str) -> None:
        # libfuse changes to / after mounting, even in the foreground: relative
        # store paths (and a --store-file re-read on SIGHUP) must keep working.
        os.chdir(self.workdir)
        self.mounted.set()
        self._on_mount()


def serve(
    fs: Filesystem,
    mountpoint: str,
    *,
    fsname: str = "desync-decl",
    threads: int = 10,
    permissions: bool = False,
    reload: Callable[[], None] | None = None,
) -> None:
    """Mount ``fs`` read-only at ``mountpoint`` and serve it until it is unmounted
    (``fusermount3 -u``) or the process gets SIGINT/SIGTERM. With ``permissions``
    the kernel checks the modes and owners ``fs`` reports."""
    check_mountpoint(mountpoint)
    fuse = _mfusepy()
    options: dict[str, object] = {"ro": True, "fsname": fsname, "kernel_cache": True}
    if permissions:
        options["default_permissions"] = True
    if fuse.fuse_version_major >= 3:  # libfuse 2 has no such options
        options |= {"max_threads": max(2, threads), "max_idle_threads": max(2, threads)}
    with _sighup_calls(reload):
        try:
            fuse.FUSE(fs, mountpoint, foreground=True, **options)
        except RuntimeError as e:
            if not fs.mounted.is_set():  # libfuse has printed why on stderr
                raise DesyncError(f"cannot mount {mountpoint}: libfuse failed: {e}") from None


def check_mountpoint(mountpoint: str) -> None:
    if not os.path.isdir(mountpoint):
        raise DesyncError(f"mount point {mountpoint} is not a directory")


def _mfusepy() -> ModuleType:
    env = os.environ
    chosen = env.get("FUSE_LIBRARY_PATH") or env.get("FUSE_LIBRARY_NAME")
    if not chosen and find_library("fuse3"):
        env["FUSE_LIBRARY_NAME"] = "fuse3"  # read by mfusepy when it is imported
    try:
        import mfusepy  # type: ignore[import-not-found,import-untyped,unused-ignore]  # no stubs; may be absent
    except ImportError:
        raise DesyncError(f"FUSE mounts need mfusepy ({INSTALL_HINT})") from None
    except (OSError, AttributeError) as e:  # no libfuse, or one mfusepy cannot use
        raise DesyncError(f"cannot load libfuse: {e}; {INSTALL_HINT}") from None
    return mfusepy


@contextlib.contextmanager
def _sighup_calls(reload: Callable[[], None] | None) -> Iterator[None]:
    """While inside, SIGHUP calls ``reload`` on a thread of its own (and never unmounts)."""
    if reload is None:
        yield
        return
    hup = {signal.SIGHUP}
    # A Python handler keeps libfuse from installing its unmount-on-SIGHUP handler;
    # blocked here, the signal goes to the waiting thread (it and libfuse's threads
    # inherit the mask).
    previous_handler = signal.signal(signal.SIGHUP, lambda *_: None)
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, hup)
    stop = threading.Event()

    def wait() -> None:
        while True:
            signal.sigwait(hup)
            if stop.is_set():
                return
            reload()

    waiter = threading.Thread(target=wait, name="desync-sighup", daemon=True)
    waiter.start()
    try:
        yield
    finally:
        stop.set()
        assert waiter.ident is not None  # started above
        signal.pthread_kill(waiter.ident, signal.SIGHUP)
        waiter.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        signal.signal(signal.SIGHUP, previous_handler)
