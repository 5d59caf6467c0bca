#!/usr/bin/env bash
# Run one benchmark on a freshly made filesystem, so the host's state (an ext4 that
# skips recently freed inodes for minutes after many deletions, a fragmented disk,
# page cache left by other work) cannot bias a ratio: a new ext4 (the machine's own
# kind) on a loop image, mounted, given to the benchmark as --workdir, and removed
# afterwards. Needs root (mkfs, mount).
#
#   bench/on_fresh_fs.sh SIZE_GIB python bench/bench_blob.py --size 256M --runs 5 --settle 0
#
# The image is in /var/tmp (the host disk, not memory) and written through with zeros
# before mkfs: a sparse (or fallocated) image makes the host allocate (or convert) its
# blocks on the first write to each part, so a tool that writes where nothing was
# written before runs at the host's allocation speed, one that rewrites at the disk's
# (dd of 1 GiB with fdatasync on a sparse image here: 378 MB/s on new blocks, 1.1-1.2
# GB/s rewriting them; fallocated: 222-758 MB/s). --settle 0 is right here: no store
# was ever removed on the new filesystem. The inode tables and the
# journal are written by mkfs itself (lazy_itable_init=0): left lazy, a kernel thread
# zeroes them in the background for the first minutes, its writes competing with the
# benchmark's (a 12 GiB image: the first extract of a run took 1.6 s instead of 0.55).
# The loop device does direct I/O on its image, so it behaves like a disk: without it
# every block written is copied again into the host's page cache by a kernel thread,
# about 1 CPU-s per 256 MiB taken from a tool that syncs while it runs (ours), and a
# `sync` after a tool that leaves its writes to the kernel (casync) took 0.9 s, 0.17 s
# with direct I/O.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "on_fresh_fs.sh: needs root (mkfs, mount)" >&2; exit 1; }
size_gib=$1
shift
image=$(mktemp /var/tmp/desync-decl-bench.XXXXXX.img)
mount_point=$(mktemp -d /var/tmp/desync-decl-bench.XXXXXX)
device=""
cleanup() {
    umount "$mount_point" 2>/dev/null || true
    [ -z "$device" ] || losetup -d "$device" 2>/dev/null || true
    rmdir "$mount_point" 2>/dev/null || true
    rm -f "$image"
}
trap cleanup EXIT
dd if=/dev/zero of="$image" bs=64M count=$((size_gib * 16)) oflag=direct conv=fsync status=none
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$image"
device=$(losetup --direct-io=on --find --show "$image")
mount "$device" "$mount_point"
sync
echo "on_fresh_fs.sh: a new ext4 of ${size_gib} GiB at $mount_point ($device, direct I/O)" >&2
"$@" --workdir "$mount_point/work"
