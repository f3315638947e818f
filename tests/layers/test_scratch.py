"""Layer.scratch: buffers for use within one call, shared by every layer of the calling thread."""
import threading

import numpy as np

from distnet import layers


def test_layers_share_a_scratch_buffer_by_name_and_type():
    a, b = layers.Dense(3), layers.Dense(4)
    big = a.scratch("probe", (4, 5))
    small = b.scratch("probe", (2, 3))
    assert np.shares_memory(big, small) and small.shape == (2, 3)        # the first elements of the largest
    assert not np.shares_memory(big, a.scratch("other", (4, 5)))
    assert not np.shares_memory(big, a.scratch("probe", (4, 5), bool))
    grown = b.scratch("probe", (10, 10))
    assert grown.shape == (10, 10) and np.shares_memory(grown, a.scratch("probe", (3,)))


def test_each_thread_has_its_own_scratch_buffers():
    layer = layers.Dense(3)
    here = layer.scratch("probe_thread", (8,))
    there = []
    worker = threading.Thread(target=lambda: there.append(layer.scratch("probe_thread", (8,))))
    worker.start()
    worker.join()
    assert not np.shares_memory(here, there[0])


def test_large_buffers_start_on_a_huge_page_boundary():
    from distnet.layers.base import page_aligned_empty
    big = page_aligned_empty(3 << 18, np.float32)          # 3 MiB
    assert big.shape == (3 << 18,) and big.dtype == np.float32 and big.flags.c_contiguous
    assert big.ctypes.data % (1 << 21) == 0
    big[...] = 1.5
    assert big.sum() == 1.5 * big.size
    small = page_aligned_empty(10, np.float64)
    assert small.shape == (10,) and small.dtype == np.float64
    assert page_aligned_empty(0, np.float32).shape == (0,)
    layer = layers.Dense(3)
    assert layer.workspace("probe_big", (1024, 1024)).ctypes.data % (1 << 21) == 0
    assert layer.scratch("probe_big", (1024, 1024)).ctypes.data % (1 << 21) == 0


def test_mid_sized_buffers_are_packed_into_shared_huge_page_spans_without_overlap():
    from distnet.layers.base import page_aligned_empty
    bufs = [page_aligned_empty(n, np.float32) for n in (1 << 15, 3 << 15, 40001, 1 << 17)]   # 128-512 KiB
    for i, b in enumerate(bufs):
        assert b.ctypes.data % 64 == 0 and b.flags.c_contiguous and b.dtype == np.float32
        b[...] = i
    for i, b in enumerate(bufs):
        assert np.all(b == i)
        assert not any(np.shares_memory(b, other) for other in bufs[i + 1:])
