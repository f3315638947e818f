"""The communicator interface every backend implements, and the single-process one.

A communicator sums NumPy buffers across workers in place (`allreduce_`, optionally compressed on the wire by a
ring codec), copies one worker's buffer to all (`broadcast_`), gathers small Python values (`allgather`) or
equal-length arrays (`allgather_array`), synchronises (`barrier`), bounds how long a worker waits for the others
(`set_watchdog`), and can end the whole job (`abort`). Callers never ask which backend they talk to.
"""
import os


class MembershipChanged(RuntimeError):
    """An elastic job's set of workers changed during a collective (a worker left, or one is joining): the
    collective did not complete; the caller waits for the new membership (`DataParallel.recover`) and redoes
    the step from the state it had before it."""


class Communicator:
    rank = 0
    size = 1
    local_rank = 0             # this worker's index among the workers of its node
    local_size = 1
    backend = "local"
    watchdog_timeout = None    # seconds a worker waits for the others at a collective; None: forever
    elastic = False            # True when workers may leave and join during training (distnet.ray.run min_workers)
    joining = False            # True on an elastic worker that joins a running job (it receives the state)
    change_requested = False   # True when this worker was asked to change membership at the next step boundary

    def allreduce_(self, buf, algorithm="auto", codec=None):
        """Sum `buf` (a contiguous 1-D NumPy array) over all workers, in place.
        algorithm: 'auto' | 'ring' | 'native' (the transport's own collective, where it has one) | 'hierarchical'
        (MPI: sum inside each node, allreduce between the nodes' leaders, broadcast inside each node).
        codec: a ring codec (distnet.parallel.ring.CODECS) that encodes chunks on the wire (implies 'ring')."""
        raise NotImplementedError  # abstract

    def broadcast_(self, buf, root=0):
        """Overwrite `buf` on every worker with root's `buf`, in place."""
        raise NotImplementedError  # abstract

    def allgather(self, obj):
        """A list of every worker's `obj` (small, JSON-like values), in rank order."""
        raise NotImplementedError  # abstract

    def allgather_array(self, mine, out):
        """Every worker's equal-length 1-D array `mine`, concatenated in rank order into `out`."""
        raise NotImplementedError  # abstract

    def barrier(self):
        raise NotImplementedError  # abstract

    def set_watchdog(self, timeout):
        """From now on, a worker that waits more than `timeout` seconds for the others at any collective ends
        the job (MPI) or fails the group (Ray) with a message naming the ranks it waited for. None: off."""
        if timeout is not None and not timeout > 0:
            raise ValueError(f"watchdog_timeout must be a positive number of seconds or None, received {timeout!r}")
        self.watchdog_timeout = None if timeout is None else float(timeout)

    def abort(self, code=1):
        """End the whole job now (every worker), with exit status `code`."""
        os._exit(code)

    def await_membership(self):
        """Elastic only: wait for the next membership (new rank and size) and use it; returns a dict with
        'left' (old ranks that left), 'joined' (how many joined) and 'size'."""
        raise RuntimeError(f"{type(self).__name__} is not elastic: its workers cannot change during training")

    def __repr__(self):
        return f"<{type(self).__name__} rank {self.rank}/{self.size}>"


class LocalCommunicator(Communicator):
    """One worker: every collective is the identity."""

    def allreduce_(self, buf, algorithm="auto", codec=None):
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


LOCAL = LocalCommunicator()
