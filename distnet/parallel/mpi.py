"""The MPI communicator (mpi4py): our ring over MPI Sendrecv, or MPI's native Allreduce.

Buffer (upper-case) calls on NumPy arrays throughout: no pickling on the training path. Building one starts MPI
and nothing else; the worker runtime (output prefixes, abort on exception, BLAS threads) is installed by
`world.join`.
"""
import fcntl
import functools
import os
import stat
import struct
import sys
import termios
import threading
import time

import numpy as np

from . import protocol, ring
from .communicator import Communicator

# Measured on the 2-core development machine (distnet-bench allreduce -n 2,4): MPICH's native Allreduce wins or ties
# below ~4-8 MB; from 6 MB up our preallocated ring wins (1.2-1.4x at 16 MB, 2.3-2.5x at 64 MB, where native
# allocates temporaries per call). auto = ring from 8 MB.
RING_MIN_BYTES = 8 * 2**20
# Across nodes with a worker count that is not a power of two, MPICH's Allreduce first exchanges whole buffers to
# reach one (measured on 3 emulated nodes at 1 Gbit/s: 2.1x the ring's time at 1 MiB, 2.4x at 16 MiB, 1.6x at
# 256 KiB; a tie at 64 KiB): the ring from this size.
RING_ACROSS_NODES_MIN_BYTES = 256 * 2**10
# Several ranks per node on several nodes: 'auto' sums inside each node first below this size. Measured on the
# emulated cluster (2 nodes x 2 ranks, 1 Gbit/s links, 5 repetitions; BENCHMARKS.md, "Many nodes"): 1.6-2.3x
# faster than the flat ring (1.3-1.6x than MPI's own) at 64-256 KiB, where 2 network messages replace 6; from
# 1 MiB a tie within the noise (0.87-1.11x), the intra-node copies taking the same 2 cores as the network stack.
HIERARCHICAL_MAX_BYTES = 2**20

# The collectives the watchdog tells apart in its message (sent as a code with each arrival).
COLLECTIVES = ("allreduce", "broadcast", "allgather", "allgather_array", "barrier")
_ARRIVE = 77
_READY = 78


def _collective(name):
    """Method decorator for a collective: the watchdog's arrival check before it, and its deadline during it."""
    def wrap(method):
        @functools.wraps(method)
        def run(self, *args, **kwargs):
            self._enter(name)
            self._inside = (self.arrivals, name, time.monotonic())
            try:
                return method(self, *args, **kwargs)
            finally:
                self._inside = None
        return run
    return wrap


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError("distnet's MPI backend needs mpi4py and an MPI library: pip install 'distnet[mpi]' "
                          "(that is: pip install mpi4py mpich)") from e
    return MPI


class MPIRingTransport:
    """The ring's neighbours over MPI: send to the right, receive from the left, in one Sendrecv."""

    def __init__(self, comm):
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.right, self.left = (self.rank + 1) % self.size, (self.rank - 1) % self.size

    def sendrecv(self, send, recv):
        self.comm.Sendrecv(send, dest=self.right, sendtag=7, recvbuf=recv, source=self.left, recvtag=7)


class MPICommunicator(Communicator):
    backend = "mpi"

    def __init__(self, comm=None, watchdog_timeout=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # this node's ranks (shared memory between them), and the nodes' leaders (local rank 0 of each node)
        self.node_comm = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = self.node_comm.Get_rank(), self.node_comm.Get_size()
        leaders = self.comm.Split(0 if self.local_rank == 0 else MPI.UNDEFINED, key=self.rank)
        self.leader_comm = None if leaders == MPI.COMM_NULL else leaders
        self.num_nodes = self.comm.allreduce(1 if self.local_rank == 0 else 0)
        self.leader_transport = MPIRingTransport(self.leader_comm) if self.leader_comm is not None else None
        self._ready = np.zeros(1, np.int8)
        self.transport = MPIRingTransport(self.comm)
        self.scratch = ring.Scratch()
        self.arrivals = 0                # collectives entered so far (the watchdog's sequence number)
        self._inside, self._deadline = None, None     # (number, name, start) of the collective under way
        self.set_watchdog(watchdog_timeout)
        protocol.write_status(protocol.PID, self.rank, {"pid": os.getpid(), "host": MPI.Get_processor_name()})

    # -- collectives --------------------------------------------------------------------------------------
    @_collective("allreduce")
    def allreduce_(self, buf, algorithm="auto", codec=None):
        if self.size == 1 or buf.size == 0:
            return buf
        if codec is not None:
            return ring.ring_allreduce(buf, self.transport, self.scratch.get(buf, self.size), codec)
        if algorithm == "auto":
            algorithm = self.auto_algorithm(buf.nbytes)
        if algorithm == "hierarchical":
            return self._hierarchical(buf)
        return self._flat(buf, algorithm, self.comm, self.transport)

    def auto_algorithm(self, nbytes):
        """What 'auto' runs for a buffer of nbytes (the same answer on every rank)."""
        if self.num_nodes > 1 and self.local_size > 1 and nbytes < HIERARCHICAL_MAX_BYTES:
            return "hierarchical"
        if self.num_nodes > 1 and self.size & (self.size - 1) and nbytes >= RING_ACROSS_NODES_MIN_BYTES:
            return "ring"
        return "ring" if nbytes >= RING_MIN_BYTES else "native"

    def _flat(self, buf, algorithm, comm, transport):
        if algorithm == "native":
            comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
            return buf
        if algorithm != "ring":
            raise ValueError(f"allreduce algorithm must be 'auto', 'ring', 'native' or 'hierarchical', received "
                             f"{algorithm!r}")
        return ring.ring_allreduce(buf, transport, self.scratch.get(buf, comm.Get_size()))

    def _hierarchical(self, buf):
        """Horovod's hierarchical allreduce: sum onto each node's leader through shared memory, allreduce between
        the leaders over the network (one rank per node: each node's link carries one ring's traffic, with
        2(nodes-1) messages instead of 2(ranks-1)), then broadcast inside each node."""
        MPI, node = self.MPI, self.node_comm
        if self.local_size > 1:
            node.Reduce(MPI.IN_PLACE if self.local_rank == 0 else buf, buf if self.local_rank == 0 else None,
                        op=MPI.SUM, root=0)
        if self.leader_comm is not None and self.num_nodes > 1:
            self._flat(buf, "ring" if buf.nbytes >= RING_MIN_BYTES else "native", self.leader_comm,
                       self.leader_transport)
        if self.local_size > 1:
            # While the leader talks to the other nodes the others only wait: they sleep until it says the sum is
            # there (MPI would spin, taking cores from the leader's network stack when cores are few)
            if self.local_rank == 0:
                for peer in range(1, self.local_size):
                    node.Send(self._ready, dest=peer, tag=_READY)
            else:
                _wait(node.Irecv(self._ready, source=0, tag=_READY).Test, float("inf"), max_pause=0.001)
            node.Bcast(buf, root=0)
        return buf

    @_collective("broadcast")
    def broadcast_(self, buf, root=0):
        self.comm.Bcast(buf, root=root)
        return buf

    @_collective("allgather")
    def allgather(self, obj):
        return self.comm.allgather(obj)

    @_collective("allgather_array")
    def allgather_array(self, mine, out):
        self.comm.Allgather(mine, out)
        return out

    @_collective("barrier")
    def barrier(self):
        self.comm.Barrier()

    def abort(self, code=1):
        """End the whole job now. MPICH unlinks its shared-memory segments only in MPI_Finalize, so each
        MPI_Abort would leave a few MB in /dev/shm: the aborting rank first removes the segments of its job,
        which it has mapped itself (the other ranks keep their mappings until they are killed)."""
        remove_shared_memory_segments()
        wait_for_output_read()
        self.comm.Abort(code)

    # -- the stall watchdog -------------------------------------------------------------------------------
    def set_watchdog(self, timeout):
        super().set_watchdog(timeout)
        if self.watchdog_timeout is not None and self._deadline is None and self.size > 1:
            self._deadline = threading.Thread(target=self._watch_deadline, name="distnet-watchdog", daemon=True)
            self._deadline.start()

    def _watch_deadline(self):
        """A collective that all ranks entered but that does not complete (a peer became unreachable in the
        middle of it: MPI would wait forever) ends the job after the timeout, naming the ranks this one waits on:
        its ring neighbours, or every other rank for MPI's own collectives."""
        while True:
            time.sleep(0.25)
            inside, timeout = self._inside, self.watchdog_timeout
            if inside is None or timeout is None or time.monotonic() - inside[2] <= timeout:
                continue
            number, name, _ = inside
            others = [r for r in range(self.size) if r != self.rank]
            if len(others) > 2:
                others = f"{others} (ring neighbours: {(self.rank - 1) % self.size}, {(self.rank + 1) % self.size})"
            self._stalled(f"collective #{number} ({name}) did not complete within {timeout:g} s; this rank waits "
                          f"on rank(s) {others}: unreachable, or stalled inside the collective")

    def _enter(self, name):
        """Before every collective, when the watchdog is on: every rank reports its arrival (and which
        collective it is in) to rank 0, which names the ranks that do not arrive within the timeout; the others
        notice a silent rank 0 the same way. Either way the job ends with that message instead of hanging.
        Collectives are counted from the start whether the watchdog is on or not, so that ranks agree on the
        numbers; turn it on on every rank (DISTNET_WATCHDOG_TIMEOUT, or distributed.init on each)."""
        self.arrivals += 1
        if self.watchdog_timeout is None or self.size == 1:
            return
        timeout = self.watchdog_timeout
        here = np.array([self.arrivals, COLLECTIVES.index(name)], dtype=np.int64)
        if self.rank == 0:
            boxes = [np.zeros(2, np.int64) for _ in range(self.size - 1)]
            reqs = [self.comm.Irecv(boxes[r - 1], source=r, tag=_ARRIVE) for r in range(1, self.size)]
            if not _wait(lambda: all(q.Test() for q in reqs), timeout):
                missing = [r for r, q in zip(range(1, self.size), reqs) if not q.Test()]
                self._stalled(f"rank(s) {missing} did not reach collective #{self.arrivals} ({name}) within "
                              f"{timeout:g} s (stalled, deadlocked or gone without MPI noticing)")
            wrong = {r: COLLECTIVES[int(b[1])] for r, b in zip(range(1, self.size), boxes)
                     if int(b[0]) != self.arrivals or int(b[1]) != here[1]}
            if wrong:
                where = ", ".join(f"rank {r} in {c}" for r, c in wrong.items())
                self._stalled(f"ranks are in different collectives: rank 0 in {name} #{self.arrivals}, {where} "
                              "(e.g. one rank called evaluate() while another called fit())")
        else:
            self.comm.Send(here, dest=0, tag=_ARRIVE)
        barrier = self.comm.Ibarrier()
        grace = 0 if self.rank == 0 else 2.0 + timeout * 0.5     # let rank 0 name the culprits first
        if not _wait(barrier.Test, timeout + grace):
            self._stalled(f"waited {timeout + grace:g} s in {name} (collective #{self.arrivals}) for the other "
                          "ranks (rank 0 or a rank it waits for is stalled)")

    def _stalled(self, message):
        sys.__stderr__.write(f"[rank {self.rank}/{self.size}] distnet watchdog: {message}; ending the job\n")
        sys.__stderr__.flush()
        protocol.write_status(protocol.ERROR, self.rank, {"error": f"watchdog: {message}"})
        self.abort(3)
        # MPI_Abort returns when the launcher cannot reach every node (a link is down): the job must end anyway,
        # and this rank must not go on to report a second, misleading reason
        os._exit(3)


SEGMENT_PREFIX = "/dev/shm/mpich_shm_"


def remove_shared_memory_segments(maps="/proc/self/maps"):
    """Unlink the MPICH segments (/dev/shm/mpich_shm_*) that this process maps; return their paths. On a node
    every rank maps its job's segments, and no other job's, so this removes exactly what the job created."""
    try:
        with open(maps) as f:
            paths = {line.split(None, 5)[5].strip() for line in f if SEGMENT_PREFIX in line}
    except OSError:
        return []
    return protocol.remove_files(sorted(p for p in paths if p.startswith(SEGMENT_PREFIX)
                                        and not p.endswith(" (deleted)")))


def wait_for_output_read(timeout=1.0, fds=(1, 2)):
    """Wait (up to `timeout` s) until mpirun has read what this process wrote to its stdout/stderr pipes: on
    MPI_Abort Hydra kills the job as soon as it hears of it, and what it has not read yet (the traceback that
    explains the abort) would be lost."""
    pipes = []
    for fd in fds:
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                pipes.append(fd)
        except OSError:
            pass

    def unread(fd):
        try:
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0
    _wait(lambda: all(unread(fd) == 0 for fd in pipes), timeout)


def _wait(done, timeout, max_pause=0.01):
    """Poll done() until it is true (return True) or `timeout` seconds pass (return False): spin briefly, then
    sleep in growing steps (up to max_pause), so a healthy step pays microseconds and a stalled one no CPU."""
    start = time.perf_counter()
    pause = 0.0
    while not done():
        waited = time.perf_counter() - start
        if waited > timeout:
            return False
        if waited > 1e-4:
            pause = min(max(pause * 2, 1e-5), max_pause)
            time.sleep(pause)
    return True
