"""Directory trees <-> catar streams: the pieces behind ``tar``, ``untar`` and ``mtree``.

- ``disk_source`` / ``tar_source``: a directory or a tar archive as encoder input
- ``disk_writer``: decoded nodes into a directory, confined to it
- ``extract``: the extraction loop; ``write_queue``: its worker threads
- ``tar_writer``: decoded nodes as a tar stream; ``mtree``: as an mtree listing
- ``streams``: iterator <-> reader glue, an index's chunks as one stream
- ``acl``, ``fsattrs``: POSIX ACL xattrs, chattr flags, project ids, owner names
"""
