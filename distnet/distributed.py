"""Explicit control of data parallelism, Horovod-style: init, rank, size, collectives, opt-out.

You rarely need this: `model.fit` already trains data-parallel when the process runs under `mpirun -n N` (N > 1).
    import distnet.distributed as dist
    dist.init()                        # optional: detect MPI (or stay single-process)
    if dist.is_main(): print(dist.size(), "workers")
    total = dist.allreduce(np.array([local_count]))
"""
import numpy as np

from .parallel import world
from .parallel.communicator import LocalCommunicator


def init(backend="auto", watchdog_timeout=None):
    """Join the job's world: 'auto' (MPI when launched by mpirun, the actors' group inside distnet.ray, else a
    single process), 'mpi', or 'local'. Joining a multi-worker job prefixes other ranks' output lines, ends the
    whole job on an uncaught exception, and limits BLAS threads (see distnet.parallel.runtime).
    watchdog_timeout: seconds (also settable as DISTNET_WATCHDOG_TIMEOUT) a rank may wait for the others at any
    collective; then the job ends naming the ranks that did not arrive and the collective each rank is in
    (MPI), or the worker group fails naming the stalled ranks (Ray). Enable it on every rank."""
    return world.join(backend, watchdog_timeout)


def disable():
    """Opt out: this process trains alone even under mpirun (every rank then runs its own independent job)."""
    world.set_communicator(LocalCommunicator())


def communicator():
    """The job's communicator (joining the job on the first call)."""
    return world.join()


def rank():
    return world.join().rank


def size():
    return world.join().size


def local_rank():
    return world.join().local_rank


def local_size():
    return world.join().local_size


def is_main():
    return world.is_main()


def barrier():
    world.join().barrier()


def allreduce(value, op="sum", algorithm="auto"):
    """A new array: the sum (op='sum') or mean (op='mean') of `value` over all workers."""
    if op not in ("sum", "mean"):
        raise ValueError(f"allreduce op must be 'sum' or 'mean', received {op!r}")
    arr = np.array(value, copy=True)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"allreduce expects numeric values, received dtype {arr.dtype}")
    flat = np.ascontiguousarray(arr.reshape(-1))
    comm = world.join()
    comm.allreduce_(flat, algorithm=algorithm)
    out = flat.reshape(arr.shape)
    return out / comm.size if op == "mean" else out


def broadcast(value, root=0):
    """A new array equal to root's `value` on every worker (same shape and dtype required everywhere)."""
    arr = np.ascontiguousarray(np.array(value, copy=True))
    world.join().broadcast_(arr, root=root)
    return arr
