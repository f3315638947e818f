"""Data adapters: what fit/evaluate/predict accept, checked once, served as batches of sample indices.

An adapter holds the inputs x, the targets y and per-sample weights of one call, and gathers the rows of a
batch with `batch(idx)`; it is the one place a new kind of data source plugs in. Sharding (which indices a
rank takes) lives in distnet.data.sharding; the adapter only reads what it is asked for.
"""
import numpy as np

from ..data import sharding


def _row_reader(x):
    """A NpyRows reader for a memory-mapped array (read by file offset), else None."""
    from ..data.npy import NpyRows, mapped_file
    return NpyRows(x) if mapped_file(x) else None


def check_batch_size(batch_size, what):
    """Keras's default of 32, else a positive int (bools are refused: True is not a batch size)."""
    if batch_size is None:
        return 32
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"{what}() expects batch_size to be a positive int, received {batch_size!r}")
    return int(batch_size)


def as_inputs(x, what, model_name):
    """x as a NumPy array with a batch dimension, checked (dtype, rank, non-empty) without copying it."""
    if x is None:
        raise ValueError(f"{what}() of model '{model_name}' needs input data x, received None")
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what}() expects x as a NumPy array, received {type(x).__name__}")
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{what}() expects numeric x, received an array of dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{what}() expects x with a batch dimension (rank >= 2), received shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{what}() received empty input data: x has shape {x.shape}")
    return x


def as_targets(y, n, what, model_name, loss, output_shape):
    """y checked against x's sample count, finite, and prepared for the loss (e.g. sparse labels)."""
    if y is None:
        raise ValueError(f"{what}() of model '{model_name}' needs targets y, received None")
    y = _numeric(np.asarray(y), what, "y")
    if y.ndim == 0:
        raise ValueError(f"{what}(): y must have one entry per sample of x ({n}), received a scalar {y!r}")
    if y.shape[0] != n:
        raise ValueError(f"{what}(): x and y have different numbers of samples: x has {n}, y has {y.shape[0]}")
    if y.dtype.kind == "f" and y.size and not np.all(np.isfinite(y)):
        raise ValueError(f"{what}(): y contains NaN or inf values (first at sample "
                         f"{int(np.argwhere(~np.isfinite(y.reshape(n, -1)))[0, 0])})")
    return loss.prepare_targets(y, output_shape)


def _numeric(a, what, name):
    """a as a numeric array; object arrays holding None or strings, and string arrays, are refused by name."""
    if a.dtype.kind in "US":
        raise TypeError(f"{what}(): {name} holds strings (dtype {a.dtype}); encode labels as integers first, e.g. "
                        f"classes, {name}_int = np.unique({name}, return_inverse=True)")
    if a.dtype == object:
        flat = a.reshape(-1)
        bad = next((i for i, v in enumerate(flat) if v is None or isinstance(v, (str, bytes))), None)
        if bad is not None:
            raise TypeError(f"{what}(): {name} holds a non-number ({flat[bad]!r}) at flat position {bad}")
        try:
            a = a.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{what}(): {name} must be numeric, received an object array ({e})") from None
    return a


def sample_weights(y, n, sample_weight, class_weight, dtype):
    """Per-sample weights (n,) from sample_weight and/or class_weight (multiplied), or None."""
    w = None
    if sample_weight is not None:
        w = _numeric(np.asarray(sample_weight), "fit", "sample_weight").astype(dtype).reshape(-1)
        if w.shape[0] != n:
            raise ValueError(f"sample_weight has {w.shape[0]} entries, but x has {n} samples")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            bad = int(np.argwhere(~np.isfinite(w) | (w < 0))[0, 0])
            raise ValueError(f"sample_weight must be finite and >= 0; sample {bad} has {float(w[bad])}")
    if class_weight is not None:
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be a dict {{class: weight}}, received {type(class_weight).__name__}")
        if y.ndim == 1:
            labels = y.astype(np.int64)
        elif y.shape[-1] == 1:
            labels = np.round(y.reshape(-1)).astype(np.int64)
        else:
            labels = np.argmax(y.reshape(n, -1), axis=1)
        missing = sorted(set(np.unique(labels).tolist()) - set(class_weight))
        if missing:
            raise ValueError(f"class_weight has no weight for class(es) {missing}; it has {sorted(class_weight)}")
        cw = np.array([class_weight[c] for c in labels], dtype=dtype)
        w = cw if w is None else w * cw
    return w


def structure(value, names, what):
    """One entry per name from a single value (one name), a list/tuple in order, or a dict by name."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise ValueError(f"{what} given as a dict must have exactly the keys {names}; received keys "
                             f"{sorted(value)}")
        return [value[n] for n in names]
    if len(names) == 1:
        if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], np.ndarray):
            return [value[0]]
        return [value]
    if not isinstance(value, (list, tuple)) or len(value) != len(names):
        got = f"{len(value)} entries" if isinstance(value, (list, tuple)) else type(value).__name__
        raise ValueError(f"{what} must have one entry per {names} (a list in that order or a dict), received {got}")
    return list(value)


class IndexedData:
    """What every source indexed by sample (arrays, row readers) shares: the epoch order by (seed, epoch) and
    rank r's slice of each global batch (distnet.data.sharding)."""
    prefetch = False

    def num_steps(self, batch_size):
        return sharding.num_steps(self.num_samples, batch_size)

    def epoch_order(self, seed, epoch, shuffle):
        return sharding.epoch_order(self.num_samples, seed, epoch, shuffle)

    def local_batch(self, order, step, batch_size, rank, size, what):
        """(global sample ids, (x, y, w)) of rank's slice of global batch `step`."""
        idx = sharding.local_batch(order, step, batch_size, rank, size)
        return idx, self.batch(idx, what)

    def end_epoch(self):
        pass


class ArrayData(IndexedData):
    """In-memory (or memory-mapped) arrays of one call: xs (one per model input, (n, ...)), ys (one per output,
    prepared for its loss) or None, w (n,) or None. `many_inputs`/`many_outputs` say whether batches are lists."""

    def __init__(self, xs, ys=None, w=None, dtype=np.float32, many_inputs=False, many_outputs=False,
                 keep_integers=None):
        self.xs, self.ys, self.w, self.dtype = list(xs), ys, w, np.dtype(dtype)
        self.keep_integers = list(keep_integers or [False] * len(self.xs))   # per input (Embedding ids)
        self.many_inputs, self.many_outputs = many_inputs, many_outputs
        # a memory-mapped input is read row by row (preadv of the batch's rows), never through page faults
        self.row_readers = [_row_reader(x) for x in self.xs]
        counts = {x.shape[0] for x in self.xs} | ({y.shape[0] for y in ys} if ys is not None else set())
        if len(counts) > 1:
            raise ValueError(f"all inputs and targets must have the same number of samples, received "
                             f"{[x.shape[0] for x in self.xs]} inputs and "
                             f"{[y.shape[0] for y in ys] if ys is not None else []} targets")

    @property
    def prefetch(self):
        """Read ahead on a background thread when an input is read from a file (a memory map): reading is I/O."""
        return any(r is not None for r in self.row_readers)

    @property
    def num_samples(self):
        return self.xs[0].shape[0]

    @property
    def y(self):
        """The targets as the step takes them: one array, or a list per output."""
        return None if self.ys is None else (self.ys if self.many_outputs else self.ys[0])

    def split(self, fraction):
        """(training part, validation part): the last `fraction` of the samples are held out, as in Keras."""
        if not 0 < fraction < 1:
            raise ValueError(f"validation_split must be in (0, 1), received {fraction!r}")
        cut = int(self.num_samples * (1 - fraction))
        if cut == 0 or cut == self.num_samples:
            raise ValueError(f"validation_split={fraction} leaves no samples for training or validation out of "
                             f"{self.num_samples}")

        def part(sl):
            return ArrayData([x[sl] for x in self.xs], None if self.ys is None else [y[sl] for y in self.ys],
                             None if self.w is None else self.w[sl], self.dtype, self.many_inputs, self.many_outputs,
                             self.keep_integers)
        return part(slice(None, cut)), part(slice(cut, None))

    def inputs(self, idx, what):
        """The rows `idx` of every input as the model's float type, checked for NaN/inf."""
        if not self.many_inputs:
            return self._rows(0, idx, what)
        return [self._rows(k, idx, what) for k in range(len(self.xs))]

    def _rows(self, k, idx, what):
        x, reader = self.xs[k], self.row_readers[k]
        xb = reader.take(idx)[0] if reader is not None else x.take(idx, axis=0)
        if self.keep_integers[k] and xb.dtype.kind in "iu":
            return xb
        if xb.dtype != self.dtype:
            xb = xb.astype(self.dtype)
        if xb.dtype.kind == "f" and not np.isfinite(xb).all():
            row = np.argwhere(~np.isfinite(xb.reshape(len(idx), -1)))[0]
            bad = int(idx[row[0]])
            original = np.asarray(x[bad]).reshape(-1)[row[1]]
            if np.isfinite(original):
                raise ValueError(f"{what}(): input x has a value beyond the range of {self.dtype} (sample {bad}: "
                                 f"{float(original)!r}), which becomes inf; rescale the data")
            raise ValueError(f"{what}(): input x contains NaN or inf values (sample {bad}); clean the data "
                             "or drop those samples")
        return xb

    def batch(self, idx, what):
        """(x rows, y rows, w rows or None) of the samples `idx` (lists for several inputs/outputs)."""
        yb = [y[idx] for y in self.ys] if self.many_outputs else self.ys[0][idx]
        return self.inputs(idx, what), yb, (None if self.w is None else self.w[idx])
