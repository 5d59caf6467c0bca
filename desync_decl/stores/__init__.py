"""Chunk and index stores: the contract and errors (``base``), the backends, the
wrappers that build stores from stores (``compose``, ``retry``, ``swap``,
``single_flight``, ``spool``, ``dry``, ``read_only``, ``tally``) and the one place
that turns locations into stores (``location``). ``ARCHITECTURE.md`` lists them."""
