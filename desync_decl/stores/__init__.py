"""Chunk stores: the interfaces and errors (base), backends, composition and locations."""
