"""The ring algorithm, in-process over a simulated transport, and over MPI with 2-4 ranks."""
import threading

import numpy as np
import pytest

from distnet.parallel.ring import chunk_bounds, ring_allreduce
from tests.parallel.mpi_helpers import run_mpi


class QueueTransport:
    """N threads in one process, joined in a ring by per-link mailboxes."""

    def __init__(self, rank, size, links):
        self.rank, self.size, self.links = rank, size, links

    def sendrecv(self, send, recv):
        right = (self.rank + 1) % self.size
        self.links[right].put(send.copy())
        recv[...] = self.links[self.rank].get(timeout=10)


def simulate(arrays, codec=None):
    """Run ring_allreduce on len(arrays) threads joined by QueueTransport; return every worker's result."""
    import queue
    n = len(arrays)
    links = [queue.Queue() for _ in range(n)]
    bufs = [a.copy() for a in arrays]
    threads = [threading.Thread(target=ring_allreduce, args=(bufs[r], QueueTransport(r, n, links), None, codec))
               for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return bufs


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("length", [0, 1, 2, 7, 100, 1001])
def test_ring_sums_like_numpy(n, length):
    rng = np.random.default_rng(n * 1000 + length)
    arrays = [rng.normal(size=length).astype(np.float32) for _ in range(n)]
    expected = np.sum(arrays, axis=0, dtype=np.float64)
    for out in simulate(arrays):
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_chunks_cover_buffer_evenly():
    b = chunk_bounds(10, 3)
    assert b == [0, 3, 6, 10] and chunk_bounds(2, 4) == [0, 0, 1, 1, 2]


RING_JOB = """
import numpy as np
from distnet import distributed as dist
comm = dist.init()
bad = []
for length in [0, 1, 2, 3, 5, 1000, 65537]:
    for dtype in (np.float32, np.float64):
        rng = np.random.default_rng(comm.rank * 7919 + length)
        mine = rng.normal(size=length).astype(dtype)
        everyone = np.array(comm.allgather(mine.tolist()), dtype=np.float64).reshape(comm.size, length)
        expected = everyone.sum(axis=0)
        native = mine.copy(); comm.allreduce_(native, algorithm="native")
        ring = mine.copy(); comm.allreduce_(ring, algorithm="ring")
        tol = 1e-4 if dtype == np.float32 else 1e-10
        if not (np.allclose(ring, expected, rtol=tol, atol=tol) and np.allclose(ring, native, rtol=tol, atol=tol)):
            bad.append((length, dtype.__name__))
print("RING", comm.rank, comm.size, "bad", bad, flush=True)
"""


@pytest.mark.timeout(180)
@pytest.mark.parametrize("n", [2, 3, 4])
def test_ring_over_mpi_matches_native_allreduce_and_numpy(tmp_path, n):
    res = run_mpi(n, RING_JOB, tmp_path)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "RING" in ln]
    assert len(lines) == n and all("bad []" in ln for ln in lines), res.stdout
