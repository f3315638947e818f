"""The sharded on-disk format: a directory of `.npy` shard files plus `index.json`.

    DIR/index.json          {"format": "distnet-shards", "version": 1, "count": 70000, "fields": [...],
                             "samples_per_shard": 4096, "shards": [...]}
    DIR/x-00000.npy         the rows [0, 4096) of field x, as stored (uint8 images stay uint8)
    DIR/y-00000.npy         the same rows of field y
    DIR/crc-00000.npy       (rows, fields) uint32: the CRC-32 of every row of every field of the shard

Each file entry of the index records its name, its size in bytes and the CRC-32 of the whole file. A field may
be written with rows padded to a multiple of the page size (`row_stride` in the index; see `row_stride`): its
files then hold a structured array {name: dtype[shape]} of itemsize row_stride, so np.load(f)[name] still
gives the rows, and a random row costs one page read instead of two half the time. The per-row
CRCs let a reader check exactly the rows it reads: checking whole files on first touch would read every shard
once per worker, N times the worker's share of the data (see reader.py).
"""
import json
import math
import os
import re
import zlib
from typing import NamedTuple

import numpy as np

FORMAT = "distnet-shards"
VERSION = 1
INDEX = "index.json"
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class DataError(ValueError):
    """A data set on disk is missing, corrupt, or does not match its index. The message names the file."""


class Field(NamedTuple):
    """One field of a data set: per-sample shape (no sample dim), dtype, and bytes from one row to the next."""
    name: str
    shape: tuple
    dtype: np.dtype
    stride: int

    @property
    def row_bytes(self):
        return self.dtype.itemsize * math.prod(self.shape)

    def npy_layout(self, count):
        """(shape, dtype) of the .npy array holding `count` rows of this field."""
        if self.stride == self.row_bytes:
            return (count,) + self.shape, self.dtype
        return (count,), np.dtype({"names": [self.name], "formats": [(self.dtype, self.shape)], "offsets": [0],
                                   "itemsize": self.stride})


def crc_field(num_fields):
    """The row checksums of a shard: (fields,) uint32 per sample."""
    return Field("crc", (num_fields,), np.dtype(np.uint32), 4 * num_fields)


def row_stride(shape, dtype, align):
    """Bytes per stored row. With `align` (e.g. the page size), a row of at least half a page is padded to a
    multiple of it when that costs at most 50% more disk: 3072-byte CIFAR rows take 4096 bytes, and reading a
    random row then reads one page, not 1.5 pages on average (2x the row instead of 1.33x)."""
    row = np.dtype(dtype).itemsize * math.prod(shape)
    if not align or row < align // 2:
        return row
    padded = -(-row // align) * align
    return padded if padded <= 1.5 * row else row


def shard_file(field, shard):
    """The file name of one field of one shard: x-00000.npy; the row checksums are field 'crc'."""
    return f"{field}-{shard:05d}.npy"


def check_field_name(name):
    if not isinstance(name, str) or not _FIELD_NAME.match(name) or name == "crc":
        raise ValueError(f"field names must be identifiers other than 'crc' (they name files), received {name!r}")
    return name


def file_crc32(path, chunk=1 << 22):
    """CRC-32 of a whole file, read in 4 MiB chunks (constant memory)."""
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


def row_crc32(rows):
    """rows: (n, row_bytes) uint8, C-contiguous -> (n,) uint32, the CRC-32 of each row."""
    view = memoryview(rows).cast("B")
    width = rows.shape[1] if rows.ndim == 2 else 0
    return np.fromiter((zlib.crc32(view[i * width:(i + 1) * width]) for i in range(rows.shape[0])),
                       dtype=np.uint32, count=rows.shape[0])


def file_entry(name, nbytes, crc):
    return {"name": name, "bytes": int(nbytes), "crc32": f"{crc & 0xFFFFFFFF:08x}"}


def write_index(directory, index):
    """Write index.json atomically: a crash leaves the old index (or none), never half of one."""
    path = os.path.join(directory, INDEX)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_index(directory):
    """The parsed and checked index of a data set directory. Raises DataError naming what is wrong."""
    path = os.path.join(directory, INDEX)
    if not os.path.isdir(directory):
        raise DataError(f"data set directory not found: {directory!r}")
    if not os.path.exists(path):
        raise DataError(f"{path!r} not found: {directory!r} is not a distnet sharded data set "
                        "(pack one with `distnet-data pack`)")
    try:
        with open(path) as f:
            index = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path!r} is not a readable JSON index: {e}") from e
    check_index(index, path)
    return index


def check_index(index, path):
    """Structural checks: format and version, fields, shard entries, and counts that add up."""
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{path!r}: expected format {FORMAT!r}, found {got!r}")
    if index.get("version") != VERSION:
        raise DataError(f"{path!r}: unknown format version {index.get('version')!r}; this distnet reads version "
                        f"{VERSION} (written by a newer distnet? upgrade it)")
    try:
        fields = index_fields(index)
        shards = index["shards"]
        counts = [int(s["count"]) for s in shards]
        total = int(index["count"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{path!r}: malformed index ({type(e).__name__}: {e})") from e
    if not fields:
        raise DataError(f"{path!r}: the index lists no fields")
    for i, s in enumerate(shards):
        names = set(s.get("files", {}))
        want = {f.name for f in fields} | {"crc"}
        if names != want:
            raise DataError(f"{path!r}: shard {i} lists files for {sorted(names)}, expected {sorted(want)}")
        for entry in s["files"].values():
            if not {"name", "bytes", "crc32"} <= set(entry):
                raise DataError(f"{path!r}: shard {i} has a file entry without name/bytes/crc32: {entry!r}")
    if sum(counts) != total or any(c < 0 for c in counts):
        raise DataError(f"{path!r}: the shard counts {counts} add up to {sum(counts)}, but the index says "
                        f"count {total}")
    return fields


def index_fields(index):
    """[Field] of an index (row_stride defaults to the unpadded row size)."""
    out = []
    for f in index["fields"]:
        shape, dtype = tuple(int(d) for d in f["shape"]), np.dtype(f["dtype"])
        out.append(Field(f["name"], shape, dtype, int(f.get("row_stride", dtype.itemsize * math.prod(shape)))))
    return out


def check_file_size(directory, entry):
    """Raise DataError if the file of an index entry is missing or has another size than recorded."""
    path = os.path.join(directory, entry["name"])
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise DataError(f"shard file {path!r} is missing (listed in {INDEX})") from None
    if size != entry["bytes"]:
        what = "truncated" if size < entry["bytes"] else "larger than recorded"
        raise DataError(f"shard file {path!r} is {what}: {INDEX} says {entry['bytes']} bytes, found {size}")
    return path


def check_file_crc(directory, entry):
    """Raise DataError if the file's CRC-32 differs from the index (reads the whole file)."""
    path = check_file_size(directory, entry)
    found = f"{file_crc32(path):08x}"
    if found != entry["crc32"]:
        raise DataError(f"shard file {path!r} is corrupt: CRC-32 {found}, {INDEX} says {entry['crc32']}")
    return path
