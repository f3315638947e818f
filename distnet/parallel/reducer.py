"""The gradient reducer: the only way a model talks to the communicator during a training step.

It sums the model's flat gradient buffer (with its trailing count/metric slots) over all workers in place, with
one collective on the whole buffer (tensor fusion) or one per `bucket_bytes` slice.
"""


class Reducer:
    def __init__(self, comm, algorithm="auto", bucket_bytes=None):
        if algorithm not in ("auto", "ring", "native"):
            raise ValueError(f"allreduce must be 'auto', 'ring' or 'native', received {algorithm!r}")
        if bucket_bytes is not None and (not isinstance(bucket_bytes, int) or bucket_bytes <= 0):
            raise ValueError(f"bucket_bytes must be a positive int or None, received {bucket_bytes!r}")
        self.comm, self.algorithm, self.bucket_bytes = comm, algorithm, bucket_bytes

    def reduce_(self, buf):
        """Sum buf over all workers, in place."""
        if self.comm.size == 1:
            return buf
        if getattr(self.comm, "watchdog_timeout", None):
            self.comm.arrive()
        if self.bucket_bytes is None:
            self.comm.allreduce_(buf, algorithm=self.algorithm)
            return buf
        step = max(1, self.bucket_bytes // buf.itemsize)
        for start in range(0, buf.size, step):
            self.comm.allreduce_(buf[start:start + step], algorithm=self.algorithm)
        return buf
