"""Which job this process belongs to: the current communicator, detecting it, and joining it.

Queries (`current`, `is_main`) never start MPI or change the process; `join` is the one explicit step that
builds the communicator and installs the worker runtime (see runtime.py). `fit` joins on its first call.
"""
import os

from . import protocol, runtime
from .communicator import LOCAL, LocalCommunicator

_current = None


def current():
    """The communicator this process has joined, or None."""
    return _current


def set_communicator(comm):
    """Make `comm` the current communicator (the Ray worker bootstrap, `distributed.disable`)."""
    global _current
    _current = comm


def detect(backend="auto"):
    """A new communicator for this process: 'auto' is MPI when launched by mpirun with more than one rank
    (unless DISTNET_DISABLE=1), else the single-process one; 'mpi' or 'local' ask for one."""
    if backend not in ("auto", "mpi", "local"):
        raise ValueError(f"backend must be 'auto', 'mpi' or 'local', received {backend!r}")
    if backend == "local" or (backend == "auto" and (os.environ.get(protocol.DISABLE) == "1"
                                                     or not protocol.launched_by_mpi())):
        return LocalCommunicator()
    from .mpi import MPICommunicator
    comm = MPICommunicator()
    return comm if comm.size > 1 or backend == "mpi" else LocalCommunicator()


def join(backend="auto", watchdog_timeout=None):
    """The communicator of this job, created (and the worker runtime installed) on the first call.
    watchdog_timeout: seconds (default $DISTNET_WATCHDOG_TIMEOUT) a rank waits at a collective before the job
    ends naming the ranks that did not arrive."""
    global _current
    if _current is None or (backend != "auto" and backend != _current.backend):
        _current = detect(backend)
        runtime.install(_current)      # a communicator set by a bootstrap (Ray) comes with its own runtime
    if watchdog_timeout is None and os.environ.get(protocol.WATCHDOG_TIMEOUT):
        watchdog_timeout = _env_timeout()
    if watchdog_timeout is not None:
        _current.set_watchdog(watchdog_timeout)
    return _current


def _env_timeout():
    text = os.environ[protocol.WATCHDOG_TIMEOUT]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{protocol.WATCHDOG_TIMEOUT} must be a number of seconds, received {text!r}") from None


def is_main():
    """True on rank 0 (and in a single process). Asks the launcher's environment when the job is not joined."""
    if _current is not None:
        return _current.rank == 0
    return os.environ.get(protocol.DISABLE) == "1" or protocol.rank_from_env() == 0


__all__ = ["LOCAL", "current", "set_communicator", "detect", "join", "is_main"]
