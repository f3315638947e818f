"""Benchmarks: engine step time, memory, allreduce bandwidth, scaling efficiency, data reading, the cost model
and plots (run by hand or via `distnet-bench`). May import anything in distnet, through public APIs only."""
