"""Prefetching: produce the next items on a background thread while the caller works on the current one.

    batches = Prefetcher(lambda step: data.take(local_batch(order, step, B, rank, N)), range(steps), depth=2,
                         describe=lambda step: f"epoch {epoch}, step {step}")
    for xb, yb in batches:               # in key order; reading and decoding overlap the training step
        ...

At most `depth` items are produced ahead of the consumer (a semaphore, not a bounded queue: a queue would let
one more item wait, finished, in a blocked put). An exception in produce(key) is raised in the consumer when it
reaches that item, as a PrefetchError (a PrefetchDataError, also a DataError, when the cause is one) naming the
item, with the original as its __cause__. close(), leaving a `with` block, or dropping the last reference stops
the thread: it finishes the item in hand and exits; no thread outlives its Prefetcher by more than that.
"""
import itertools
import queue
import threading
import weakref

from .format import DataError

_POLL_S = 0.05
_names = itertools.count()


class PrefetchError(RuntimeError):
    """produce(key) failed on the prefetch thread; `key` is the item, `__cause__` the original exception."""

    def __init__(self, message, key=None):
        super().__init__(message)
        self.key = key


class PrefetchDataError(PrefetchError, DataError):
    """A DataError (bad shard, checksum, ...) raised while prefetching: catchable as either."""


class Prefetcher:
    """Iterates produce(key) for key in keys, in order, computed up to `depth` items ahead on a daemon thread.

    describe(key) -> text naming the item in errors (default: "item <key>")."""

    def __init__(self, produce, keys, depth=2, describe=None, name=None):
        if not callable(produce):
            raise TypeError(f"Prefetcher expects a callable produce(key), received {type(produce).__name__}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"Prefetcher expects depth to be a positive int, received {depth!r}")
        self.depth = depth
        self._describe = describe or (lambda key: f"item {key!r}")
        self._results, self._stop = queue.SimpleQueue(), threading.Event()
        self._slots = threading.Semaphore(depth)
        self._finished = False
        # The thread must not reference self, or the Prefetcher could never be garbage collected.
        self._thread = threading.Thread(target=_work, args=(produce, iter(keys), self._results, self._slots,
                                                            self._stop),
                                        name=name or f"distnet-prefetch-{next(_names)}", daemon=True)
        self._finalizer = weakref.finalize(self, self._stop.set)
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._finished:
            raise StopIteration
        kind, key, value = self._get()
        if kind == "item":
            self._slots.release()
            return value
        self.close()
        if kind == "done":
            raise StopIteration
        where = "the key iterator" if kind == "keys" else self._describe(key)
        cls = PrefetchDataError if isinstance(value, DataError) else PrefetchError
        raise cls(f"prefetching {where} failed: {type(value).__name__}: {value}", key) from value

    def _get(self):
        while True:
            try:
                return self._results.get(timeout=_POLL_S)
            except queue.Empty:
                if not self._thread.is_alive() and self._results.empty():
                    self._finished = True
                    raise PrefetchError("the prefetch thread ended without a result") from None

    def close(self, timeout=None):
        """Stop the thread (it finishes the item in hand) and wait for it; idempotent."""
        self._finished = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    @property
    def alive(self):
        return self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _work(produce, keys, results, slots, stop):
    """The thread: wait for a free slot, produce the next item, hand it over; stop at the first error."""
    while True:
        while not slots.acquire(timeout=_POLL_S):
            if stop.is_set():
                return
        if stop.is_set():
            return
        try:
            key = next(keys)
        except StopIteration:
            results.put(("done", None, None))
            return
        except BaseException as e:        # noqa: BLE001 -- delivered to the consumer, never lost
            results.put(("keys", None, e))
            return
        try:
            value = produce(key)
        except BaseException as e:        # noqa: BLE001
            results.put(("error", key, e))
            return
        results.put(("item", key, value))
