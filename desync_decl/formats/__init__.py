"""Pure byte formats shared with casync: digests, feature flags, indexes, chunk files."""
