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

    def connect(self, peers, node_ids, addresses, timeout, job, elastic=False):
        mine = node_ids[self.rank]
        local = [r for r, n in enumerate(node_ids) if n == mine]
        if self.size > 1:
            right = (self.rank + 1) % self.size
            self.ring.connect(tuple(addresses[right]), node_ids[right] == mine, job)
        self.comm = RayCommunicator(self.rank, self.size, peers, self.mailbox, local.index(self.rank), len(local),
                                    timeout, self.ring if self.size > 1 else None)
        self.comm.elastic = elastic
        world.set_communicator(self.comm)
        # Ray's worker process loaded NumPy (and OpenBLAS's thread pool) before our environment arrived, so the
        # thread count is applied through threadpoolctl: the variable if set, else cores / workers on this node.
        requested = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        runtime.limit_blas_threads(len(local), int(requested) if requested else None)
        return True

    # -- elastic membership: the driver's calls (on spare actor threads, while training runs) -------------------
    def prepare_join(self, timeout):
        """A worker started for a running elastic job: it trains once the group admits it (see reconfigure)."""
        self.comm = RayCommunicator(0, 1, [], self.mailbox, timeout=timeout)
        self.comm.elastic = self.comm.joining = True
        world.set_communicator(self.comm)
        runtime.limit_blas_threads(1, self._requested_threads())
        return True

    def open_next_ring(self, host, timeout, rank, size):
        """Listen for the left neighbour of the next membership (rank of size)."""
        self.next_ring = TcpRing(rank, size, timeout)
        return self.next_ring.listen(host)

    def reconfigure(self, config, peers, node_ids, addresses, timeout, job):
        """Connect the next ring and offer the new membership; the training thread takes it at its next step
        boundary (or at once, when a failed collective made it wait for one)."""
        rank, size = config["rank"], config["size"]
        mine = node_ids[rank]
        local = [r for r, n in enumerate(node_ids) if n == mine]
        ring_transport = None
        if size > 1:
            right = (rank + 1) % size
            self.next_ring.connect(tuple(addresses[right]), node_ids[right] == mine, job)
            ring_transport = self.next_ring
        self.rank, self.size = rank, size
        self.comm.offer({**config, "peers": peers, "ring": ring_transport, "local_rank": local.index(rank),
                         "local_size": len(local)})
        return True

    def fail_membership(self, message):
        """The job cannot continue (fewer workers than min_workers and no capacity came back)."""
        self.comm.offer({"error": message})
        self.comm.interrupt()
        return True

    def interrupt(self, generation):
        """Stop using the ring of `generation` now (a member is gone); a later membership is left alone."""
        if self.comm is not None and self.comm.generation == generation:
            self.comm.interrupt()
        return True

    def generation(self):
        """The membership generation this worker trains in (answered while it trains)."""
        return self.comm.generation if self.comm is not None else -1

    def request_change(self):
        """Change membership at the next step boundary (a worker is joining)."""
        if self.comm is not None:
            self.comm.change_requested = True
        return True

    def _requested_threads(self):
        requested = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        return int(requested) if requested else None

    def deliver(self, src, tag, payload):
        self.mailbox.put(src, tag, payload)

    def progress(self):
        """How many collectives this rank has entered (answered from a spare thread even while it is stuck)."""
        return self.comm.collectives if self.comm is not None else 0

    def run_function(self, fn, args, kwargs):
        return fn(*args, **kwargs)

    def run_script(self, path, argv, cwd):
        return run_script_file(path, argv, cwd)


def run_script_file(path, argv, cwd):
    """Run a training script in this process as `python path argv...` would, from directory `cwd` (a module-level
    function, so that an elastic group can run it as its train_fn)."""
    import runpy
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    sys.argv = [path] + list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    runpy.run_path(path, run_name="__main__")
