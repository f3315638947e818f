"""The gradient reducer: the only way a model talks to the communicator during a training step.

It sums the model's flat gradient buffer over all workers, in place. The buffer ends with a few statistics slots
(sample count, loss and metric sums) that are always summed exactly; the gradients before them are summed
- in one collective on the whole buffer (tensor fusion), or one per `bucket_bytes` slice;
- compressed if asked: 'fp16'/'bf16' travel at half the bytes and are summed in float32 (ring only), 'topk'
  sends the largest `topk_ratio` of entries (index + value) and keeps the rest as error feedback for the next
  step (Lin et al., Deep Gradient Compression);
- overlapped with backward if asked: buckets are cut from the end of the buffer (the last layers, whose
  gradients are ready first) and summed on a communication thread while backward continues; every rank issues
  them in the same order, and the optimizer waits for all of them.
"""
import concurrent.futures

import numpy as np

from . import ring

COMPRESSIONS = (None, "none", "fp16", "bf16", "topk")


class Reducer:
    def __init__(self, comm, algorithm="auto", bucket_bytes=None, compression=None, topk_ratio=0.01,
                 overlap=False):
        if algorithm not in ("auto", "ring", "native", "hierarchical"):
            raise ValueError(f"allreduce must be 'auto', 'ring', 'native' or 'hierarchical', received {algorithm!r}")
        if bucket_bytes is not None and (not isinstance(bucket_bytes, int) or bucket_bytes <= 0):
            raise ValueError(f"bucket_bytes must be a positive int or None, received {bucket_bytes!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of None, 'fp16', 'bf16', 'topk', received {compression!r}")
        if not 0 < topk_ratio <= 1:
            raise ValueError(f"topk_ratio must be in (0, 1], received {topk_ratio!r}")
        if overlap and compression == "topk":
            raise ValueError("overlap=True works with compression None, 'fp16' or 'bf16', not 'topk' (top-k "
                             "selects over the whole gradient at once)")
        self.comm, self.algorithm, self.bucket_bytes = comm, algorithm, bucket_bytes
        self.compression = None if compression == "none" else compression
        self.topk_ratio, self.overlap = topk_ratio, overlap
        self.codec = ring.CODECS.get(self.compression)
        self.wire_bytes = 0            # bytes this worker has sent so far (for benchmarks)
        self._residual = None
        self._pool = None
        self._pending = []

    # -- plain (blocking) reduction ------------------------------------------------------------------------
    def reduce_(self, buf, n_stats=0):
        """Sum buf over all workers, in place; its last n_stats entries are summed exactly, uncompressed."""
        if self.comm.size == 1:
            return buf
        grads, stats = (buf[:buf.size - n_stats], buf[buf.size - n_stats:]) if n_stats else (buf, None)
        if self.compression == "topk":
            self._topk(grads)
        elif self.codec is not None:
            for piece in self._buckets(grads):
                self._ring(piece)
        else:
            for piece in self._buckets(buf if stats is not None and self.bucket_bytes is None else grads):
                self._sum(piece)
            if self.bucket_bytes is None:
                return buf
        if stats is not None:
            self.comm.allreduce_(stats)          # a few slots: the communicator's choice for small buffers
        return buf

    def _buckets(self, buf):
        if self.bucket_bytes is None:
            return [buf]
        step = max(1, self.bucket_bytes // buf.itemsize)
        return [buf[start:start + step] for start in range(0, buf.size, step)]

    def _sum(self, piece):
        self.comm.allreduce_(piece, algorithm=self.algorithm)
        n = self.comm.size
        self.wire_bytes += int(2 * (n - 1) / n * piece.nbytes)

    def _ring(self, piece):
        self.comm.allreduce_(piece, algorithm="ring", codec=self.codec)
        n = self.comm.size
        self.wire_bytes += int(2 * (n - 1) / n * piece.size * np.dtype(self.codec.wire_dtype).itemsize)

    def _topk(self, grads):
        """Sparse allreduce with error feedback: send the k largest |g + residual|, keep the rest for later."""
        if self._residual is None or self._residual.size != grads.size:
            self._residual = np.zeros_like(grads)
        acc = self._residual
        acc += grads
        k = max(1, int(self.topk_ratio * grads.size))
        idx = np.argpartition(np.abs(acc), grads.size - k)[grads.size - k:].astype(np.int32)
        mine = np.empty(2 * k, dtype=np.float32)
        mine[:k] = idx.view(np.float32)              # indices travel bit-for-bit inside the float32 message
        mine[k:] = acc[idx]
        acc[idx] = 0                                 # sent: no longer owed
        everyone = np.empty(2 * k * self.comm.size, dtype=np.float32)
        self.comm.allgather_array(mine, everyone)
        parts = everyone.reshape(self.comm.size, 2, k)
        all_idx = parts[:, 0, :].copy().view(np.int32).reshape(-1)
        grads[...] = np.bincount(all_idx, weights=parts[:, 1, :].reshape(-1), minlength=grads.size)
        self.wire_bytes += int((self.comm.size - 1) * mine.nbytes)

    # -- overlapped reduction ------------------------------------------------------------------------------
    def begin(self, buf, n_stats, boundaries):
        """Start of backward: plan buckets (from the end, cut at layer boundaries) and sum the statistics,
        which are ready already. boundaries: the flat offsets where layers' gradients start."""
        if self.comm.size == 1:
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="distnet-allreduce")
        self._buf, self._pending = buf, []
        limit = self.bucket_bytes or (1 << 20)
        grads_end = buf.size - n_stats
        cuts, end = [], grads_end
        for start in sorted(set(boundaries), reverse=True):
            if start < end and (end - start) * buf.itemsize >= limit:
                cuts.append((start, end))
                end = start
        if end > 0:
            cuts.append((0, end))
        self._plan = cuts                             # last layers first
        self._stats = buf[grads_end:]
        self._submit(self._stats, exact=True)

    def ready(self, offset):
        """Backward has finished every gradient from `offset` to the end: send the buckets that are complete."""
        while self.comm.size > 1 and self._plan and self._plan[0][0] >= offset:
            start, end = self._plan.pop(0)
            self._submit(self._buf[start:end])

    def finish(self):
        """Before the optimizer step: send what is left and wait for every bucket."""
        if self.comm.size == 1:
            return
        self.ready(0)
        for f in self._pending:
            f.result()
        self._pending = []

    def in_order(self, fn, *args):
        """Run fn(*args) after every collective already queued on the communication thread (there, when one is
        running), so that all ranks issue their collectives in the same order."""
        if self._pool is None or not self._pending:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def _submit(self, piece, exact=False):
        if exact:
            job = self.comm.allreduce_
        else:
            job = self._sum if self.codec is None else self._ring
        self._pending.append(self._pool.submit(job, piece))
