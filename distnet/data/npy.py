"""The .npy format at the byte level, and `NpyRows`: chosen rows of .npy files or memory-mapped arrays.

    rows = NpyRows("x.npy", "y.npy", scale=1 / 255)           # or NpyRows(np.load("x.npy", mmap_mode="r"), y)
    xb, yb = rows.take(np.array([7, 3, 9]))                   # reads those three rows of each file, nothing else

A memory map passed to `fit` is read the same way: by its file name and offset, with positioned reads, never
through page faults (each fault reads megabytes ahead: see rowio.py) and never materialised.
"""
import io
import mmap
import os
import threading
from typing import NamedTuple

import numpy as np

from .format import DataError
from .rowio import RowReader, as_indices, byte_view, open_for_rows, unique_plan

MAGIC = b"\x93NUMPY"


class Header(NamedTuple):
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int          # byte offset of the data


def header_bytes(shape, dtype, size=None):
    """A version 1.0 .npy header of a C-order array, padded to `size` bytes (default: the next multiple of 64).
    A writer pads the header of a shard for its largest possible row count, so the count can be rewritten in
    place when the shard turns out shorter."""
    descr, shape = np.lib.format.dtype_to_descr(np.dtype(dtype)), tuple(int(d) for d in shape)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    need = len(MAGIC) + 4 + len(text) + 1
    size = size or -(-need // 64) * 64
    if need > size or size % 64:
        raise ValueError(f"a .npy header for shape {tuple(shape)} needs {need} bytes, more than {size}")
    body = text + " " * (size - need) + "\n"
    return MAGIC + b"\x01\x00" + (len(body)).to_bytes(2, "little") + body.encode("latin1")


def read_header(fd, path):
    """The header of an open .npy file. Raises DataError naming the file when it is not a readable .npy."""
    head = os.pread(fd, 4096, 0)
    if not head.startswith(MAGIC) or len(head) < 12:
        raise DataError(f"{path!r} is not a .npy file (it starts with {head[:10]!r})")
    major = head[6]
    if major not in (1, 2):
        raise DataError(f"{path!r}: .npy format version {major}.{head[7]} is not supported (1.0 and 2.0 are)")
    start = 10 if major == 1 else 12
    end = start + int.from_bytes(head[8:start], "little")
    if end > len(head):
        head = os.pread(fd, end, 0)
    f = io.BytesIO(head[:end])
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f, max_header_size=1 << 20)
    except ValueError as e:
        raise DataError(f"{path!r} has an unreadable .npy header: {e}") from e
    if dtype.hasobject:
        raise DataError(f"{path!r} holds Python objects (dtype {dtype}); only numeric arrays can be read by row")
    return Header(tuple(shape), dtype, bool(fortran), end)


def mapped_file(arr):
    """(file name, byte offset of arr[0] in it) when arr's memory is a read-only or shared file mapping
    (np.load(..., mmap_mode='r'), np.memmap, or a view of one), else None. Copy-on-write maps ('c') may hold
    private changes, so they count as memory."""
    owner, base = None, arr
    while base is not None and not isinstance(base, mmap.mmap):
        if owner is None and isinstance(base, np.memmap):
            owner = base
        base = getattr(base, "base", None)
    if base is None or owner is None or owner.filename is None or owner.mode == "c":
        return None
    start = np.frombuffer(base, np.uint8).ctypes.data
    mapped_from = owner.offset - owner.offset % mmap.ALLOCATIONGRANULARITY
    return os.fspath(owner.filename), mapped_from + arr.ctypes.data - start


def _rows_contiguous(arr):
    """Each row (arr[i]) is one C-contiguous block and rows go forward in memory."""
    if arr.ndim == 0 or (arr.shape[0] > 1 and arr.strides[0] < arr.dtype.itemsize * int(np.prod(arr.shape[1:]))):
        return False
    expected = arr.dtype.itemsize
    for dim, stride in zip(reversed(arr.shape[1:]), reversed(arr.strides[1:])):
        if dim > 1 and stride != expected:
            return False
        expected *= dim
    return True


class FileRows:
    """One array stored in a file: rows of `shape` and `dtype`, row i at offset + i * stride."""

    def __init__(self, path, offset, stride, length, shape, dtype):
        self.path, self.offset, self.stride, self.length = os.fspath(path), int(offset), int(stride), int(length)
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape))
        self.fd = open_for_rows(self.path)

    @classmethod
    def from_npy(cls, path):
        fd = os.open(path, os.O_RDONLY)
        try:
            h = read_header(fd, os.fspath(path))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if not h.shape:
            raise DataError(f"{os.fspath(path)!r} holds a scalar; expected an array with a sample dimension")
        if h.fortran_order and len(h.shape) > 1:
            raise DataError(f"{os.fspath(path)!r} is in Fortran order; rows are not contiguous. Save it with "
                            "np.save(path, np.ascontiguousarray(a))")
        row_bytes = h.dtype.itemsize * int(np.prod(h.shape[1:]))
        if h.offset + h.shape[0] * row_bytes > size:
            raise DataError(f"{os.fspath(path)!r} is truncated: its header says shape {h.shape} "
                            f"({h.offset + h.shape[0] * row_bytes} bytes), the file has {size}")
        rows = cls(path, h.offset, row_bytes, h.shape[0], h.shape[1:], h.dtype)
        return rows

    def fill(self, raw, rows, positions):
        """The read job (see rowio.read_rows) putting file rows `rows` (sorted, unique) at `positions` of raw."""
        return self.fd, self.path, self.offset, self.stride, self.row_bytes, rows, byte_view(raw), positions

    def close(self):
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "fd"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.fd = open_for_rows(self.path)


class MemoryRows:
    """An array in memory (or a map whose rows are not laid out contiguously): gathered with np.take."""

    def __init__(self, arr):
        self.arr, self.length, self.shape, self.dtype = arr, arr.shape[0], arr.shape[1:], arr.dtype

    def fill(self, raw, rows, positions):
        raw[positions] = np.take(self.arr, rows, axis=0)

    def close(self):
        pass


def open_rows(source):
    """A FileRows or MemoryRows for a .npy path, a memory-mapped array, or an in-memory array."""
    if isinstance(source, (str, os.PathLike)):
        return FileRows.from_npy(source)
    arr = np.asarray(source) if not isinstance(source, np.ndarray) else source
    if arr.ndim == 0:
        raise ValueError(f"NpyRows expects arrays with a sample dimension, received a scalar {arr!r}")
    where = mapped_file(arr)
    if where is None or not _rows_contiguous(arr) or arr.dtype.hasobject:
        return MemoryRows(arr)
    return FileRows(where[0], where[1], arr.strides[0], arr.shape[0], arr.shape[1:], arr.dtype)


class NpyRows(RowReader):
    """Samples of one or more equally long arrays (paths of .npy files, memory-mapped arrays, or arrays),
    read row by row.

    take(indices) -> one array per source: (len(indices), *shape) rows in the order of `indices`."""

    def __init__(self, *sources, scale=None, dtype=None, names=None, io_threads=1):
        if not sources:
            raise ValueError("NpyRows expects at least one source (.npy path or array), received none")
        names = tuple(names) if names else tuple(["x", "y"][i] if i < 2 else f"field{i}"
                                                for i in range(len(sources)))
        if len(names) != len(sources):
            raise ValueError(f"NpyRows got {len(sources)} sources but {len(names)} names {names}")
        self._sources, self._lock = [], threading.Lock()
        try:
            for s in sources:
                self._sources.append(open_rows(s))
        except BaseException:
            self.close()
            raise
        lengths = [s.length for s in self._sources]
        if len(set(lengths)) > 1:
            self.close()
            raise ValueError(f"NpyRows sources differ in number of samples: {dict(zip(names, lengths))}")
        self._init_fields(names, [s.shape for s in self._sources], [s.dtype for s in self._sources], scale, dtype,
                          io_threads)

    def __len__(self):
        return self._sources[0].length

    def take(self, indices):
        """indices: (n,) int64 sample indices, any order, repeats allowed -> tuple of (n, *shape) arrays."""
        idx = as_indices(indices, len(self), "NpyRows")
        rows, positions, dups = unique_plan(idx)
        raws = [np.empty((len(idx),) + s.shape, s.dtype) for s in self._sources]
        with self._lock:      # the prefetch thread and the caller may share a reader; IOStats is not atomic
            jobs = [s.fill(raw, rows, positions) for s, raw in zip(self._sources, raws)]
            self._read([job for job in jobs if job is not None])
        for raw in raws:
            raw[dups[0]] = raw[dups[1]]
        return self._decode(raws)

    def close(self):
        for s in self._sources:
            s.close()
        super().close()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_executor")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self):
        return f"<NpyRows {len(self)} samples, fields {dict(zip(self.names, self.shapes))}>"
