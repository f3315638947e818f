"""Explicit control of data parallelism, Horovod-style: init, rank, size, collectives, opt-out.

You rarely need this: `model.fit` already trains data-parallel when the process runs under `mpirun -n N` (N > 1).
    import distnet.distributed as dist
    dist.init()                        # optional: detect MPI (or stay single-process)
    if dist.is_main(): print(dist.size(), "workers")
    total = dist.allreduce(np.array([local_count]))
"""
import numpy as np

from .parallel import world
from .parallel.communicator import LocalCommunicator, detect


def init(backend="auto", watchdog_timeout=None):
    """Join the job's world: 'auto' (MPI when launched by mpirun, else single process), 'mpi', or 'local'.
    watchdog_timeout (seconds, MPI): end the job, naming the missing ranks, when some rank does not reach a
    gradient allreduce in time (also settable as DISTNET_WATCHDOG_TIMEOUT)."""
    if backend == "auto":
        current = world.current()
        if current is not None and current.size > 1:      # e.g. a Ray actor wired up by distnet.ray
            comm = current
        else:
            comm = detect()
    elif backend == "mpi":
        from .parallel.mpi import MPICommunicator
        comm = MPICommunicator()
    elif backend == "local":
        comm = LocalCommunicator()
    else:
        raise ValueError(f"distnet.distributed.init: backend must be 'auto', 'mpi' or 'local', received {backend!r}")
    if watchdog_timeout is not None:
        if not watchdog_timeout > 0:
            raise ValueError(f"watchdog_timeout must be a positive number of seconds, received {watchdog_timeout!r}")
        comm.watchdog_timeout = float(watchdog_timeout)
    world.set_communicator(comm)
    return comm


def disable():
    """Opt out: this process trains alone even under mpirun (every rank then runs its own independent job)."""
    world.set_communicator(LocalCommunicator())


def communicator():
    return world.communicator()


def rank():
    return world.communicator().rank


def size():
    return world.communicator().size


def local_rank():
    return world.communicator().local_rank


def local_size():
    return world.communicator().local_size


def is_main():
    return world.communicator().rank == 0


def barrier():
    world.communicator().barrier()


def allreduce(value, op="sum", algorithm="auto"):
    """A new array: the sum (op='sum') or mean (op='mean') of `value` over all workers."""
    if op not in ("sum", "mean"):
        raise ValueError(f"allreduce op must be 'sum' or 'mean', received {op!r}")
    arr = np.array(value, copy=True)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"allreduce expects numeric values, received dtype {arr.dtype}")
    flat = np.ascontiguousarray(arr.reshape(-1))
    comm = world.communicator()
    comm.allreduce_(flat, algorithm=algorithm)
    out = flat.reshape(arr.shape)
    return out / comm.size if op == "mean" else out


def broadcast(value, root=0):
    """A new array equal to root's `value` on every worker (same shape and dtype required everywhere)."""
    arr = np.ascontiguousarray(np.array(value, copy=True))
    world.communicator().broadcast_(arr, root=root)
    return arr
