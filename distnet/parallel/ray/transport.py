"""The Ray ring's wire: a TCP connection to the right neighbour and one from the left, with chunk data through
/dev/shm between workers of one node; and the mailbox that receives small control messages sent through Ray."""
import concurrent.futures
import glob
import mmap
import os
import socket
import struct
import threading
import time
import uuid

import numpy as np

from .. import protocol


class Mailbox:
    """Chunks delivered to this worker, by (sender, tag); `take` blocks until the one asked for arrives."""

    def __init__(self):
        self._items, self._cv = {}, threading.Condition()
        self.interrupted = False

    def put(self, src, tag, payload):
        with self._cv:
            self._items[(src, tag)] = payload
            self._cv.notify_all()

    def interrupt(self):
        """Wake every waiting take with ConnectionError (an elastic group is changing)."""
        with self._cv:
            self.interrupted = True
            self._cv.notify_all()

    def reset(self, generation):
        """Forget undelivered messages of older memberships (tags are (generation, seq)); keep those of this one,
        which faster peers may have sent already, and accept new ones."""
        with self._cv:
            self._items = {k: v for k, v in self._items.items() if k[1][0] >= generation}
            self.interrupted = False

    def take(self, src, tag, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while (src, tag) not in self._items:
                if self.interrupted:
                    raise ConnectionError(f"the group changed while waiting for rank {src}")
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
        self.shm_right = False
        self._out = None            # (generation, path, mmap, ndarray of bytes) of this worker's outbox
        self._gen = 0
        self._awaiting_ack = False
        self._in = {}               # generation -> (mmap, bytes view) of the left neighbour's outbox
        self._job = uuid.uuid4().hex[:12]

    def listen(self, host):
        self._server.bind((host, 0))
        self._server.listen(2)
        return host, self._server.getsockname()[1]

    def connect(self, right_address, right_same_node=False, job=None):
        self._job = job or self._job
        use_shm = os.path.isdir("/dev/shm") and os.environ.get(protocol.RAY_SHM, "1") != "0"
        self.shm_right = right_same_node and use_shm
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

    def shutdown(self):
        """Unblock any send or receive in progress (from another thread): an elastic group is changing."""
        for s in (self.right, self.left):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def set_timeout(self, timeout):
        """Seconds a receive from a neighbour may wait (None: forever)."""
        self.timeout = timeout
        for s in (self.right, self.left):
            if s is not None:
                s.settimeout(timeout)

    def _outbox(self, nbytes):
        if self._out is None or self._out[3].size < nbytes:
            self._gen += 1
            path = outbox_path(self._job, self.rank, self._gen)
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
            path = outbox_path(self._job, (self.rank - 1) % self.size, gen)
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
        if self._awaiting_ack and self.right is not None:
            # the right neighbour may not have mapped the last chunk yet: removing its file now would leave it
            # nothing to read (an elastic group closes a ring right after its last allreduce)
            try:
                self.right.settimeout(5.0)
                _recv_exact(self.right, memoryview(bytearray(1)), "the right neighbour")
            except (OSError, ConnectionError, TimeoutError):
                pass                 # gone: nobody will read the file
            self._awaiting_ack = False
        self._close_outbox()
        for s in (self.right, self.left):
            if s is not None:
                s.close()
        self._pool.shutdown(wait=False)


def outbox_path(job, rank, generation):
    """The /dev/shm file through which `rank` of worker group `job` hands chunks to its right neighbour."""
    return f"/dev/shm/distnet-{job}-r{rank}-g{generation}"


def remove_outboxes(job):
    """Unlink every outbox of worker group `job` left on this machine (a worker that died or was killed before
    its neighbour took the chunk leaves its file behind); return the paths removed."""
    return protocol.remove_files(glob.glob(outbox_path(job, "*", "*")))


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
