"""Reliability harnesses and scenarios: faults, crashes, hostile input, load (RELIABILITY.md)."""
