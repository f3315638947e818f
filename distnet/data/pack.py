"""Sources for `distnet-data pack` (batches from .npy arrays, MNIST IDX files or a CSV) and its progress display.

Each source returns (total samples or None, an iterator of {"x": (n, ...), "y": (n,)} batches), so packing runs
in the memory of one batch: .npy files are memory-mapped, a CSV is parsed `batch` lines at a time.
"""
import gzip
import itertools
import sys
import time

import numpy as np

from .datasets import read_idx


def array_batches(x_path, y_path=None, batch=4096):
    """Batches of x (and y) from .npy files, read through memory maps (one batch in memory at a time)."""
    x = np.load(x_path, mmap_mode="r", allow_pickle=False)
    y = None if y_path is None else np.load(y_path, mmap_mode="r", allow_pickle=False)
    if x.ndim == 0 or (y is not None and (y.ndim == 0 or y.shape[0] != x.shape[0])):
        raise ValueError(f"{x_path!r} has shape {x.shape} and {y_path!r} shape {None if y is None else y.shape}: "
                         "expected arrays with the same number of samples (first dimension)")
    return x.shape[0], _slices({"x": x} if y is None else {"x": x, "y": y}, x.shape[0], batch)


def mnist_batches(images_path, labels_path, batch=4096):
    """Batches of MNIST IDX files (gzipped or raw): x (n, 28, 28) uint8, y (n,) uint8."""
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{images_path!r} holds {x.shape[0]} images but {labels_path!r} {y.shape[0]} labels")
    return x.shape[0], _slices({"x": x, "y": y}, x.shape[0], batch)


def _slices(arrays, n, batch):
    for start in range(0, n, batch):
        yield {k: a[start:start + batch] for k, a in arrays.items()}


def csv_batches(path, label_column, batch=4096, dtype="float32", label_dtype="int64", shape=None, skip_rows=0):
    """Batches of a numeric CSV without quoting: column `label_column` (negative counts from the end) is y,
    the others x, cast to dtype and reshaped to `shape` per sample (e.g. (28, 28)). The total is unknown."""
    dtype, label_dtype = np.dtype(dtype), np.dtype(label_dtype)
    return None, _csv_chunks(path, int(label_column), batch, dtype, label_dtype, shape, skip_rows)


def _csv_chunks(path, k, batch, dtype, label_dtype, shape, skip_rows):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        lines = itertools.islice(f, skip_rows, None)
        first = skip_rows + 1
        while True:
            chunk = list(itertools.islice(lines, batch))
            if not chunk:
                return
            where = f"{path!r} lines {first}-{first + len(chunk) - 1}"
            try:
                a = np.loadtxt(chunk, delimiter=",", dtype=np.float64, ndmin=2)
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
            if not -a.shape[1] <= k < a.shape[1]:
                raise ValueError(f"{where}: --label-column {k} is outside the {a.shape[1]} columns")
            yield {"x": _cast(np.delete(a, k, axis=1), dtype, shape, where), "y": _cast(a[:, k], label_dtype, None,
                                                                                       where, "label")}
            first += len(chunk)


def _cast(a, dtype, shape, where, what="value"):
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        bad = np.flatnonzero((a != np.round(a)) | (a < info.min) | (a > info.max))
        if bad.size:
            raise ValueError(f"{where}: {what} {a.reshape(-1)[bad[0]].item()!r} does not fit {dtype}; choose another "
                             f"dtype (--dtype / --label-dtype float32)")
    if shape is not None:
        try:
            a = a.reshape((a.shape[0],) + tuple(shape))
        except ValueError:
            raise ValueError(f"{where}: rows of {a.shape[1]} values cannot be shaped {tuple(shape)}") from None
    return a.astype(dtype)


class Progress:
    """A progress bar on a terminal (redrawn at most 10 times a second), plain lines otherwise (every 10%, or
    every 10 s when the total is unknown)."""

    def __init__(self, total, what="samples", stream=None):
        self.total, self.what, self.stream = total, what, stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.done, self.nbytes, self.next_line = 0, 0, 0.1

    def update(self, done, nbytes=0):
        self.done, self.nbytes = done, nbytes
        now = time.monotonic()
        if self.tty and now - self.last >= 0.1:
            self.last = now
            self.stream.write("\r" + self._bar() + "\x1b[K")
            self.stream.flush()
        elif not self.tty and self._line_due(now):
            self.stream.write(self._text() + "\n")
            self.stream.flush()

    def finish(self):
        if self.tty:
            self.stream.write("\r" + self._bar() + "\x1b[K\n")
        elif self.next_line <= 1 or not self.total:      # the 100% line is not out yet
            self.stream.write(self._text() + "\n")
        self.stream.flush()

    def _line_due(self, now):
        if self.total:
            if self.done / self.total >= self.next_line:
                self.next_line = (int(self.done / self.total * 10) + 1) / 10
                return True
            return False
        if now - self.last >= 10:
            self.last = now
            return True
        return False

    def _text(self):
        elapsed = max(time.monotonic() - self.start, 1e-9)
        share = f" ({int(100 * self.done / self.total)}%)" if self.total else ""
        rate = f"{self.nbytes / 1e6 / elapsed:,.1f} MB/s, {elapsed:.1f} s"
        if self.what == "bytes":
            total = f"/{self.total / 1e6:,.1f}" if self.total else ""
            return f"{self.done / 1e6:,.1f}{total} MB{share}, {rate}"
        total = f"/{self.total:,}" if self.total else ""
        return f"{self.done:,}{total} {self.what}{share}, {self.nbytes / 1e6:,.1f} MB, {rate}"

    def _bar(self, width=30):
        if not self.total:
            return self._text()
        filled = int(width * self.done / self.total)
        return f"[{'#' * filled}{'.' * (width - filled)}] " + self._text()
