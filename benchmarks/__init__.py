"""Benchmarks: each figure next to a baseline measured in the same run (see BENCHMARKS.md)."""
