"""The Ray communicator: the ring over the workers' TCP/shared-memory transport, and control messages
(allgather, broadcast, the object-store "star" allreduce kept for comparison) through Ray actor calls."""
import os

import numpy as np

from .. import ring
from ..communicator import Communicator


class RayCommunicator(Communicator):
    backend = "ray"

    def __init__(self, rank, size, peers, mailbox, local_rank=0, local_size=1, timeout=None, ring_transport=None):
        self.rank, self.size, self.peers, self.mailbox = rank, size, peers, mailbox
        self.local_rank, self.local_size = local_rank, local_size
        self.timeout = timeout
        self.ring_transport = ring_transport
        self.collectives = 0          # collectives entered so far: tells a stalled rank from the waiting ones
        self.watchdog_timeout = timeout
        self._seq = 0
        self.scratch = ring.Scratch()

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
    def allreduce_(self, buf, algorithm="auto", codec=None):
        self.collectives += 1
        if self.size == 1 or buf.size == 0:
            return buf
        if algorithm == "auto" or codec is not None:
            algorithm = "ring" if self.ring_transport is not None or codec is not None else "star"
        if algorithm in ("native", "star"):
            return self._star_allreduce(buf)
        return ring.ring_allreduce(buf, self.transport, self.scratch.get(buf, self.size), codec)

    def allgather_array(self, mine, out):
        self.collectives += 1
        return ring.ring_allgather(mine, out, self.transport)

    def set_watchdog(self, timeout):
        """Every wait for a peer (ring chunk or control message) gives up after `timeout` seconds with a
        TimeoutError naming the peer; the driver then asks every actor how far it got and names the stalled
        ranks (WorkerFailure.stalled)."""
        super().set_watchdog(timeout)
        self.timeout = self.watchdog_timeout
        if self.ring_transport is not None:
            self.ring_transport.set_timeout(self.timeout)

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
        self.collectives += 1
        if self.ring_transport is not None:      # a one-element ring allreduce: no trip through Ray
            ring.ring_allreduce(np.zeros(self.size, np.float32), self.ring_transport)
        else:
            self.allgather(None)

    def abort(self, code=1):
        os._exit(code)
