"""Usage: python examples/benchmark_scaling.py [distnet-bench scaling options]
       python examples/benchmark_scaling.py -n 1,2,4 --model cnn --mode weak --backend mpi,ray --predict 10gbit

Weak/strong scaling of the example models on 1..N workers (MPI ranks or Ray actors): throughput, efficiency,
the per-step breakdown, cost-model predictions for larger clusters, and plots (--plot DIR). The same as
`distnet-bench scaling`.
"""
import sys

from distnet.bench.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["scaling", *sys.argv[1:]]))
