"""One rank of a Ray worker group: a threaded actor that runs the training code, with its bootstrap (the ring,
the communicator, BLAS threads)."""
import os
import sys

from .. import runtime, world
from .cluster import ray_module
from .communicator import RayCommunicator
from .transport import Mailbox, TcpRing


class Worker:
    """One rank: a threaded Ray actor that runs the training code and receives chunks from its peers."""

    def __init__(self, rank, size, env):
        os.environ.update(env)
        self.rank, self.size = rank, size
        self.mailbox = Mailbox()
        self.comm = None

    def __repr__(self):          # Ray prefixes the actor's output with this
        return f"rank {self.rank}/{self.size}"

    def node_id(self):
        return ray_module().get_runtime_context().get_node_id()

    def pid(self):
        return os.getpid()

    def open_ring(self, host, timeout):
        self.ring = TcpRing(self.rank, self.size, timeout)
        return self.ring.listen(host)

    def connect(self, peers, node_ids, addresses, timeout, job):
        mine = node_ids[self.rank]
        local = [r for r, n in enumerate(node_ids) if n == mine]
        if self.size > 1:
            right = (self.rank + 1) % self.size
            self.ring.connect(tuple(addresses[right]), node_ids[right] == mine, job)
        self.comm = RayCommunicator(self.rank, self.size, peers, self.mailbox, local.index(self.rank), len(local),
                                    timeout, self.ring if self.size > 1 else None)
        world.set_communicator(self.comm)
        # Ray's worker process loaded NumPy (and OpenBLAS's thread pool) before our environment arrived, so the
        # thread count is applied through threadpoolctl: the variable if set, else cores / workers on this node.
        requested = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        runtime.limit_blas_threads(len(local), int(requested) if requested else None)
        return True

    def deliver(self, src, tag, payload):
        self.mailbox.put(src, tag, payload)

    def progress(self):
        """How many collectives this rank has entered (answered from a spare thread even while it is stuck)."""
        return self.comm.collectives if self.comm is not None else 0

    def run_function(self, fn, args, kwargs):
        return fn(*args, **kwargs)

    def run_script(self, path, argv, cwd):
        import runpy
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        sys.argv = [path] + list(argv)
        sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
        runpy.run_path(path, run_name="__main__")
        return None
