"""DataParallel: everything training needs from the other workers, and the only thing training/ imports from
parallel/ (Keras calls this object a distribution strategy; `model.distribute_strategy` is the model's).

It joins the job when training starts, checks that every worker builds the same model on data of the same size,
gives every replica rank 0's weights, sums gradients (through the Reducer: fusion, buckets, compression,
overlap), sums statistics, averages non-trainable state, and gathers what checkpoints need. On one worker every
method is cheap and communication-free.
"""
import numpy as np

from . import world
from .communicator import LOCAL, MembershipChanged  # noqa: F401  (re-exported for training/)
from .reducer import Reducer


class DataParallel:
    def __init__(self, allreduce="auto", bucket_bytes=None, compression=None, topk_ratio=0.01, overlap=False):
        self.options = {"algorithm": allreduce, "bucket_bytes": bucket_bytes, "compression": compression,
                        "topk_ratio": topk_ratio, "overlap": bool(overlap)}
        self.reducer = Reducer(LOCAL, **self.options)      # validates the options now, not at fit time
        self.comm = LOCAL

    # -- the world ----------------------------------------------------------------------------------------
    def join(self):
        """Join the job (once per process; see world.join) and use its communicator from now on."""
        comm = world.join()
        if comm is not self.comm:
            self.comm = comm
            self.reducer = Reducer(comm, **self.options)
        return comm

    @property
    def rank(self):
        return self.comm.rank

    @property
    def num_workers(self):
        return self.comm.size

    @property
    def is_main(self):
        return self.comm.rank == 0

    @property
    def elastic(self):
        """True when workers may leave or join during training (a Ray group with min_workers)."""
        return self.comm.elastic

    @property
    def joining(self):
        """True on an elastic worker that joins a running job and must receive its state."""
        return self.comm.joining

    @property
    def change_requested(self):
        return self.comm.change_requested

    def recover(self):
        """After MembershipChanged, or at an agreed step boundary: wait for the new membership and use it.
        Returns {'left': old ranks gone, 'joined': number of new workers, 'size': workers now}."""
        info = self.comm.await_membership()
        self.reducer = Reducer(self.comm, **self.options)
        return info

    @property
    def overlaps(self):
        """True when gradients are summed while backward runs (needs more than one worker)."""
        return self.reducer.overlap and self.comm.size > 1

    @property
    def wire_bytes(self):
        """Bytes of gradients this worker has sent so far."""
        return self.reducer.wire_bytes

    # -- agreement ----------------------------------------------------------------------------------------
    def check_same(self, facts):
        """Raise, on every rank, if any rank's facts ({what: JSON-like value}) differ from rank 0's."""
        if self.comm.size == 1:
            return
        everyone = self.comm.allgather(facts)
        for r, theirs in enumerate(everyone):
            for key in facts:
                where, ours, other = _first_difference(everyone[0].get(key), theirs.get(key))
                if where is not None:
                    at = f" (at {_describe(key, where, everyone[0].get(key))})" if where else ""
                    hint = (f"{key.split()[0]} must be given on every rank" if None in (ours, other)
                            else "Every rank must build the same model and use data of the same size")
                    raise RuntimeError(f"Workers disagree on {key}: rank 0 has {ours!r}, rank {r} has {other!r}{at}. "
                                       f"{hint}.")

    def broadcast_(self, *arrays):
        """Overwrite each array on every worker with rank 0's, in place."""
        for a in arrays:
            if a.size:
                self.comm.broadcast_(a)

    def broadcast_int(self, value):
        """Rank 0's integer, on every worker."""
        box = np.array([value], dtype=np.int64)
        self.comm.broadcast_(box)
        return int(box[0])

    def broadcast_object(self, obj):
        """Rank 0's (small, JSON-like) object, on every worker."""
        return self.comm.allgather(obj if self.comm.rank == 0 else None)[0]

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        if self.comm.size > 1:
            self.comm.barrier()

    # -- sums ---------------------------------------------------------------------------------------------
    def sum_gradients(self, buf, n_stats):
        """Sum [grads | n_stats statistics slots] over workers, in place (one collective unless bucketed)."""
        return self.reducer.reduce_(buf, n_stats)

    def begin_gradients(self, buf, n_stats, boundaries):
        """Overlap: backward starts; the statistics are sent now, the gradients bucket by bucket."""
        self.reducer.begin(buf, n_stats, boundaries)

    def gradients_ready(self, offset):
        self.reducer.ready(offset)

    def finish_gradients(self):
        self.reducer.finish()

    def sum_(self, array):
        """Sum a float64/float32 array over workers, in place."""
        if self.comm.size > 1:
            self.comm.allreduce_(array)
        return array

    def sum_in_order(self, array):
        """sum_ from inside a step (synchronized BatchNormalization): when gradients are being summed on the
        communication thread, this sum queues behind them, so every rank issues collectives in one order."""
        if self.comm.size > 1:
            self.reducer.in_order(self.comm.allreduce_, array)
        return array

    def average_(self, array):
        """Make `array` the mean over workers, in place (e.g. BatchNormalization's moving statistics)."""
        if self.comm.size > 1 and array.size:
            self.comm.allreduce_(array)
            array *= array.dtype.type(1.0 / self.comm.size)
        return array

    def data_seed(self, seed):
        """The seed of the epoch orders: the user's global seed, else one drawn on rank 0 and shared."""
        if seed is not None:
            return seed
        return self.broadcast_int(int(np.random.default_rng().integers(2**31)))


def _describe(key, where, value):
    """'layer 0 (Dense) units' for a path into a model architecture [[class, config, weights], ...]."""
    import re
    m = re.match(r"\[(\d+)\]\[(\d)\]\.?(.*)", where) if key == "model" else None
    if not m or not isinstance(value, list) or int(m.group(1)) >= len(value):
        return where
    layer = int(m.group(1))
    part = {"0": "class", "1": m.group(3) or "config", "2": "weight shapes"}[m.group(2)]
    return f"layer {layer} ({value[layer][0]}) {part}"


def _first_difference(a, b, path=""):
    """(path, a's value, b's value) of the first place two JSON-like values differ; (None, None, None) if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            found = _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
            if found[0] is not None:
                return found
        return None, None, None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found[0] is not None:
                return found
        return None, None, None
    return (path, a, b) if a != b else (None, None, None)
