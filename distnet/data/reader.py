"""`ShardedDataset`: a packed data set (format.py) read sample by sample, only the rows asked for.

    data = ShardedDataset("cifar-packed", scale=1 / 255)   # x: uint8 on disk -> float32 in [0, 1]
    len(data), data.shapes, data.dtypes                     # 60000, ((32, 32, 3), ()), (float32, int64)
    xb, yb = data.take(sharding.local_batch(order, step, batch_size, rank, size))

take() groups the indices by shard, sorts them, and reads each run of nearby rows with one preadv into the
output rows (rowio.py; on `io_threads` threads), so a worker reads its own share of each global batch and
nothing else. Fields with rows of at most SMALL_ROW_BYTES (labels, sample weights) are the exception: a random
8-byte label costs a page read and a system call, so a shard's whole column is read with one call the first time
it is used and kept in memory (n * row bytes at most: 8 bytes a sample for int64 labels). Over a few hundred
random batches every page of those columns is touched anyway; the column read saves a system call per sample
(measured on 8.7 GB of CIFAR-shaped shards, 128 random samples: 2.1 ms of CPU per take warm instead of 4.5, and
7.2 cold instead of 11.9: CPU the prefetch thread takes from training on a machine without a spare core).

Checks, each a DataError naming the file and what was expected and found, raised before take() returns any
sample of the batch: at open, every file listed exists with the recorded size; the first time a shard is
touched, its .npy headers match the index (shape, dtype, data size); with verify="lazy" (default) each row read
is checked against its CRC-32 in the shard's crc file (read whole, and kept, at the shard's first use: 4 bytes
a sample per field; checking whole data files on first touch instead would read every shard once per worker:
N times the worker's share in the first epoch); with verify="open" every file's CRC-32 is checked at open
(reads everything once), and rows as they are read; verify="off" checks sizes and headers only.
"""
import itertools
import math
import os
import threading
from collections import OrderedDict

import numpy as np

from .format import INDEX, DataError, check_file_crc, check_file_size, crc_field, index_fields, read_index, row_crc32
from .npy import read_header
from .rowio import (RowReader, as_indices, byte_view, open_for_rows, read_rows, read_scattered, read_span,
                    unique_plan)

VERIFY_MODES = ("lazy", "open", "off")
SMALL_ROW_BYTES = 64


class ShardedDataset(RowReader):
    """A sharded data set directory, read by sample index.

    fields: which fields take() returns, in that order (e.g. ("x",) for predict).
    scale, dtype: decoding of the first field (a scalar) or of any field ({"x": 1 / 255}); see rowio.decoding.
    verify: "lazy" | "open" | "off" (see the module docstring).
    io_threads: threads issuing reads within one take (several outstanding reads: faster on a cold cache).
    max_open_files: shard files kept open (least recently used ones are closed beyond it). Default: half the
        process's soft limit on open files, at most 4096 and at least 256. A global batch draws samples from
        nearly every shard, so a limit below the number of shard files used reopens files on every batch
        (measured on 346 shards of 8.7 GB, x and y read, a limit of 256: 136 open/close pairs per batch of 128)."""

    def __init__(self, directory, fields=("x", "y"), scale=None, dtype=None, verify="lazy", io_threads=1,
                 max_open_files=None):
        if verify not in VERIFY_MODES:
            raise ValueError(f"ShardedDataset expects verify to be one of {VERIFY_MODES}, received {verify!r}")
        self.directory, self.verify = os.fspath(directory), verify
        self._args = {"fields": fields, "scale": scale, "dtype": dtype, "verify": verify, "io_threads": io_threads,
                      "max_open_files": max_open_files}
        self.index = read_index(self.directory)
        stored = {f.name: f for f in index_fields(self.index)}
        if isinstance(fields, str) or not fields or any(f not in stored for f in fields):
            raise DataError(f"{os.path.join(self.directory, INDEX)!r} has fields {list(stored)}; "
                            f"received fields={fields!r}")
        self.fields = tuple(fields)     # = self.names
        self._column_of = {name: i for i, name in enumerate(stored)}       # column in the crc files
        self._stored = [stored[f] for f in self.fields]
        self._shards = self.index["shards"]
        self._starts = np.concatenate(([0], np.cumsum([s["count"] for s in self._shards]))).astype(np.int64)
        for s in self._shards:
            for entry in s["files"].values():
                check_file_size(self.directory, entry)
        self._init_fields(self.fields, [f.shape for f in self._stored], [f.dtype for f in self._stored], scale,
                          dtype, io_threads)
        if max_open_files is None:
            max_open_files = default_max_open_files()
        self._fds, self._max_open = OrderedDict(), max(int(max_open_files), len(self.fields))
        self._offsets, self._row_crcs, self._lock = {}, {}, threading.Lock()
        # Fields of small rows (labels, weights): a random row costs a page and a system call for a few bytes, so
        # a shard's whole column is read at its first use (one read) and kept: at most n * stride bytes in all.
        self._small = {j for j, f in enumerate(self._stored) if f.stride <= SMALL_ROW_BYTES}
        self._columns = {}
        if verify == "open":
            for s in self._shards:
                for entry in s["files"].values():
                    check_file_crc(self.directory, entry)

    def __len__(self):
        return int(self._starts[-1])

    @property
    def num_shards(self):
        return len(self._shards)

    @property
    def open_files(self):
        """How many shard files are open now (at most max_open_files)."""
        return len(self._fds)

    def shard_of(self, index):
        """(shard number, row within it) of a global sample index."""
        s = int(np.searchsorted(self._starts, index, side="right") - 1)
        return s, int(index - self._starts[s])

    def take(self, indices):
        """indices: (n,) int64 global sample indices, any order, repeats allowed (n may be 0) -> one
        (n, *shape) array per field, row i holding sample indices[i]."""
        idx = as_indices(indices, len(self), "ShardedDataset")
        rows, positions, dups = unique_plan(idx)
        raws = [np.empty((len(idx),) + f.shape, f.dtype) for f in self._stored]
        views = [byte_view(r) for r in raws]
        shard = np.searchsorted(self._starts, rows, side="right") - 1
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(shard)) + 1, [len(rows)])).tolist() if len(rows) else []
        groups = [(int(shard[lo]), rows[lo:hi] - self._starts[int(shard[lo])], positions[lo:hi])
                  for lo, hi in itertools.pairwise(bounds)]
        with self._lock:         # the prefetch thread and the caller may share a reader
            try:
                for j, f in enumerate(self._stored):
                    if j in self._small:
                        for s, local, pos in groups:
                            raws[j][pos] = self._column(s, j)[local]
                    elif self.io_threads == 1:     # one pass over the batch's rows of every shard
                        self._read_field(j, f, groups, views[j])
                    else:                          # a job per shard, cut into pieces for the threads
                        jobs = []
                        for s, local, pos in groups:
                            fd, offset, path = self._file(s, j)
                            jobs.append((fd, path, offset, f.stride, f.row_bytes, local, views[j], pos))
                        self._read(jobs)
            finally:
                self._close_beyond_limit()
            if self.verify != "off" and groups:
                self._check_rows(groups, raws)
        for raw in raws:
            raw[dups[0]] = raw[dups[1]]
        return self._decode(raws)

    def close(self):
        with self._lock:
            while self._fds:
                os.close(self._fds.popitem()[1])
        super().close()

    def __del__(self):
        if getattr(self, "_fds", None) is not None:       # not when __init__ failed early
            self.close()

    def __getstate__(self):     # for Ray and multiprocessing: reopen from the directory on the other side
        return {"directory": self.directory, **self._args}

    def __setstate__(self, state):
        directory = state.pop("directory")
        self.__init__(directory, **state)

    def __repr__(self):
        return (f"<ShardedDataset {self.directory!r}: {len(self)} samples in {self.num_shards} shards, "
                f"fields {dict(zip(self.fields, self.shapes))}>")

    # -- files --------------------------------------------------------------------------------------------
    def _file(self, s, j):
        """(fd, data offset, path) of field j of shard s; its header is checked the first time."""
        key = (s, j)
        entry = self._shards[s]["files"][self.fields[j]]
        path = os.path.join(self.directory, entry["name"])
        fd = self._fds.get(key)
        if fd is None:
            fd = open_for_rows(path)
            if key not in self._offsets:
                try:
                    shape, dtype = self._stored[j].npy_layout(self._shards[s]["count"])
                    self._offsets[key] = check_npy(fd, path, shape, dtype, entry["bytes"])
                except BaseException:
                    os.close(fd)
                    raise
            self._fds[key] = fd
        self._fds.move_to_end(key)
        return fd, self._offsets[key], path

    def _close_beyond_limit(self):
        """Close the least recently used files beyond max_open_files (after a take: none of its files is
        closed while it reads)."""
        while len(self._fds) > self._max_open:
            os.close(self._fds.popitem(last=False)[1])

    def _read_field(self, j, f, groups, view):
        """The rows of field j of every group (shard, its rows, their output positions) with read_scattered."""
        fds, offsets, paths = [], [], {}
        for s, _, _ in groups:
            fd, offset, path = self._file(s, j)
            fds.append(fd)
            offsets.append(offset)
            paths[fd] = path
        if not groups:
            return
        counts = [len(g[1]) for g in groups]
        local = np.concatenate([g[1] for g in groups])
        starts = np.repeat(np.array(offsets, dtype=np.int64), counts) + local * f.stride
        read_scattered(np.repeat(np.array(fds), counts), paths, starts, f.row_bytes, view,
                       np.concatenate([g[2] for g in groups]), self.io_stats)

    def _column(self, s, j):
        """All rows of small field j (e.g. labels) of shard s, read with one pread the first time and kept."""
        key = (s, j)
        col = self._columns.get(key)
        if col is None:
            f = self._stored[j]
            fd, offset, path = self._file(s, j)
            count = self._shards[s]["count"]
            raw = np.empty((count,) + f.shape, f.dtype)
            if f.stride == f.row_bytes:
                read_span(fd, path, offset, byte_view(raw), self.io_stats)
            else:
                rows = np.arange(count, dtype=np.int64)
                read_rows(fd, path, offset, f.stride, f.row_bytes, rows, byte_view(raw), rows, self.io_stats)
            col = self._columns[key] = raw
        return col

    def _check_rows(self, groups, raws):
        """Compare the CRC-32 of every row just read (groups: (shard, its rows, their output positions)) with the
        shards' crc files: one CRC pass over the batch per field."""
        local = np.concatenate([g[1] for g in groups])
        pos = np.concatenate([g[2] for g in groups])
        want = np.concatenate([self._shard_crcs(s)[rows] for s, rows, _ in groups])
        for j, name in enumerate(self.fields):
            found = row_crc32(raws[j].reshape(raws[j].shape[0], -1).view(np.uint8)[pos])
            expected = want[:, self._column_of[name]]
            bad = np.flatnonzero(found != expected)
            if bad.size:
                b = int(bad[0])
                s = next(g[0] for g, end in zip(groups, np.cumsum([len(g[1]) for g in groups])) if b < end)
                path = os.path.join(self.directory, self._shards[s]["files"][name]["name"])
                raise DataError(f"shard file {path!r} is corrupt: sample {int(self._starts[s] + local[b])} (row "
                                f"{int(local[b])} of shard {s}) has CRC-32 {int(found[b]):08x}, "
                                f"{self._shards[s]['files']['crc']['name']} says {int(expected[b]):08x}")

    def _shard_crcs(self, s):
        """The (count, fields) row CRCs of shard s, read once and checked against the index."""
        crcs = self._row_crcs.get(s)
        if crcs is None:
            entry = self._shards[s]["files"]["crc"]
            path = os.path.join(self.directory, entry["name"])
            check_file_crc(self.directory, entry)
            fd = os.open(path, os.O_RDONLY)
            try:
                offset = check_npy(fd, path, *crc_field(len(self._column_of)).npy_layout(self._shards[s]["count"]),
                                   entry["bytes"])
                data = os.pread(fd, entry["bytes"] - offset, offset)
            finally:
                os.close(fd)
            self.io_stats.bytes_requested += entry["bytes"]
            crcs = self._row_crcs[s] = np.frombuffer(data, np.uint32).reshape(self._shards[s]["count"], -1)
        return crcs


def default_max_open_files():
    """Half the soft limit on open files (RLIMIT_NOFILE), clamped to [256, 4096]: the rest stays for the
    program, MPI and the other readers."""
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 256
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft < 0:
        return 4096
    return min(max(soft // 2, 256), 4096)


def check_npy(fd, path, shape, dtype, size):
    """Check a shard file's .npy header against what the index says; return the data offset."""
    h = read_header(fd, path)
    if h.dtype != dtype:
        raise DataError(f"shard file {path!r} holds dtype {h.dtype}, {INDEX} says {dtype}")
    if h.shape != tuple(shape):
        raise DataError(f"shard file {path!r} holds shape {h.shape}, {INDEX} says {tuple(shape)}")
    if h.fortran_order and len(shape) > 1:
        raise DataError(f"shard file {path!r} is in Fortran order; shards are written in C order")
    expected = h.offset + math.prod(shape) * dtype.itemsize
    if expected != size:
        raise DataError(f"shard file {path!r}: its header (shape {h.shape}, dtype {h.dtype}) needs {expected} "
                        f"bytes, {INDEX} says the file has {size}")
    return h.offset


def verify_directory(directory, progress=None):
    """Check every file of a data set against its index: size, .npy header, CRC-32 of the whole file. Returns
    the list of problems (empty when all is well); progress(done_bytes, total_bytes) after each file."""
    index = read_index(directory)
    fields = {f.name: f for f in index_fields(index)}
    fields["crc"] = crc_field(len(fields))
    total = sum(e["bytes"] for s in index["shards"] for e in s["files"].values())
    done, problems = 0, []
    for shard in index["shards"]:
        for name, entry in shard["files"].items():
            try:
                path = check_file_crc(directory, entry)
                with open(path, "rb") as f:
                    check_npy(f.fileno(), path, *fields[name].npy_layout(shard["count"]), entry["bytes"])
            except DataError as e:
                problems.append(str(e))
            done += entry["bytes"]
            if progress:
                progress(done, total)
    return problems
