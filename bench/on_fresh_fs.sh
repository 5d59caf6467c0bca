#!/usr/bin/env bash
# Run one benchmark on a freshly made filesystem, so the host's state (an ext4 that
# skips recently freed inodes for minutes after many deletions, a fragmented disk,
# page cache left by other work) cannot bias a ratio: a new ext4 (the machine's own
# kind) on a loop image, mounted, given to the benchmark as --workdir, and removed
# afterwards. Needs root (mkfs, mount).
#
#   bench/on_fresh_fs.sh SIZE_GIB python bench/bench_blob.py --size 256M --runs 5 --settle 0
#
# The image is sparse, in /var/tmp (the host disk, not memory). --settle 0 is right
# here: no store was ever removed on the new filesystem.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "on_fresh_fs.sh: needs root (mkfs, mount)" >&2; exit 1; }
size_gib=$1
shift
image=$(mktemp /var/tmp/desync-decl-bench.XXXXXX.img)
mount_point=$(mktemp -d /var/tmp/desync-decl-bench.XXXXXX)
cleanup() {
    umount "$mount_point" 2>/dev/null || true
    rmdir "$mount_point" 2>/dev/null || true
    rm -f "$image"
}
trap cleanup EXIT
truncate -s "${size_gib}G" "$image"
mkfs.ext4 -q -F "$image"
mount -o loop "$image" "$mount_point"
echo "on_fresh_fs.sh: a new ext4 of ${size_gib} GiB at $mount_point" >&2
"$@" --workdir "$mount_point/work"
