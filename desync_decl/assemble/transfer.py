"""Moving a byte range from a seed file into the target: clone, kernel copy, or read/write.

Cloning (``FICLONERANGE``) shares the seed's blocks with the target: no data
is read or written and no space is used, but only whole blocks at the same
position within a block on both sides, on a filesystem that supports it
(XFS, Btrfs). ``copy_file_range`` copies inside the kernel (no trip through
user space). Plain ``pread``/``pwrite`` is the fallback that always works.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import tempfile

FICLONERANGE = 0x4020940D  # _IOW(0x94, 13, struct file_clone_range)
COPY_PIECE = 1 << 20  # fallback read/write size: bounded memory per worker
# Errors meaning "this pair of files cannot do that", not "the disk failed".
_UNSUPPORTED = {errno.EXDEV, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ETXTBSY}


def clone_range(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> None:
    """Share ``length`` bytes of ``src_fd`` at ``dst_offset`` of ``dst_fd`` (raises OSError).

    ``length`` must be > 0: zero means "to the end of the source" to the kernel.
    """
    if length <= 0:
        raise ValueError("clone length must be positive")
    fcntl.ioctl(dst_fd, FICLONERANGE, struct.pack("qQQQ", src_fd, src_offset, length, dst_offset))


def can_clone(src_fd: int, dst_fd: int, target_dir: str | os.PathLike[str]) -> bool:
    """Whether blocks of ``src_fd`` can be cloned into ``dst_fd`` (a file in ``target_dir``).

    Tried for real on the seed's first block, into an unnamed file beside the
    target that disappears: same filesystem, same mount and reflink support are
    all checked at once. Only regular files clone (not block devices).
    """
    src, dst = os.fstat(src_fd), os.fstat(dst_fd)
    if not (stat.S_ISREG(src.st_mode) and stat.S_ISREG(dst.st_mode)) or src.st_size == 0:
        return False
    try:
        probe = tempfile.TemporaryFile(dir=target_dir)  # noqa: SIM115 - closed below
    except OSError:  # cannot make a file there: no probe, no clones
        return False
    with probe:
        try:
            clone_range(src_fd, 0, probe.fileno(), 0, min(src.st_size, src.st_blksize))
        except OSError as e:
            if e.errno in _UNSUPPORTED:
                return False
            raise
    return True


def copy_range(src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> None:
    """Copy ``length`` bytes, in the kernel where possible, else through a 1 MiB buffer."""
    while length > 0:
        try:
            n = os.copy_file_range(src_fd, dst_fd, length, src_offset, dst_offset)
        except OSError as e:
            if e.errno not in _UNSUPPORTED:
                raise
            _copy_by_reading(src_fd, src_offset, dst_fd, dst_offset, length)
            return
        if n == 0:
            raise OSError(errno.EIO, f"seed ends before offset {src_offset + length}")
        src_offset += n
        dst_offset += n
        length -= n


def _copy_by_reading(
    src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int
) -> None:
    while length > 0:
        data = os.pread(src_fd, min(length, COPY_PIECE), src_offset)
        if not data:
            raise OSError(errno.EIO, f"seed ends before offset {src_offset + length}")
        view = memoryview(data)
        while view:
            n = os.pwrite(dst_fd, view, dst_offset)
            view = view[n:]
            dst_offset += n
        src_offset += len(data)
        length -= len(data)


def transfer(
    src_fd: int,
    src_offset: int,
    dst_fd: int,
    dst_offset: int,
    length: int,
    *,
    blocksize: int,
    clone: bool,
) -> int:
    """Put the source range at ``dst_offset``: whole blocks cloned when ``clone`` and
    both offsets sit at the same place within a block, the edges copied. The
    number of bytes cloned (0 when everything was copied)."""
    if clone and src_offset % blocksize == dst_offset % blocksize:
        head = -dst_offset % blocksize
        middle = (length - head) // blocksize * blocksize if length > head else 0
        if middle > 0:
            try:
                clone_range(src_fd, src_offset + head, dst_fd, dst_offset + head, middle)
            except OSError as e:  # e.g. ZFS's record alignment, EAGAIN on unwritten data
                if e.errno not in _UNSUPPORTED and e.errno != errno.EAGAIN:
                    raise
            else:
                copy_range(src_fd, src_offset, dst_fd, dst_offset, head)
                tail = head + middle
                copy_range(src_fd, src_offset + tail, dst_fd, dst_offset + tail, length - tail)
                return middle
    copy_range(src_fd, src_offset, dst_fd, dst_offset, length)
    return 0
