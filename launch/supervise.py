"""The per-worker supervisor (as torchrun's agent is):

    mpirun -n 4 python -m launch.supervise -- python train.py --epochs 5

mpirun starts one supervisor per rank; the supervisor starts the worker as its child and waits for it. Being
the worker's parent, it learns how the worker ended (exit code or signal) the moment it happens, first-hand,
and records it with a monotonic and a wall-clock timestamp in the launcher's status directory *before* it
exits itself with the same status. mpirun notices a death only when a supervisor exits, and only then kills
the other ranks, so the first recorded death is the first failure by construction; the launcher no longer
has to guess from the order in which it sees processes disappear.

- Signals sent to the supervisor (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2) are forwarded to the worker
  and noted, so a death that follows them is recorded as requested (the job being stopped), not as a failure.
  A worker that outlives a forwarded SIGINT/SIGTERM/SIGHUP by GRACE seconds is killed.
- The worker dies with its supervisor (PR_SET_PDEATHSIG), the supervisor with mpirun's proxy, and mpirun
  with the launcher (launch/run.py): nothing is orphaned even when the launcher is killed with SIGKILL.
- stdout/stderr and every inherited file descriptor (MPI's PMI socket among them) pass to the worker
  untouched; the worker prefixes its own lines (distnet.parallel.runtime).

Standard library only (and distnet.parallel.protocol): the supervisor never loads NumPy or the engine.
"""
import ctypes
import os
import resource
import signal
import sys
import time

from distnet.parallel import protocol

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
GRACE = 5.0          # seconds a worker may take to stop after a forwarded termination signal
_PR_SET_PDEATHSIG = 1


try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl       # looked up once, so a forked child need not load it
except (OSError, AttributeError):
    _prctl = None


def die_with_parent(sig):
    """Have the kernel send `sig` to this process when its parent exits (Linux); True if set up in time."""
    parent = os.getppid()
    if _prctl is None or _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:           # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def start(argv):
    """Fork and exec the worker: its own child, dying with this supervisor, every fd inherited."""
    pid = os.fork()
    if pid == 0:
        try:
            for s in FORWARDED:
                signal.signal(s, signal.SIG_DFL)
            die_with_parent(signal.SIGKILL)
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"distnet supervisor: cannot start {argv[0]!r}: {e}\n".encode())
        os._exit(127)
    return pid


class Supervisor:
    def __init__(self, argv, rank):
        self.argv, self.rank = argv, rank
        self.pid = None
        self.received = None        # the first signal this supervisor was sent (the job is being stopped)

    def forward(self, signum, frame):
        if self.received is None:
            self.received = signum
        if self.pid is not None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass
        if signum in protocol.STOP_SIGNALS:
            signal.alarm(int(GRACE))

    def kill(self, signum, frame):
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def run(self):
        for s in FORWARDED:
            signal.signal(s, self.forward)
        signal.signal(signal.SIGALRM, self.kill)
        die_with_parent(signal.SIGTERM)     # mpirun's proxy gone: stop the worker (forwarded, with grace)
        self.pid = start(self.argv)
        _, status = os.waitpid(self.pid, 0)
        ended = {"monotonic": time.monotonic(), "time": time.time()}
        code = os.waitstatus_to_exitcode(status)
        info = {"pid": self.pid, "supervisor": os.getpid(), "code": code if code >= 0 else None,
                "signal": -code if code < 0 else None, "requested": self.received, **ended}
        protocol.write_status(protocol.EXIT, self.rank, info)
        return code


def exit_like(code):
    """End this process the way the worker ended: the same exit code, or the same signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code >= 0:
        os._exit(code)
    sig = -code
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))       # the worker's core dump (if any) is the one that counts
    if sig not in (signal.SIGKILL, signal.SIGSTOP):       # those two cannot be (and need not be) reset
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)                                     # a signal whose default is not to terminate


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: python -m launch.supervise -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    exit_like(Supervisor(argv, protocol.rank_from_env()).run())


if __name__ == "__main__":
    sys.exit(main())
