"""The Ray backend: workers are Ray actors (one per rank, placed by a placement group) and gradients are summed
by the same `ring_allreduce` as under MPI.

    import distnet.ray
    results = distnet.ray.run(train, num_workers=4, max_failures=2)      # train() builds and fits a model

Two transports, both set up through Ray:
- the ring's transport is a pair of TCP connections per worker (to its right and from its left neighbour,
  on the node addresses Ray reports), opened once when the group starts; a chunk goes straight from NumPy
  memory into the socket and is received straight into the destination buffer;
- small control messages (allgather of Python values, broadcasts, the "star" allreduce kept for comparison)
  travel as arguments of actor calls through Ray: each worker actor is threaded, and a `deliver` call drops
  the payload into its mailbox while its training thread runs.
distnet-bench allreduce --backend ray measures both; the README states the result.
"""
import concurrent.futures
import mmap
import os
import socket
import struct
import sys
import threading
import time
import uuid

import numpy as np

from . import ring
from .communicator import Communicator



def _ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError("distnet's Ray backend needs Ray: pip install 'distnet[ray]' (that is: pip install "
                          "'ray[default]')") from e
    return ray


class Mailbox:
    """Chunks delivered to this worker, by (sender, tag); `take` blocks until the one asked for arrives."""

    def __init__(self):
        self._items, self._cv = {}, threading.Condition()

    def put(self, src, tag, payload):
        with self._cv:
            self._items[(src, tag)] = payload
            self._cv.notify_all()

    def take(self, src, tag, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while (src, tag) not in self._items:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no message from rank {src} (tag {tag}) within {timeout:g} s")
                self._cv.wait(left)
            return self._items.pop((src, tag))


class TcpRing:
    """The ring transport: a socket to the right neighbour and one from the left (TCP, set up through Ray).

    Between workers on the same machine the data itself goes through shared memory: each worker copies its
    outgoing chunk into its own /dev/shm segment, sends a 16-byte header on the socket, and the neighbour
    copies the chunk out and acknowledges with one byte (2 memory copies per hop, as MPI's shared-memory
    channel does, instead of a trip through the kernel's socket buffers). Across machines the chunk follows
    the header on the socket. sendrecv sends from a helper thread while receiving, so neighbours never wait
    on each other."""

    _HEADER = struct.Struct("<qq")        # (bytes, shared-memory generation or -1 for data on the socket)

    def __init__(self, rank, size, timeout=None):
        self.rank, self.size, self.timeout = rank, size, timeout
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.right = self.left = None
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="distnet-send")
        self.shm_right = self.shm_left = False
        self._out = None            # (generation, path, mmap, ndarray of bytes) of this worker's outbox
        self._gen = 0
        self._awaiting_ack = False
        self._in = {}               # generation -> (mmap, bytes view) of the left neighbour's outbox
        self._job = uuid.uuid4().hex[:12]

    def listen(self, host):
        self._server.bind((host, 0))
        self._server.listen(2)
        return host, self._server.getsockname()[1]

    def connect(self, right_address, right_same_node=False, left_same_node=False, job=None):
        self._job = job or self._job
        use_shm = os.path.isdir("/dev/shm") and os.environ.get("DISTNET_RAY_SHM", "1") != "0"
        self.shm_right, self.shm_left = right_same_node and use_shm, left_same_node and use_shm
        self.right = socket.create_connection(right_address, timeout=60)
        self.right.sendall(self.rank.to_bytes(4, "little"))
        self._server.settimeout(60)
        self.left, _ = self._server.accept()
        hello = _recv_exact(self.left, memoryview(bytearray(4)), "the left neighbour")
        if int.from_bytes(hello, "little") != (self.rank - 1) % self.size:
            raise ConnectionError(f"rank {self.rank}: expected rank {(self.rank - 1) % self.size} on the left, got "
                                  f"rank {int.from_bytes(hello, 'little')}")
        for s in (self.right, self.left):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.settimeout(self.timeout)
        self._server.close()

    def _outbox(self, nbytes):
        if self._out is None or self._out[3].size < nbytes:
            self._gen += 1
            path = f"/dev/shm/distnet-{self._job}-r{self.rank}-g{self._gen}"
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
            try:
                os.ftruncate(fd, max(nbytes, 1))
                mm = mmap.mmap(fd, max(nbytes, 1))
            finally:
                os.close(fd)
            self._close_outbox()
            self._out = (self._gen, path, mm, np.frombuffer(mm, dtype=np.uint8))
        return self._out

    def _inbox(self, gen, nbytes):
        if gen not in self._in:
            for old in list(self._in):
                self._in.pop(old)[0].close()
            path = f"/dev/shm/distnet-{self._job}-r{(self.rank - 1) % self.size}-g{gen}"
            fd = os.open(path, os.O_RDONLY)
            try:
                mm = mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._in[gen] = (mm, np.frombuffer(mm, dtype=np.uint8))
        return self._in[gen][1][:nbytes]

    def _send(self, send):
        data = memoryview(send).cast("B")
        if not self.shm_right:
            self.right.sendall(self._HEADER.pack(len(data), -1))
            self.right.sendall(data)
            return
        if self._awaiting_ack:                      # the neighbour must be done with the previous chunk
            _recv_exact(self.right, memoryview(bytearray(1)), f"rank {(self.rank + 1) % self.size}")
            self._unlink_outbox()                   # it has mapped the file: the name is no longer needed
        gen, _, _, out = self._outbox(len(data))
        out[:len(data)] = np.frombuffer(data, dtype=np.uint8)
        self.right.sendall(self._HEADER.pack(len(data), gen))
        self._awaiting_ack = True

    def sendrecv(self, send, recv):
        # Through shared memory a send never waits on the neighbour's receive (only on its acknowledgement of
        # the previous chunk, which it gives before it can need ours), so it runs inline; on a socket a large
        # send could fill the buffers while both neighbours are sending, so it runs on the helper thread.
        sending = None
        if self.shm_right:
            self._send(send)
        else:
            sending = self._pool.submit(self._send, send)
        who = f"rank {(self.rank - 1) % self.size}"
        header = _recv_exact(self.left, memoryview(bytearray(self._HEADER.size)), who)
        nbytes, gen = self._HEADER.unpack(header)
        view = memoryview(recv).cast("B")
        if nbytes != len(view):
            raise RuntimeError(f"ring out of step: rank {(self.rank - 1) % self.size} sent {nbytes} bytes, rank "
                               f"{self.rank} expected {len(view)}")
        if gen < 0:
            _recv_exact(self.left, view, who)
        else:
            np.frombuffer(view, dtype=np.uint8)[...] = self._inbox(gen, nbytes)
            self.left.sendall(b"a")
        if sending is not None:
            sending.result()

    def _unlink_outbox(self):
        """Remove the outbox's name once the neighbour has it mapped, so a killed worker leaks nothing."""
        if self._out is not None and self._out[1] is not None:
            try:
                os.unlink(self._out[1])
            except OSError:
                pass
            self._out = (self._out[0], None, self._out[2], self._out[3])

    def _close_outbox(self):
        if self._out is not None:
            self._unlink_outbox()
            _, _, mm, _ = self._out
            self._out = None
            try:
                mm.close()
            except BufferError:       # a view still exists; the mapping goes with the process
                pass

    def close(self):
        self._close_outbox()
        for s in (self.right, self.left):
            if s is not None:
                s.close()
        self._pool.shutdown(wait=False)


def _recv_exact(sock, view, who):
    """Fill the memoryview `view` from sock (a memoryview: slicing a bytearray would fill a copy)."""
    got, n = 0, len(view)
    while got < n:
        try:
            k = sock.recv_into(view[got:], n - got)
        except socket.timeout:
            raise TimeoutError(f"no data from {who} within {sock.gettimeout():g} s (stalled?)") from None
        if k == 0:
            raise ConnectionError(f"{who} closed its connection (its worker died?)")
        got += k
    return view


class RayCommunicator(Communicator):
    backend = "ray"

    def __init__(self, rank, size, peers, mailbox, local_rank=0, local_size=1, timeout=None, ring_transport=None):
        self.rank, self.size, self.peers, self.mailbox = rank, size, peers, mailbox
        self.local_rank, self.local_size = local_rank, local_size
        self.timeout = timeout
        self.ring_transport = ring_transport
        self.collectives = 0          # collectives entered so far: tells a stalled rank from the waiting ones
        self._seq = 0
        self._scratch = None

    # -- point to point ------------------------------------------------------------------------------------
    def _tag(self):
        self._seq += 1
        return self._seq

    def _send(self, dst, tag, payload):
        self.peers[dst].deliver.remote(self.rank, tag, payload)

    def _recv(self, src, tag):
        return self.mailbox.take(src, tag, self.timeout)

    # -- the ring transport --------------------------------------------------------------------------------
    def sendrecv(self, send, recv):
        tag = self._tag()
        self._send((self.rank + 1) % self.size, tag, send)
        recv[...] = self._recv((self.rank - 1) % self.size, tag)

    # -- collectives ---------------------------------------------------------------------------------------
    def allreduce_(self, buf, algorithm="auto"):
        self.collectives += 1
        if self.size == 1 or buf.size == 0:
            return buf
        if algorithm == "auto":
            algorithm = "ring" if self.ring_transport is not None else "star"
        if algorithm in ("native", "star"):
            return self._star_allreduce(buf)
        need = -(-buf.size // self.size)
        if self._scratch is None or self._scratch.size < need or self._scratch.dtype != buf.dtype:
            self._scratch = np.empty(need, dtype=buf.dtype)
        return ring.ring_allreduce(buf, self.ring_transport or self, self._scratch)

    def _star_allreduce(self, buf):
        tag = self._tag()
        if self.rank == 0:
            for src in range(1, self.size):
                buf += self._recv(src, tag)
            for dst in range(1, self.size):
                self._send(dst, tag, buf)
        else:
            self._send(0, tag, buf)
            buf[...] = self._recv(0, tag)
        return buf

    def broadcast_(self, buf, root=0):
        self.collectives += 1
        tag = self._tag()
        if self.rank == root:
            for dst in range(self.size):
                if dst != root:
                    self._send(dst, tag, buf)
        else:
            buf[...] = self._recv(root, tag)
        return buf

    def allgather(self, obj):
        self.collectives += 1
        tag = self._tag()
        if self.rank == 0:
            everyone = [obj] + [self._recv(src, tag) for src in range(1, self.size)]
            for dst in range(1, self.size):
                self._send(dst, tag, everyone)
            return everyone
        self._send(0, tag, obj)
        return self._recv(0, tag)

    @property
    def transport(self):
        return self.ring_transport or self

    def barrier(self):
        if self.ring_transport is not None:      # a one-element ring allreduce: no trip through Ray
            ring.ring_allreduce(np.zeros(self.size, np.float32), self.ring_transport)
        else:
            self.allgather(None)

    def abort(self, code=1):
        os._exit(code)


class _Worker:
    """One rank: a threaded Ray actor that runs the training code and receives chunks from its peers."""

    def __init__(self, rank, size, env):
        os.environ.update(env)
        self.rank, self.size = rank, size
        self.mailbox = Mailbox()
        self.comm = None

    def __repr__(self):          # Ray prefixes the actor's output with this
        return f"rank {self.rank}/{self.size}"

    def node_id(self):
        return _ray().get_runtime_context().get_node_id()

    def open_ring(self, host, timeout):
        self.ring = TcpRing(self.rank, self.size, timeout)
        return self.ring.listen(host)

    def connect(self, peers, node_ids, addresses, timeout, job):
        from . import world
        mine = node_ids[self.rank]
        local = [r for r, n in enumerate(node_ids) if n == mine]
        if self.size > 1:
            right, left = (self.rank + 1) % self.size, (self.rank - 1) % self.size
            self.ring.connect(tuple(addresses[right]), node_ids[right] == mine, node_ids[left] == mine, job)
        self.comm = RayCommunicator(self.rank, self.size, peers, self.mailbox, local.index(self.rank), len(local),
                                    timeout, self.ring if self.size > 1 else None)
        world.set_communicator(self.comm)
        # Ray's worker process loaded NumPy (and OpenBLAS's thread pool) before our environment arrived, so the
        # thread count is applied through threadpoolctl: the variable if set, else cores / workers on this node.
        from threadpoolctl import threadpool_limits

        from .mpi import blas_threads_for
        requested = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
        threadpool_limits(int(requested) if requested else blas_threads_for(len(local)), user_api="blas")
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


def init_ray(address=None, num_workers=1, cpus_per_worker=1):
    """Join the Ray cluster at `address` (or $RAY_ADDRESS); without one, start a private single-node instance
    bound to 127.0.0.1 with the dashboard off and enough CPU slots for num_workers (oversubscribing cores)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # Ray 2.x resolves 127.0.0.1 to the machine's external address and listens on every interface; its
        # single-machine mode (the one it uses on macOS/Windows) binds everything to loopback instead.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray's metrics agents take CPU from the workers; on a 2-core machine, side by side with MPI, steps
        # measured 1.16-1.42x MPI's with them and 0.98-0.99x without (in 2 runs of 3; see BENCHMARKS.md)
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    os.environ.setdefault("RAY_COLOR_PREFIX", "1" if sys.stdout.isatty() else "0")
    ray = _ray()
    global _PRIVATE_CPUS
    need = max(os.cpu_count() or 1, int(-(-num_workers * cpus_per_worker // 1)))
    if ray.is_initialized():
        if _PRIVATE_CPUS is None or _PRIVATE_CPUS >= need:
            return ray
        ray.shutdown()                    # our own local instance is too small for this job: start a larger one
    if address:
        ray.init(address=address, log_to_driver=True)
        _PRIVATE_CPUS = None
    else:
        # CPU slots are scheduling tokens: N workers on fewer cores oversubscribe, as mpirun -n N does
        ray.init(num_cpus=need, include_dashboard=False, log_to_driver=True)
        _PRIVATE_CPUS = need
    return ray


_PRIVATE_CPUS = None      # CPU slots of the local Ray instance distnet started, or None


def shutdown_private():
    """Stop the local Ray instance distnet started (its daemons would otherwise keep taking CPU)."""
    global _PRIVATE_CPUS
    if _PRIVATE_CPUS is not None:
        _ray().shutdown()
        _PRIVATE_CPUS = None


class WorkerGroup:
    """num_workers actors in a placement group (spread across nodes when there are several), wired into a ring."""

    def __init__(self, num_workers, resources_per_worker=None, placement_strategy="SPREAD", timeout=None,
                 env=None):
        ray = _ray()
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        self._remove_pg = remove_placement_group
        resources = dict(resources_per_worker or {"CPU": 1})
        cpus = resources.pop("CPU", 1)
        bundle = {"CPU": cpus, **resources}
        self.pg = placement_group([dict(bundle) for _ in range(num_workers)], strategy=placement_strategy)
        try:
            ray.get(self.pg.ready(), timeout=float(os.environ.get("DISTNET_RAY_PLACEMENT_TIMEOUT", 30)))
        except ray.exceptions.GetTimeoutError:
            total = ray.cluster_resources()
            self._remove_pg(self.pg)
            raise RuntimeError(f"Ray cannot place {num_workers} workers of {bundle}: the cluster has {total}") \
                from None
        worker_cls = ray.remote(_Worker)
        threads = max(4, num_workers + 2)
        self.actors = [
            worker_cls.options(num_cpus=cpus, resources=resources or None, max_concurrency=threads,
                               scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i)).remote(
                i, num_workers, dict(env or {}))
            for i in range(num_workers)]
        node_ids = ray.get([a.node_id.remote() for a in self.actors])
        self.node_ids = node_ids
        hosts = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
        addresses = ray.get([a.open_ring.remote(hosts[nid], timeout) for a, nid in zip(self.actors, node_ids)])
        job = uuid.uuid4().hex[:12]
        ray.get([a.connect.remote(self.actors, node_ids, addresses, timeout, job) for a in self.actors])

    def run(self, method, *args):
        """Call `method` on every actor; return the results in rank order, or raise the first failure
        (an exception on a rank, or a dead actor) after stopping every other actor."""
        ray = _ray()
        refs = [getattr(a, method).remote(*args) for a in self.actors]
        pending, results = list(refs), {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rank = refs.index(done[0])
            try:
                results[rank] = ray.get(done[0])
            except Exception as e:
                stalled = self._stalled_ranks() if "TimeoutError" in str(e) else None
                self.shutdown()
                raise WorkerFailure(rank, len(refs), e, stalled) from e
        return [results[r] for r in range(len(refs))]

    def _stalled_ranks(self):
        """After a timeout: the ranks that entered the fewest collectives are the ones the others waited for."""
        ray = _ray()
        try:
            counts = ray.get([a.progress.remote() for a in self.actors], timeout=10)
        except Exception:
            return None
        low = min(counts)
        return [r for r, c in enumerate(counts) if c == low] if low < max(counts) else None

    def shutdown(self):
        ray = _ray()
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        try:
            self._remove_pg(self.pg)
        except Exception:
            pass


class WorkerFailure(RuntimeError):
    """A rank raised or its actor died; `rank` names it, `stalled` the ranks it timed out waiting for."""

    def __init__(self, rank, size, cause, stalled=None):
        self.rank, self.size, self.cause, self.stalled = rank, size, cause, stalled
        dead = type(cause).__name__ in ("RayActorError", "ActorDiedError", "ActorUnavailableError")
        what = "its actor died (process killed or node lost)" if dead else f"it raised:\n{cause}"
        if stalled:
            what = (f"it timed out waiting for its peers; stalled: rank(s) {stalled} stopped at an earlier "
                    f"collective than the others\n{cause}")
        super().__init__(f"distnet worker rank {rank} of {size} failed: {what}")


def run(train_fn, num_workers=2, resources_per_worker=None, max_failures=0, address=None, args=(), kwargs=None,
        placement_strategy="SPREAD", timeout=None):
    """Run `train_fn(*args, **kwargs)` on `num_workers` Ray actors as one data-parallel job; return the list of
    per-rank results. Inside, `model.fit` trains data-parallel over the actors, exactly as under mpirun.

    max_failures: how many times to restart the whole worker group when a worker fails (an exception or a
    dead actor/node); `train_fn` resumes from its checkpoints if it uses BackupAndRestore.
    timeout: seconds a worker waits for a peer's message before giving up (a stall watchdog; default none)."""
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, received {num_workers!r}")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max_failures must be an int >= 0, received {max_failures!r}")
    cpus = (resources_per_worker or {}).get("CPU", 1)
    init_ray(address, num_workers, cpus)
    return _with_restarts(lambda group: group.run("run_function", train_fn, tuple(args), dict(kwargs or {})),
                          num_workers, resources_per_worker, max_failures, placement_strategy, timeout)


def run_script(path, argv=(), num_workers=2, resources_per_worker=None, max_failures=0, address=None,
               placement_strategy="SPREAD", timeout=None):
    """Run a training script on num_workers actors, as `mpirun -n N python script.py argv` would."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"script {path!r} does not exist")
    cpus = (resources_per_worker or {}).get("CPU", 1)
    init_ray(address, num_workers, cpus)
    path, cwd = os.path.abspath(path), os.getcwd()
    return _with_restarts(lambda group: group.run("run_script", path, list(argv), cwd), num_workers,
                          resources_per_worker, max_failures, placement_strategy, timeout)


def _with_restarts(body, num_workers, resources_per_worker, max_failures, placement_strategy, timeout):
    for attempt in range(max_failures + 1):
        env = {"DISTNET_RESTART_COUNT": str(attempt)}
        group = WorkerGroup(num_workers, resources_per_worker, placement_strategy, timeout, env)
        try:
            out = body(group)
            group.shutdown()
            return out
        except WorkerFailure as failure:
            print(f"distnet.ray: {failure}", file=sys.stderr, flush=True)
            if attempt == max_failures:
                raise
            print(f"distnet.ray: restarting the worker group ({attempt + 1} of {max_failures}); training resumes "
                  "from the last checkpoint if it uses BackupAndRestore", file=sys.stderr, flush=True)
