"""The Ray communicator: the ring over the workers' TCP/shared-memory transport, and control messages
(allgather, broadcast, the object-store "star" allreduce kept for comparison) through Ray actor calls."""
import contextlib
import os
import threading

import numpy as np

from .. import ring
from ..communicator import Communicator, MembershipChanged

# what a collective raises when a peer is gone or the group is being changed
_PEER_ERRORS = (OSError, EOFError)        # ConnectionError, TimeoutError and socket.timeout are OSErrors


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
        self.generation = 0           # elastic: how many membership changes so far
        self._offer, self._offer_cv = None, threading.Condition()

    # -- elastic membership (the driver's calls arrive on other actor threads) ------------------------------
    @contextlib.contextmanager
    def guarded(self):
        """In an elastic group, a peer that fails mid-collective means: the membership is changing."""
        if not self.elastic:
            yield
            return
        try:
            yield
        except MembershipChanged:
            raise
        except _PEER_ERRORS as e:
            self.interrupt()           # unblock my neighbours too, so the whole ring notices at once
            raise MembershipChanged(f"rank {self.rank}: a peer left during a collective ({e})") from e

    def interrupt(self):
        """Stop using the current ring: unblock every wait on it (the driver, or a failed collective)."""
        if self.ring_transport is not None:
            self.ring_transport.shutdown()
        self.mailbox.interrupt()

    def offer(self, config):
        """The driver's next membership: a dict (rank, size, peers, ring, local_rank, local_size, left, joined,
        generation) or {'error': message} when the job cannot continue."""
        with self._offer_cv:
            self._offer = config
            self._offer_cv.notify_all()

    def await_membership(self, timeout=None):
        with self._offer_cv:
            if not self._offer_cv.wait_for(lambda: self._offer is not None, timeout):
                raise RuntimeError(f"rank {self.rank}: no new membership from the driver within {timeout:g} s")
            config, self._offer = self._offer, None
        if "error" in config:
            raise RuntimeError(config["error"])
        old = self.ring_transport
        self.rank, self.size, self.peers = config["rank"], config["size"], config["peers"]
        self.local_rank, self.local_size = config["local_rank"], config["local_size"]
        self.ring_transport, self.generation = config["ring"], config["generation"]
        self.joining = self.change_requested = False
        self._seq = 0
        self.mailbox.reset(self.generation)
        if old is not None and old is not self.ring_transport:
            old.close()
        return {"left": config["left"], "joined": config["joined"], "size": self.size}

    # -- point to point ------------------------------------------------------------------------------------
    def _tag(self):
        self._seq += 1
        return self._seq

    def _send(self, dst, tag, payload):
        self.peers[dst].deliver.remote(self.rank, (self.generation, tag), payload)

    def _recv(self, src, tag):
        return self.mailbox.take(src, (self.generation, tag), self.timeout)

    # -- the ring transport --------------------------------------------------------------------------------
    def sendrecv(self, send, recv):
        tag = self._tag()
        self._send((self.rank + 1) % self.size, tag, send)
        recv[...] = self._recv((self.rank - 1) % self.size, tag)

    # -- collectives ---------------------------------------------------------------------------------------
    def allreduce_(self, buf, algorithm="auto", codec=None):
        with self.guarded():
            return self._allreduce(buf, algorithm, codec)

    def _allreduce(self, buf, algorithm, codec):
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
        with self.guarded():
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
        with self.guarded():
            return self._broadcast(buf, root)

    def _broadcast(self, buf, root):
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
        with self.guarded():
            return self._allgather(obj)

    def _allgather(self, obj):
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
        with self.guarded():
            if self.ring_transport is not None:      # a one-element ring allreduce: no trip through Ray
                ring.ring_allreduce(np.zeros(self.size, np.float32), self.ring_transport)
            else:
                self._allgather(None)

    def abort(self, code=1):
        os._exit(code)
