"""What a worker process does to itself when it joins a multi-worker job, all of it explicit.

`install(comm)` is called by `distnet.distributed.init()` (which `fit` calls when it joins the job) and by the
Ray worker bootstrap; never on import and never by a query such as `is_main()`:
- other ranks' output lines are prefixed `[rank r/N] ` and written whole (no interleaving mid-line);
- an uncaught exception on any rank (main thread or another thread) prints its traceback naming the rank, leaves
  a note for the launcher, and ends the whole job through `comm.abort`, so no rank waits forever;
- BLAS threads are limited to cores / workers on this node, unless the user chose a number.
"""
import os
import sys
import threading
import traceback

from . import protocol

_installed_for = None      # the communicator the process-wide hooks were installed for


def install(comm):
    """Make this process a well-behaved worker of `comm`'s job (idempotent per communicator)."""
    global _installed_for
    if comm.size <= 1 or _installed_for is comm:
        return
    _installed_for = comm
    abort_on_exception(comm)
    limit_blas_threads(comm.local_size)
    line_atomic_output(comm.rank, comm.size)


def abort_on_exception(comm):
    """An uncaught exception on any rank prints its traceback (naming the rank) and aborts the whole job."""
    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):         # the user's interrupt: quiet, no traceback per rank
            sys.__stderr__.write(f"{protocol.line_prefix(comm.rank, comm.size)}interrupted\n")
            sys.__stderr__.flush()
            comm.abort(130)
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        sys.__stderr__.write(f"[rank {comm.rank}/{comm.size}] distnet: uncaught exception, aborting all "
                             f"{comm.size} ranks:\n{text}")
        sys.__stderr__.flush()
        protocol.write_status(protocol.ERROR, comm.rank, {"error": f"{exc_type.__name__}: {exc}"})
        comm.abort(1)

    sys.excepthook = hook
    threading.excepthook = lambda args: hook(args.exc_type, args.exc_value, args.exc_traceback)


def limit_blas_threads(local_workers, threads=None):
    """Give each of the `local_workers` processes on this node cores/local_workers BLAS threads (or `threads`),
    unless the user chose a number (any of the *_NUM_THREADS variables is set). Returns the limit set, or None.

    Through threadpoolctl, because OpenBLAS's pool already exists once NumPy is imported."""
    if threads is None and protocol.user_chose_threads():
        return None
    from threadpoolctl import threadpool_limits
    n = threads or protocol.blas_threads(local_workers)
    threadpool_limits(limits=n, user_api="blas")
    return n


class PrefixedStream:
    """Prefixes every line written by a non-zero rank with [rank r/N]. Whole lines go to the underlying stream
    in one write, so lines of different ranks do not interleave mid-line."""

    def __init__(self, stream, prefix):
        self.stream, self.prefix, self.partial = stream, prefix, ""

    def write(self, text):
        pending = self.partial + text
        cut = pending.rfind("\n") + 1
        self.partial = pending[cut:]
        if cut:
            lines = pending[:cut].splitlines(keepends=True)
            self.stream.write("".join(self.prefix + line for line in lines))
            self.stream.flush()
        return len(text)

    def flush(self):
        if self.partial:
            self.stream.write(self.prefix + self.partial)
            self.partial = ""
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def line_atomic_output(rank, size):
    """Send stdout/stderr to the terminal a whole line at a time (mpirun runs Python unbuffered, so one print
    would otherwise reach it in pieces that interleave with other ranks'), prefixing non-zero ranks' lines."""
    prefix = "" if os.environ.get(protocol.NO_PREFIX) == "1" else protocol.line_prefix(rank, size)
    if not isinstance(sys.stdout, PrefixedStream):
        sys.stdout = PrefixedStream(sys.stdout, prefix)
        sys.stderr = PrefixedStream(sys.stderr, prefix)
