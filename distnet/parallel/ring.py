"""Ring collectives, written once for every transport.

Allreduce: the buffer is cut into `size` chunks. Reduce-scatter: in size-1 steps each worker sends one chunk to
its right neighbour and adds the chunk arriving from its left, so worker r ends up owning the full sum of chunk
(r+1) % size. Allgather: in size-1 more steps the summed chunks travel around the ring. Each worker sends and
receives 2*(size-1)/size of the buffer in total, independent of the number of workers: bandwidth-optimal.

A transport provides `rank`, `size` and `sendrecv(send, recv)`: send a NumPy array to the right neighbour
while receiving an array of recv's length from the left neighbour into `recv`.

Compression (`codec`): chunks travel encoded (fp16, bf16) and are decoded and summed in float32. The owner of
each summed chunk rounds it through the codec too before the allgather, so every worker ends with bit-identical
values (replicas must not drift apart).
"""
import numpy as np


def chunk_bounds(length, size):
    """Start offsets of `size` near-equal chunks of a buffer of `length` elements, plus the end."""
    return [length * i // size for i in range(size + 1)]


class Scratch:
    """The landing buffer for incoming chunks, kept between calls and grown when a larger buffer comes, so the
    steady state allocates nothing (one per communicator)."""

    def __init__(self):
        self.buf = None

    def get(self, buf, size):
        """A scratch array of buf's dtype with room for the longest of `size` chunks of buf."""
        need = -(-buf.size // max(size, 1))
        if self.buf is None or self.buf.size < need or self.buf.dtype != buf.dtype:
            self.buf = np.empty(need, dtype=buf.dtype)
        return self.buf


class Codec:
    """How float32 values travel: encode(x, out) -> wire array, decode(wire, out)."""
    name, wire_dtype = "none", None


class FP16(Codec):
    name, wire_dtype = "fp16", np.float16

    def encode(self, x, out):
        out[...] = x
        return out

    def decode(self, wire, out):
        out[...] = wire
        return out


class BF16(Codec):
    """bfloat16 as the upper 16 bits of float32, rounded to nearest even (NumPy has no bfloat16 dtype)."""
    name, wire_dtype = "bf16", np.uint16

    def encode(self, x, out):
        bits = x.view(np.uint32)
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1)))
        np.right_shift(rounded, 16, out=out, casting="unsafe")
        return out

    def decode(self, wire, out):
        np.left_shift(wire.astype(np.uint32), 16, out=out.view(np.uint32))
        return out


CODECS = {"fp16": FP16(), "bf16": BF16()}


def ring_allreduce(buf, transport, scratch=None, codec=None):
    """Sum the 1-D contiguous array `buf` over all workers of `transport`, in place.

    scratch: an optional preallocated array of at least ceil(len/size) elements of buf's dtype, reused between
    calls so that the steady state allocates nothing. codec: an optional wire encoding (see module doc)."""
    n, r = transport.size, transport.rank
    if n == 1 or buf.size == 0:
        return buf
    bounds = chunk_bounds(buf.size, n)
    longest = max(bounds[i + 1] - bounds[i] for i in range(n))
    if scratch is None or scratch.size < longest or scratch.dtype != buf.dtype:
        scratch = np.empty(longest, dtype=buf.dtype)

    def chunk(i):
        i %= n
        return buf[bounds[i]:bounds[i + 1]]

    if codec is None:
        for step in range(n - 1):                    # reduce-scatter
            incoming = chunk(r - step - 1)
            landing = scratch[:incoming.size]
            transport.sendrecv(chunk(r - step), landing)
            incoming += landing
        for step in range(n - 1):                    # allgather
            transport.sendrecv(chunk(r - step + 1), chunk(r - step))
        return buf
    out_wire = np.empty(longest, dtype=codec.wire_dtype)
    in_wire = np.empty(longest, dtype=codec.wire_dtype)
    for step in range(n - 1):
        send, incoming = chunk(r - step), chunk(r - step - 1)
        transport.sendrecv(codec.encode(send, out_wire[:send.size]), in_wire[:incoming.size])
        incoming += codec.decode(in_wire[:incoming.size], scratch[:incoming.size])
    own = chunk(r + 1)                               # round my summed chunk exactly as the others will see it
    codec.decode(codec.encode(own, out_wire[:own.size]), own)
    for step in range(n - 1):
        send, incoming = chunk(r - step + 1), chunk(r - step)
        transport.sendrecv(codec.encode(send, out_wire[:send.size]), in_wire[:incoming.size])
        codec.decode(in_wire[:incoming.size], incoming)
    return buf


def ring_allgather(mine, out, transport):
    """Every worker's equal-length 1-D `mine`, concatenated in rank order into `out` (size * len(mine))."""
    n, r, k = transport.size, transport.rank, mine.size
    out[r * k:(r + 1) * k] = mine
    for step in range(n - 1):
        send, recv = (r - step) % n, (r - step - 1) % n
        transport.sendrecv(out[send * k:(send + 1) * k], out[recv * k:(recv + 1) * k])
    return out
