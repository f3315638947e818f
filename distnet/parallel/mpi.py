"""The MPI communicator (mpi4py): our ring over MPI Sendrecv, or MPI's native Allreduce.

Buffer (upper-case) calls on NumPy arrays throughout: no pickling on the training path.
"""
import os
import sys
import threading
import traceback

import numpy as np

from . import ring
from .communicator import Communicator

# Measured on the 2-core development machine (distnet-bench allreduce -n 2,4): MPICH's native Allreduce wins or ties
# below ~4-8 MB; from 6 MB up our preallocated ring wins (1.2-1.4x at 16 MB, 2.3-2.5x at 64 MB, where native
# allocates temporaries per call). auto = ring from 8 MB.
RING_MIN_BYTES = 8 * 2**20


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("distnet's MPI backend needs mpi4py and an MPI library: pip install 'distnet[mpi]' "
                          "(that is: pip install mpi4py mpich)") from e
    return MPI


class _MPIRingTransport:
    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.right, self.left = (self.rank + 1) % self.size, (self.rank - 1) % self.size

    def sendrecv(self, send, recv):
        self.comm.Sendrecv(send, dest=self.right, sendtag=7, recvbuf=recv, source=self.left, recvtag=7)


_ARRIVE = 77


class MPICommunicator(Communicator):
    backend = "mpi"

    def __init__(self, comm=None, install_hooks=True, watchdog_timeout=None):
        """watchdog_timeout: seconds a worker may wait for the others before a collective before the job is
        ended with a message naming the missing ranks (default: $DISTNET_WATCHDOG_TIMEOUT, else off)."""
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()
        self._transport = _MPIRingTransport(self.comm)
        self._scratch = None
        env_timeout = os.environ.get("DISTNET_WATCHDOG_TIMEOUT")
        self.watchdog_timeout = watchdog_timeout if watchdog_timeout is not None else (
            float(env_timeout) if env_timeout else None)
        self._arrivals = 0
        _report_to_launcher("pid", self.rank, {"pid": os.getpid(), "host": MPI.Get_processor_name()})
        if install_hooks and self.size > 1:
            install_abort_on_exception(self)
            limit_blas_threads(self.local_size)
            line_atomic_output(self.rank, self.size)

    def allreduce_(self, buf, algorithm="auto"):
        if self.size == 1 or buf.size == 0:
            return buf
        if algorithm == "auto":
            algorithm = "ring" if buf.nbytes >= RING_MIN_BYTES else "native"
        if algorithm == "native":
            self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return buf
        need = -(-buf.size // self.size)
        if self._scratch is None or self._scratch.size < need or self._scratch.dtype != buf.dtype:
            self._scratch = np.empty(need, dtype=buf.dtype)
        return ring.ring_allreduce(buf, self._transport, self._scratch)

    def broadcast_(self, buf, root=0):
        self.comm.Bcast(buf, root=root)
        return buf

    def arrive(self):
        """Watchdog check before a collective: every rank reports its arrival to rank 0, which names the ranks
        that do not arrive within watchdog_timeout; the others notice a silent rank 0 the same way. Either
        way the job ends with that message instead of hanging forever."""
        timeout = self.watchdog_timeout
        self._arrivals += 1
        step = np.array([self._arrivals], dtype=np.int64)
        if self.rank == 0:
            boxes = [np.zeros(1, np.int64) for _ in range(self.size - 1)]
            reqs = [self.comm.Irecv(boxes[r - 1], source=r, tag=_ARRIVE) for r in range(1, self.size)]
            if not _wait(lambda: all(q.Test() for q in reqs), timeout):
                missing = [r for r, q in zip(range(1, self.size), reqs) if not q.Test()]
                self._stalled(f"rank(s) {missing} did not reach collective #{self._arrivals} within {timeout:g} s "
                              "(stalled, deadlocked or gone without MPI noticing)")
        else:
            self.comm.Send(step, dest=0, tag=_ARRIVE)
        barrier = self.comm.Ibarrier()
        grace = 0 if self.rank == 0 else 2.0 + timeout * 0.5     # let rank 0 name the culprits first
        if not _wait(barrier.Test, timeout + grace):
            self._stalled(f"waited {timeout + grace:g} s at collective #{self._arrivals} for the other ranks "
                          "(rank 0 or a rank it waits for is stalled)")

    def _stalled(self, message):
        sys.__stderr__.write(f"[rank {self.rank}/{self.size}] distnet watchdog: {message}; ending the job\n")
        sys.__stderr__.flush()
        _report_to_launcher("error", self.rank, {"error": f"watchdog: {message}"})
        self.comm.Abort(3)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    @property
    def transport(self):
        return self._transport

    def allgather_array(self, mine, out):
        self.comm.Allgather(mine, out)
        return out

    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        self.comm.Abort(code)


def _wait(done, timeout):
    """Poll done() until it is true (return True) or `timeout` seconds pass (return False): spin briefly, then
    sleep in growing steps, so a healthy step pays microseconds and a stalled one costs no CPU."""
    import time
    start = time.perf_counter()
    pause = 0.0
    while not done():
        waited = time.perf_counter() - start
        if waited > timeout:
            return False
        if waited > 1e-4:
            pause = min(max(pause * 2, 1e-5), 0.01)
            time.sleep(pause)
    return True


def install_abort_on_exception(comm):
    """An uncaught exception on any rank prints its traceback (naming the rank) and aborts the whole MPI job,
    so the other ranks never wait forever in a collective."""
    def hook(exc_type, exc, tb):
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.__stderr__.write(f"[rank {comm.rank}/{comm.size}] distnet: uncaught exception, aborting all "
                             f"{comm.size} ranks:\n{text}")
        sys.__stderr__.flush()
        _report_to_launcher("error", comm.rank, {"error": f"{exc_type.__name__}: {exc}"})
        comm.abort(1)

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value, args.exc_traceback)


def _report_to_launcher(kind, rank, info):
    """Leave a note for distnet-launch (rank r's pid, or its uncaught exception) in its status directory, so its
    failure summary can name the rank that failed first."""
    directory = os.environ.get("DISTNET_LAUNCH_DIR")
    if not directory or not os.path.isdir(directory):
        return
    import json
    import time
    try:
        with open(os.path.join(directory, f"rank{rank}.{kind}"), "w") as f:
            json.dump({"rank": rank, "time": time.time(), **info}, f)
    except OSError:
        pass


_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


def blas_threads_for(local_workers):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, (os.cpu_count() or 1) // max(local_workers, 1)))


def limit_blas_threads(local_workers):
    """Give each of the `local_workers` processes on this node cores/local_workers BLAS threads, unless the user
    chose a number (any of the *_NUM_THREADS variables is set)."""
    if any(v in os.environ for v in _BLAS_VARS):
        return None
    from threadpoolctl import threadpool_limits
    n = blas_threads_for(local_workers)
    threadpool_limits(limits=n, user_api="blas")
    return n


class _PrefixedStream:
    """Prefixes every line written by a non-zero rank with [rank r/N], as the design requires. Whole lines go to
    the underlying stream in one write, so lines of different ranks do not interleave mid-line."""

    def __init__(self, stream, prefix):
        self._stream, self._prefix, self._partial = stream, prefix, ""

    def write(self, text):
        pending = self._partial + text
        cut = pending.rfind("\n") + 1
        self._partial = pending[cut:]
        if cut:
            lines = pending[:cut].splitlines(keepends=True)
            self._stream.write("".join(self._prefix + line for line in lines))
            self._stream.flush()
        return len(text)

    def flush(self):
        if self._partial:
            self._stream.write(self._prefix + self._partial)
            self._partial = ""
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def line_atomic_output(rank, size):
    """Send stdout/stderr to the terminal a whole line at a time (mpirun runs Python unbuffered, so one print
    would otherwise reach it in pieces that interleave with other ranks'), prefixing non-zero ranks' lines."""
    prefix = "" if rank == 0 or os.environ.get("DISTNET_NO_PREFIX") == "1" else f"[rank {rank}/{size}] "
    if not isinstance(sys.stdout, _PrefixedStream):
        sys.stdout = _PrefixedStream(sys.stdout, prefix)
        sys.stderr = _PrefixedStream(sys.stderr, prefix)
