"""FUSE mounts of indexes (``mount-index``): a blob as one read-only file, a catar
index as its read-only directory tree.

- ``fuse``: running a filesystem with mfusepy over libfuse 3 (signals, SIGHUP, errors)
- ``base``: read-only handles over a source, EIO for failed reads, counts
- ``blob``: the one-file filesystem; ``tree``: the catar tree, loaded at mount
- ``cor``: copy-on-read into a local sparse file, with saved state
- ``index``: ``mount_index``, which puts these together (``stores.swap``: stores
  replaced on SIGHUP, ``--store-file``)
"""
