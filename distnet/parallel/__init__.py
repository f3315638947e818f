"""Talking to the other workers: communicators (MPI, Ray, single process), the ring algorithm written once over
a transport, the gradient reducer, and the DataParallel strategy.

Rooms: communicator.py (the interface), world.py (the current communicator; detect, join), strategy.py
(DataParallel: the ONLY thing training/ imports from here), reducer.py (fusion, buckets, compression,
overlap), ring.py (the algorithm over a transport), runtime.py (what a worker does to itself when it joins:
output prefixes, abort on exception, BLAS threads), protocol.py (shared with launch/: line prefix, status
files, environment names, restarts; standard library only), mpi.py, ray/ (the Ray backend).
May import: NumPy, mpi4py/ray (lazily); never layers/, models/ or training/. Importing it has no side effect.
"""
