"""Writing the sharded format (see format.py) from batches, in constant memory.

    with ShardWriter("cifar-packed", samples_per_shard=8192) as w:
        for xb, yb in batches():                 # any iterator: the data set never needs to fit in memory
            w.write(x=xb, y=yb)                  # xb: (n, 32, 32, 3) uint8 stays uint8 on disk

    write_arrays("mnist-packed", x_train, y_train)   # arrays (or memory maps), written shard by shard
"""
import os
import re
import zlib

import numpy as np

from .format import (
    FORMAT,
    INDEX,
    VERSION,
    Field,
    check_field_name,
    crc_field,
    file_crc32,
    file_entry,
    row_crc32,
    row_stride,
    shard_file,
    write_index,
)
from .npy import header_bytes

_OURS = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*-\d{5}\.npy$|^index\.json(\.tmp)?$")


class _OpenFile:
    """A shard file of one field being written: the .npy header first (sized for a full shard), then rows
    (padded to the field's stride); its CRC-32 as it goes."""

    def __init__(self, path, field, capacity, header_size=None):
        self.path, self.field = path, field
        self.header = header_bytes(*field.npy_layout(capacity), size=header_size)
        self.f = open(path, "wb")     # noqa: SIM115 (open across write calls; closed by finish/abort)
        self.f.write(self.header)
        self.crc, self.bytes = zlib.crc32(self.header), len(self.header)

    def append(self, rows):
        """rows: (k, *shape) C-contiguous."""
        k, f = rows.shape[0], self.field
        flat = rows.reshape(k, -1).view(np.uint8) if rows.size else np.zeros((k, 0), np.uint8)
        if f.stride != f.row_bytes:
            padded = np.zeros((k, f.stride), np.uint8)
            padded[:, :f.row_bytes] = flat
            flat = padded
        data = memoryview(flat.reshape(-1))
        self.f.write(data)
        self.crc, self.bytes = zlib.crc32(data, self.crc), self.bytes + len(data)

    def finish(self, count, capacity):
        """Close the file; when the shard is short, rewrite the row count in the header (same length)."""
        if count != capacity:
            self.f.seek(0)
            self.f.write(header_bytes(*self.field.npy_layout(count), size=len(self.header)))
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        crc = self.crc if count == capacity else file_crc32(self.path)   # one shard re-read, once per data set
        return file_entry(os.path.basename(self.path), self.bytes, crc)

    def abort(self):
        self.f.close()
        os.remove(self.path)


class ShardWriter:
    """Writes batches of named fields (x=..., y=...) into shards of `samples_per_shard` samples; `close()`
    writes index.json (atomically), without which the directory is not a data set.

    The first write fixes the fields: their names, per-sample shapes and dtypes (stored as given: uint8 stays
    uint8). Every later write must match them.

    row_align: None, "page" or a byte count: pad rows of at least half that size to a multiple of it (when
    that costs at most 50% more disk; see format.row_stride), so reading a random row reads whole pages of it
    only. E.g. CIFAR rows (3072 bytes): 1.33x the bytes of the rows read from disk instead of 2x."""

    def __init__(self, directory, samples_per_shard=4096, overwrite=False, row_align=None):
        if not isinstance(samples_per_shard, (int, np.integer)) or samples_per_shard < 1:
            raise ValueError(f"ShardWriter expects samples_per_shard to be a positive int, "
                             f"received {samples_per_shard!r}")
        self.row_align = _page_size() if row_align == "page" else row_align
        if self.row_align is not None and (not isinstance(self.row_align, int) or self.row_align < 64 or
                                           self.row_align & (self.row_align - 1)):
            raise ValueError(f"ShardWriter expects row_align to be None, 'page' or a power of two >= 64, "
                             f"received {row_align!r}")
        self.directory, self.samples_per_shard = os.fspath(directory), int(samples_per_shard)
        _prepare_directory(self.directory, overwrite)
        self.fields = None              # [Field]
        self.count, self.index = 0, None
        self._shards, self._files, self._crcs, self._in_shard = [], None, None, 0

    def write(self, **batch):
        """batch: field name -> (n, *shape) array; all fields with the same n."""
        arrays = self._check_batch(batch)
        n = next(iter(arrays.values())).shape[0]
        pos = 0
        while pos < n:
            if self._files is None:
                self._start_shard()
            k = min(n - pos, self.samples_per_shard - self._in_shard)
            for j, (name, a) in enumerate(arrays.items()):
                rows = np.ascontiguousarray(a[pos:pos + k])
                self._files[name].append(rows)
                self._crcs[self._in_shard:self._in_shard + k, j] = row_crc32(rows.reshape(k, -1).view(np.uint8))
            self._in_shard, self.count, pos = self._in_shard + k, self.count + k, pos + k
            if self._in_shard == self.samples_per_shard:
                self._finish_shard()

    def close(self):
        """Finish the last shard and write index.json. Returns the index (a dict)."""
        if self.index is not None:
            return self.index
        if self.fields is None:
            raise ValueError(f"ShardWriter({self.directory!r}) was closed before any batch was written; a data set "
                             "needs at least its fields")
        if self._files is not None:
            self._finish_shard()
        self.index = {"format": FORMAT, "version": VERSION, "count": self.count,
                      "samples_per_shard": self.samples_per_shard,
                      "fields": [{"name": f.name, "shape": list(f.shape), "dtype": f.dtype.str,
                                  "row_stride": f.stride} for f in self.fields],
                      "checksum": "crc32", "shards": self._shards}
        write_index(self.directory, self.index)
        return self.index

    def abort(self):
        """Stop without writing the index, and remove the shard files written so far."""
        for f in (self._files or {}).values():
            f.abort()
        self._files = None
        for shard in self._shards:
            for entry in shard["files"].values():
                os.remove(os.path.join(self.directory, entry["name"]))
        self._shards = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- internals ----------------------------------------------------------------------------------------
    def _check_batch(self, batch):
        if not batch:
            raise ValueError("ShardWriter.write expects fields as keywords, e.g. write(x=images, y=labels)")
        arrays = {check_field_name(k): np.asarray(v) for k, v in batch.items()}
        for k, a in arrays.items():
            if a.ndim == 0 or a.dtype.hasobject or a.dtype.kind not in "biuf":
                raise ValueError(f"ShardWriter: field {k!r} must be a numeric array with a sample dimension, "
                                 f"received {'a scalar' if a.ndim == 0 else f'dtype {a.dtype}'}")
        lengths = {k: a.shape[0] for k, a in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"ShardWriter.write: fields differ in number of samples: {lengths}")
        got = [Field(k, a.shape[1:], a.dtype, row_stride(a.shape[1:], a.dtype, self.row_align))
               for k, a in arrays.items()]
        if self.fields is None:
            self.fields = got
        elif got != self.fields:
            raise ValueError(f"ShardWriter.write: this batch has fields {_describe(got)}, earlier batches had "
                             f"{_describe(self.fields)}")
        return arrays

    def _start_shard(self):
        i, cap = len(self._shards), self.samples_per_shard
        self._files = {f.name: _OpenFile(os.path.join(self.directory, shard_file(f.name, i)), f, cap,
                                         self.row_align if f.stride != f.row_bytes else None)
                       for f in self.fields}
        self._crcs = np.zeros((cap, len(self.fields)), np.uint32)
        self._in_shard = 0

    def _finish_shard(self):
        i, n, cap = len(self._shards), self._in_shard, self.samples_per_shard
        files = {name: f.finish(n, cap) for name, f in self._files.items()}
        crc_file = _OpenFile(os.path.join(self.directory, shard_file("crc", i)), crc_field(len(self.fields)), n)
        crc_file.append(self._crcs[:n])
        files["crc"] = crc_file.finish(n, n)
        self._shards.append({"count": n, "files": files})
        self._files = None


def _describe(fields):
    return ", ".join(f"{f.name}: {tuple(f.shape)} {f.dtype}" for f in fields)


def _page_size():
    return os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _prepare_directory(directory, overwrite):
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise FileExistsError(f"{directory!r} exists and is not a directory")
    os.makedirs(directory, exist_ok=True)
    present = os.listdir(directory)
    if present and not overwrite:
        what = f"a data set ({INDEX})" if INDEX in present else f"{len(present)} file(s)"
        raise FileExistsError(f"{directory!r} already holds {what}; choose a new directory or overwrite it "
                              "(overwrite=True, distnet-data pack --overwrite)")
    for name in present:
        if _OURS.match(name):
            os.remove(os.path.join(directory, name))


def write_arrays(directory, x, y=None, samples_per_shard=4096, overwrite=False, row_align=None, progress=None,
                 **fields):
    """Pack arrays (in memory or memory-mapped: read one shard at a time) as fields x, y and any others.
    progress(done, total) is called after each shard. Returns the index."""
    arrays = {"x": x, **({"y": y} if y is not None else {}), **fields}
    n = len(x)
    lengths = {k: len(a) for k, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"write_arrays: the arrays differ in number of samples: {lengths}")
    with ShardWriter(directory, samples_per_shard, overwrite, row_align) as w:
        for start in range(0, n, samples_per_shard):
            w.write(**{k: a[start:start + samples_per_shard] for k, a in arrays.items()})
            if progress:
                progress(min(start + samples_per_shard, n), n)
    return w.index
