"""Benchmarks: engine step time, allreduce bandwidth, scaling efficiency (run by hand or via `distnet-bench`)."""
