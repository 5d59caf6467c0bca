"""Extraction that moves only what changed: plan where every range of a target
comes from (in place, null seed, file seeds, self seed, stores), then carry the
plan out with clones, kernel copies and verified writes.
"""
