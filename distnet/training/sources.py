"""Data sources beyond in-memory arrays, with the same interface as adapter.ArrayData (num_samples, y, split,
inputs, batch): a row reader (distnet.data.ShardedDataset, NpyRows: only the rows of a batch are read), a
Keras PyDataset-like object (len + getitem -> one GLOBAL batch), and a generator of global batches.

Under N workers, every source keeps the global-batch contract: step i's global batch is the same on every
rank and rank r trains on its slice of it.
- a row reader: rank r reads only its slice of each global batch, in the same (seed, epoch) order as arrays;
- a PyDataset: every rank loads batch i (the dataset must give the same batch i on every rank) and keeps its
  slice, so each rank reads every batch (N times the reads of one worker); order: 0..len-1 (Keras does not
  shuffle a PyDataset either), `on_epoch_end()` is called after each epoch;
- a generator: every rank draws the next batch from its own generator, which must yield the same batches on
  every rank (seed it); `steps_per_epoch` is required. Sizes are checked against rank 0's in each step.
"""
import numpy as np

from ..data import sharding
from . import adapter


class ReaderData(adapter.IndexedData):
    """A RowReader whose fields are (x, y) or (x, y, sample_weight); rows [start, stop) of it."""
    prefetch = True             # reading is I/O: the fit loop reads the next batches on a background thread

    def __init__(self, reader, loss, output_shape, dtype, what, start=0, stop=None):
        names = getattr(reader, "names", ())
        if len(names) not in (2, 3):
            raise ValueError(f"{what}() reads (x, y) or (x, y, sample_weight) fields from {reader!r}, which has "
                             f"fields {list(names)}")
        self.reader, self.loss, self.output_shape, self.dtype = reader, loss, output_shape, np.dtype(dtype)
        self.start, self.stop = start, len(reader) if stop is None else stop
        self.many_inputs = self.many_outputs = False
        self.w = True if len(names) == 3 else None

    @property
    def num_samples(self):
        return self.stop - self.start

    @property
    def input_shapes(self):
        return [tuple(self.reader.shapes[0])]

    @property
    def y(self):
        """A few targets, prepared, so that metrics can be resolved from their shape."""
        return self.loss.prepare_targets(self.reader.take(np.arange(self.start, self.start + 1))[1],
                                         self.output_shape)

    def split(self, fraction):
        if not 0 < fraction < 1:
            raise ValueError(f"validation_split must be in (0, 1), received {fraction!r}")
        cut = self.start + int(self.num_samples * (1 - fraction))
        if cut in (self.start, self.stop):
            raise ValueError(f"validation_split={fraction} leaves no samples for training or validation out of "
                             f"{self.num_samples}")
        part = lambda a, b: ReaderData(self.reader, self.loss, self.output_shape, self.dtype, "fit", a, b)  # noqa
        return part(self.start, cut), part(cut, self.stop)

    def batch(self, idx, what):
        fields = self.reader.take(np.asarray(idx, dtype=np.int64) + self.start)
        xb = fields[0] if fields[0].dtype == self.dtype else fields[0].astype(self.dtype)
        if xb.dtype.kind == "f" and not np.isfinite(xb).all():
            bad = int(idx[np.argwhere(~np.isfinite(xb.reshape(len(idx), -1)))[0, 0]]) + self.start
            raise ValueError(f"{what}(): input x contains NaN or inf values (sample {bad} of {self.reader!r})")
        yb = self.loss.prepare_targets(fields[1], self.output_shape)
        wb = None if len(fields) < 3 else fields[2].astype(self.dtype, copy=False).reshape(-1)
        return xb, yb, wb

    def inputs(self, idx, what):
        return self.batch(idx, what)[0]


class BatchesData:
    """A PyDataset-like object (len, getitem) or a generator: each item is one global batch (x, y[, w])."""
    prefetch = False

    def __init__(self, source, loss, output_shape, dtype, steps=None):
        self.source, self.loss, self.output_shape, self.dtype = source, loss, output_shape, np.dtype(dtype)
        self.indexable = hasattr(source, "__getitem__") and hasattr(source, "__len__")
        self.steps = len(source) if self.indexable else steps
        self.iterator = None if self.indexable else iter(source)
        self.many_inputs = self.many_outputs = False
        first = self.get(0)
        self.first, self.input_shapes, self.sample_y = first, [first[0].shape[1:]], first[1]
        self.sample_size = first[0].shape[0]

    def get(self, i):
        item = self.source[i] if self.indexable else next(self.iterator)
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(f"each batch of {type(self.source).__name__} must be (x, y) or (x, y, sample_weight), "
                             f"received {type(item).__name__}")
        x = adapter.as_inputs(item[0], "fit", "model")
        y = item[1] if self.loss is None else adapter.as_targets(item[1], x.shape[0], "fit", "model", self.loss,
                                                                 self.output_shape)
        w = None if len(item) < 3 else np.asarray(item[2], dtype=self.dtype).reshape(-1)
        return x.astype(self.dtype, copy=False), y, w

    @property
    def y(self):
        return self.sample_y

    def bind(self, loss, output_shape):
        """Prepare targets for `loss` from now on (the model was built from the first batch's shapes)."""
        self.loss, self.output_shape = loss, output_shape
        x, y, w = self.first
        self.first = (x, adapter.as_targets(y, x.shape[0], "fit", "model", loss, output_shape), w)
        self.sample_y = self.first[1]
        return self
    @property
    def num_samples(self):
        return self.num_steps(None) * self.sample_size    # as far as known: the first batch's size per step

    def num_steps(self, batch_size):
        if self.steps is None:
            raise ValueError("fit() on a generator needs steps_per_epoch (a generator has no length)")
        return self.steps

    def epoch_order(self, seed, epoch, shuffle):
        return None                     # batches come in the source's own order

    def split(self, fraction):
        raise ValueError("validation_split is not supported when x is a PyDataset or a generator; pass "
                         "validation_data instead")

    def local_batch(self, order, step, batch_size, rank, size, what):
        """(global sample ids, (x, y, w)) of rank's slice of the source's batch `step`."""
        x, y, w = self.first if step == 0 and self.first is not None else self.get(step)
        self.first = None
        lo, hi = sharding.local_bounds(x.shape[0], rank, size)
        ids = np.arange(lo, hi, dtype=np.int64) + step * x.shape[0]
        return ids, (x[lo:hi], y[lo:hi], None if w is None else w[lo:hi])

    def end_epoch(self):
        if self.indexable and hasattr(self.source, "on_epoch_end"):
            self.source.on_epoch_end()


def is_reader(x):
    from ..data.rowio import RowReader
    return isinstance(x, RowReader)


def is_batches(x):
    """A PyDataset-like object or a generator/iterator of batches (not an array, list or reader)."""
    if isinstance(x, (np.ndarray, list, tuple, dict)) or is_reader(x):
        return False
    return (hasattr(x, "__getitem__") and hasattr(x, "__len__")) or hasattr(x, "__next__")
