"""desync's HTTP servers: ``chunk-server`` and ``index-server``.

Each server is a plain function of a request (``messages.Request`` ->
``messages.Response``: ``chunks.ChunkService``, ``indexes.IndexService``),
so what it answers is decided without sockets. ``listen`` puts one behind
HTTP(S) listeners (``http1`` speaks the protocol on an event loop, ``tls``
builds the TLS context); ``storefile`` reads the stores a SIGHUP swaps in
(``stores.swap``), and ``stores.single_flight`` lets concurrent requests for
one chunk share one upstream fetch.
"""
