"""Reading chosen rows of a file with positioned reads, and decoding them for the model.

Why not a memory map: with a cold page cache, gathering 2,560 random samples (7 MB) through a map of a 2.1 GB
.npy read 2,045 MB from disk (read-ahead and large folios fetch megabytes per fault), while `os.preadv` of the
same rows read 17 MB. So rows are read with one `preadv` per run of nearby rows, straight into the rows of the
output array (an iovec per row, in the caller's order: no extra copy).
"""
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import backend
from .format import DataError

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)


class IOStats:
    """What a reader asked the OS for: bytes requested and read calls. Deterministic, unlike /proc/self/io, which
    counts what the disk delivered (page granularity, read-ahead) and nothing on a warm cache."""
    __slots__ = ("bytes_requested", "reads")

    def __init__(self):
        self.reset()

    def reset(self):
        self.bytes_requested, self.reads = 0, 0

    def __repr__(self):
        return f"IOStats(bytes_requested={self.bytes_requested}, reads={self.reads})"


class RowReader:
    """What a trainer reads samples through: len(reader), `shapes` and `dtypes` of each field as the model sees
    them, take(indices) -> one (len(indices), *shape) array per field, rows in the order of `indices`.
    Subclasses (ShardedDataset, NpyRows) set `names`, `_shapes` and `_decoding` and implement take/close."""
    names = ()
    _executor = None

    def _init_fields(self, names, shapes, stored_dtypes, scale, dtype, io_threads=1):
        if not isinstance(io_threads, int) or io_threads < 1:
            raise ValueError(f"{type(self).__name__} expects io_threads to be a positive int, received "
                             f"{io_threads!r}")
        self.names, self._shapes = tuple(names), tuple(tuple(s) for s in shapes)
        self._decoding = decoding(self.names, stored_dtypes, scale, dtype)
        self.io_stats, self.io_threads = IOStats(), io_threads

    def _read(self, jobs):
        """Run read_rows jobs (fd, path, offset, stride, row_bytes, rows, dest, positions). With io_threads > 1
        they are cut into pieces and read concurrently: preadv releases the GIL, and a disk with several reads
        outstanding answers several times faster (measured: 7,200 random 3 KB rows/s on one thread, 26,000 on
        four, cold cache)."""
        if self.io_threads > 1:
            jobs = [piece for job in jobs for piece in _split(job, self.io_threads)]
        if self.io_threads == 1 or len(jobs) < 2:
            for job in jobs:
                read_rows(*job, self.io_stats)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.io_threads, thread_name_prefix="distnet-io")
        stats = [IOStats() for _ in jobs]
        for _ in self._executor.map(lambda job, st: read_rows(*job, st), jobs, stats):
            pass
        self.io_stats.bytes_requested += sum(st.bytes_requested for st in stats)
        self.io_stats.reads += sum(st.reads for st in stats)

    @property
    def shapes(self):
        """Per field, the shape of one sample (without the sample dimension)."""
        return self._shapes

    @property
    def dtypes(self):
        """Per field, the dtype take() returns (after dtype/scale decoding)."""
        return tuple(d for d, _ in self._decoding)

    def _decode(self, raws):
        return tuple(decode(raw, d, sc) for raw, (d, sc) in zip(raws, self._decoding))

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _split(job, pieces, min_rows=16):
    """A read job cut into up to `pieces` jobs of consecutive rows (at least min_rows each)."""
    rows, positions = job[5], job[7]
    k = min(pieces, len(rows) // min_rows)
    if k < 2:
        return [job]
    cuts = np.linspace(0, len(rows), k + 1).astype(np.int64).tolist()
    return [job[:5] + (rows[a:b], job[6], positions[a:b]) for a, b in itertools.pairwise(cuts)]


def open_for_rows(path):
    """A read-only fd for row reads. POSIX_FADV_RANDOM turns the kernel's read-ahead off for it: the reads are
    exactly the pages of the rows asked for."""
    fd = os.open(path, os.O_RDONLY)
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
    return fd


def as_indices(indices, length, what):
    """indices as a 1-D int64 array within [0, length); echoes what was received when not."""
    idx = np.asarray(indices)
    if idx.ndim != 1:
        raise ValueError(f"{what}.take expects a 1-D array of sample indices, received shape {idx.shape}")
    if idx.size == 0:
        return idx.astype(np.int64)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{what}.take expects integer sample indices, received dtype {idx.dtype}")
    idx = idx.astype(np.int64, copy=False)
    lo, hi = int(idx.min()), int(idx.max())
    if lo < 0 or hi >= length:
        raise IndexError(f"{what}.take: sample index {lo if lo < 0 else hi} is out of range for {length} samples")
    return idx


def unique_plan(idx):
    """Sort the requested indices once: (sorted unique indices, the output position that receives each one,
    (dst, src) position pairs to copy for repeated indices)."""
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    first = np.ones(len(s), dtype=bool)
    first[1:] = s[1:] != s[:-1]
    lead = order[np.maximum.accumulate(np.where(first, np.arange(len(s)), 0))]   # first position of each value
    return s[first], order[first], (order[~first], lead[~first])


def read_rows(fd, path, offset, stride, row_bytes, rows, dest, positions, stats, max_gap=PAGE):
    """Read file rows `rows` (sorted, unique) of `row_bytes` bytes each, row r starting at offset + r * stride,
    into dest (a writable 1-D byte memoryview of (n, row_bytes) rows) at row `positions[i]` for rows[i].

    Rows closer than `max_gap` bytes are read in one call, the gap into a scratch buffer: a gap below a page
    costs the disk nothing (it reads whole pages) and saves a system call per row."""
    if len(rows):
        read_scattered(np.full(len(rows), fd), {fd: path}, offset + rows * stride, row_bytes, dest, positions, stats,
                       max_gap)


def read_scattered(fds, paths, starts, row_bytes, dest, positions, stats, max_gap=PAGE):
    """Rows of several files in one pass: row i (`row_bytes` bytes) at byte starts[i] of file fds[i] goes to row
    positions[i] of dest. Rows are grouped by file and sorted by start within a file; paths: {fd: path}.
    One call per run of rows of one file closer than max_gap (as read_rows)."""
    if len(starts) == 0:
        return
    fds, starts = np.asarray(fds), np.asarray(starts, dtype=np.int64)
    gaps = starts[1:] - (starts[:-1] + row_bytes)
    scratch = memoryview(bytearray(max_gap))
    # one call per run; the loop is per row only to build the iovecs
    joined = np.concatenate(([False], (gaps <= max_gap) & (fds[1:] == fds[:-1]))).tolist()
    gaps_list, starts_list, pos_list, fd_list = gaps.tolist(), starts.tolist(), positions.tolist(), fds.tolist()
    bufs, begin, want, fd = [], starts_list[0], 0, fd_list[0]
    for i, p in enumerate(pos_list):
        if not joined[i] or len(bufs) >= IOV_MAX - 1:
            if bufs:
                _preadv_full(fd, paths[fd], bufs, begin, want, stats)
            bufs, begin, want, fd = [], starts_list[i], 0, fd_list[i]
        elif gaps_list[i - 1]:
            bufs.append(scratch[:gaps_list[i - 1]])
            want += gaps_list[i - 1]
        bufs.append(dest[p * row_bytes:(p + 1) * row_bytes])
        want += row_bytes
    _preadv_full(fd, paths[fd], bufs, begin, want, stats)


def read_span(fd, path, offset, dest, stats):
    """Read len(dest) bytes at offset into dest (a writable byte memoryview) with one call (more if short)."""
    if len(dest):
        _preadv_full(fd, path, [dest], offset, len(dest), stats)


def _preadv_full(fd, path, bufs, offset, want, stats):
    """preadv `want` bytes into bufs, continuing after short reads. A read that ends early means the file is
    shorter than its header and index say."""
    stats.bytes_requested += want
    stats.reads += 1
    n = os.preadv(fd, bufs, offset)
    end = offset + want
    while n < want:
        if n == 0:
            raise DataError(f"{path!r} ended at byte {offset}, expected at least {end} bytes (truncated?)")
        offset, want = offset + n, want - n
        while n >= len(bufs[0]):
            n -= len(bufs[0])
            bufs = bufs[1:]
        bufs[0] = bufs[0][n:]
        stats.reads += 1
        n = os.preadv(fd, bufs, offset)


def byte_view(raw):
    """A writable flat byte view of a C-contiguous array (one row after another)."""
    return memoryview(raw.reshape(-1).view(np.uint8)) if raw.size else memoryview(bytearray(0))


def decoding(names, stored, scale=None, dtype=None):
    """Per field, (dtype the model sees, scale or None). A scalar scale/dtype applies to the first field (the
    input x); a dict gives them per field name. Scaling an integer field makes it floatx unless dtype says."""
    scales, dtypes = _per_field(scale, names, "scale"), _per_field(dtype, names, "dtype")
    out = []
    for name, st in zip(names, stored):
        s, d = scales.get(name), dtypes.get(name)
        d = np.dtype(d) if d is not None else (np.dtype(backend.floatx()) if s is not None and st.kind in "biu"
                                              else st.newbyteorder("="))
        if s is not None and d.kind != "f":
            raise ValueError(f"field {name!r}: scale={s!r} needs a float dtype, received dtype={d}")
        out.append((d, None if s is None else float(s)))
    return out


def _per_field(value, names, what):
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"{what} names unknown field(s) {unknown}; the fields are {list(names)}")
        return dict(value)
    return {names[0]: value}


def decode(raw, dtype, scale):
    """raw rows as stored -> what the model sees: cast to dtype, then multiplied by scale (in place)."""
    if scale is None and raw.dtype == dtype:
        return raw
    out = raw.astype(dtype)
    if scale is not None:
        out *= out.dtype.type(scale)
    return out
