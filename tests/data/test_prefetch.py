"""The prefetch thread: order, bounded look-ahead, errors at their item, clean shutdown."""
import gc
import threading
import time

import pytest

from distnet.data.format import DataError
from distnet.data.prefetch import PrefetchDataError, Prefetcher, PrefetchError


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name.startswith("distnet-prefetch")]


def _wait_until(condition, timeout=5.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.01)
    return condition()


def test_results_in_order_even_when_produced_at_different_speeds():
    def produce(k):
        time.sleep(0.002 * (k % 3))
        return k * k
    assert list(Prefetcher(produce, range(20), depth=3)) == [k * k for k in range(20)]
    assert _wait_until(lambda: not _prefetch_threads())


def test_at_most_depth_items_ahead():
    produced = []
    p = Prefetcher(lambda k: produced.append(k) or k, range(100), depth=3)
    assert _wait_until(lambda: len(produced) == 3)
    time.sleep(0.1)
    assert len(produced) == 3                  # the consumer has taken nothing yet
    assert next(p) == 0
    assert _wait_until(lambda: len(produced) == 4)
    time.sleep(0.1)
    assert len(produced) == 4
    p.close()


def test_error_raised_at_its_item_with_the_cause():
    def produce(k):
        if k == 2:
            raise OSError("disk on fire")
        return k
    got = []
    with pytest.raises(PrefetchError, match=r"prefetching epoch 0, step 2 failed: OSError: disk on fire") as info:
        for v in Prefetcher(produce, range(5), describe=lambda k: f"epoch 0, step {k}"):
            got.append(v)        # noqa: PERF402 -- the loop is the point: items arrive until the error
    assert got == [0, 1] and isinstance(info.value.__cause__, OSError) and info.value.key == 2
    assert not isinstance(info.value, DataError)


def test_data_errors_stay_data_errors():
    def produce(k):
        raise DataError("shard file 'x-00003.npy' is corrupt: sample 77")
    with pytest.raises(PrefetchDataError, match="item 0 failed: DataError: shard file 'x-00003.npy'") as info:
        next(Prefetcher(produce, [0]))
    assert isinstance(info.value, DataError) and isinstance(info.value, PrefetchError)


def test_error_in_the_key_iterator():
    def keys():
        yield 1
        raise RuntimeError("no more keys")
    p = Prefetcher(lambda k: k, keys())
    assert next(p) == 1
    with pytest.raises(PrefetchError, match="prefetching the key iterator failed: RuntimeError: no more keys"):
        next(p)


def test_close_and_garbage_collection_leave_no_thread():
    with Prefetcher(lambda k: k, range(1000), depth=2) as p:
        next(p)
    assert not p.alive
    p = Prefetcher(lambda k: k, range(1000), depth=2)
    next(p)
    del p
    gc.collect()
    assert _wait_until(lambda: not _prefetch_threads())
    p = Prefetcher(lambda k: time.sleep(0.05) or k, range(1000))
    p.close()
    assert not p.alive and list(p) == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth to be a positive int, received 0"):
        Prefetcher(lambda k: k, [1], depth=0)
    with pytest.raises(TypeError, match="callable produce"):
        Prefetcher([1, 2], [1])
