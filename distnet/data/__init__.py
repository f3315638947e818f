"""Data: bundled data sets and loaders (datasets.py), sharding of global batches (sharding.py), and large data
sets on disk: the sharded format (format.py) with its writer and reader, row reads of .npy files and memory maps
(npy.py), and prefetching on a background thread (prefetch.py). The command line is `distnet-data`.
May import: NumPy and the standard library; never layers/, models/, training/ or parallel/.

    from distnet.data import ShardedDataset, write_arrays
    write_arrays("mnist-packed", x_train, y_train)
    data = ShardedDataset("mnist-packed", scale=1 / 255)
    xb, yb = data.take(indices)                  # only those rows are read
"""
from .format import DataError
from .npy import NpyRows
from .prefetch import PrefetchDataError, Prefetcher, PrefetchError
from .reader import ShardedDataset, verify_directory
from .writer import ShardWriter, write_arrays

__all__ = ["DataError", "NpyRows", "PrefetchDataError", "PrefetchError", "Prefetcher", "ShardWriter",
           "ShardedDataset", "verify_directory", "write_arrays"]
