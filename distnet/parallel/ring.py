"""Ring-allreduce, written once for every transport.

The buffer is cut into `size` chunks. Reduce-scatter: in size-1 steps each worker sends one chunk to its right
neighbour and adds the chunk arriving from its left, so worker r ends up owning the full sum of chunk (r+1) % size.
Allgather: in size-1 more steps the summed chunks travel around the ring. Each worker sends and receives
2*(size-1)/size of the buffer in total, independent of the number of workers: bandwidth-optimal.

A transport provides `rank`, `size` and `sendrecv(send, recv)`: send a NumPy array to the right neighbour
while receiving an array of recv's length from the left neighbour into `recv`.
"""
import numpy as np


def chunk_bounds(length, size):
    """Start offsets of `size` near-equal chunks of a buffer of `length` elements, plus the end."""
    return [length * i // size for i in range(size + 1)]


def ring_allreduce(buf, transport, scratch=None):
    """Sum the 1-D contiguous array `buf` over all workers of `transport`, in place.

    scratch: an optional preallocated array of at least ceil(len/size) elements of buf's dtype, reused between
    calls so that the steady state allocates nothing."""
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

    for step in range(n - 1):                    # reduce-scatter
        incoming = chunk(r - step - 1)
        landing = scratch[:incoming.size]
        transport.sendrecv(chunk(r - step), landing)
        incoming += landing
    for step in range(n - 1):                    # allgather
        transport.sendrecv(chunk(r - step + 1), chunk(r - step))
    return buf
