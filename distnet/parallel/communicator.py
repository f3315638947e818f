"""The communicator interface every backend implements, the single-process one, and detection of the world.

A communicator sums NumPy buffers across workers in place (`allreduce_`), copies one worker's buffer to all
(`broadcast_`), gathers small Python values (`allgather`), and can end the whole job (`abort`).
"""
import os


class Communicator:
    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    backend = "local"

    def allreduce_(self, buf, algorithm="auto"):
        """Sum `buf` (a contiguous NumPy array) over all workers, in place. algorithm: 'auto' | 'ring' |
        'native' (the transport's own collective, where it has one)."""
        raise NotImplementedError  # abstract

    def broadcast_(self, buf, root=0):
        """Overwrite `buf` on every worker with root's `buf`, in place."""
        raise NotImplementedError  # abstract

    def allgather(self, obj):
        """A list of every worker's `obj` (small, JSON-like values), in rank order."""
        raise NotImplementedError  # abstract

    def barrier(self):
        raise NotImplementedError  # abstract

    @property
    def transport(self):
        """The ring transport (rank, size, sendrecv) our ring algorithms run over, or None."""
        return None

    def allgather_array(self, mine, out):
        """Every worker's equal-length 1-D array `mine`, concatenated in rank order into `out`."""
        from .ring import ring_allgather
        return ring_allgather(mine, out, self.transport)

    def abort(self, code=1):
        os._exit(code)

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank}/{self.size}>"


class LocalCommunicator(Communicator):
    """One worker: every collective is the identity."""

    def allreduce_(self, buf, algorithm="auto"):
        return buf

    def broadcast_(self, buf, root=0):
        return buf

    def allgather(self, obj):
        return [obj]

    def allgather_array(self, mine, out):
        out[...] = mine
        return out

    def barrier(self):
        pass


_MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")


def launched_by_mpi():
    """True when this process was started by mpirun/mpiexec (Open MPI, MPICH/Hydra or a PMI/PMIx launcher)."""
    return any(k in os.environ for k in _MPI_ENV)


def detect():
    """The communicator this process belongs to: MPI when launched by mpirun with more than one rank (unless
    DISTNET_DISABLE=1), else the single-process one."""
    if os.environ.get("DISTNET_DISABLE") == "1" or not launched_by_mpi():
        return LocalCommunicator()
    from .mpi import MPICommunicator
    comm = MPICommunicator()
    return comm if comm.size > 1 else LocalCommunicator()
