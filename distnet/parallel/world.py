"""Who am I in the job: the current communicator, and rank/size/is_main for code that only needs those."""
from .communicator import LocalCommunicator

_current = None
LOCAL = LocalCommunicator()      # the single-process world


def communicator():
    """The communicator models use: the one set by `distnet.distributed.init()`, else a detected one."""
    global _current
    if _current is None:
        from .communicator import detect
        _current = detect()
    return _current


def current():
    """The communicator set so far, or None (no detection)."""
    return _current


def set_communicator(comm):
    global _current
    _current = comm


def rank():
    return communicator().rank


def size():
    return communicator().size


def is_main():
    return communicator().rank == 0
