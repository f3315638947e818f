"""The worker-launcher protocol, defined once: what workers print, the status files they leave, the environment
variables both sides read, the BLAS-thread policy, and the restart loop.

Imported by the workers (distnet.parallel) and by the launcher (`launch/`), which must not load the engine: this
module uses only the standard library (no NumPy), and importing it has no side effect.
"""
import json
import os
import re
import signal
import time

# -- environment variables ----------------------------------------------------------------------------------
LAUNCH_DIR = "DISTNET_LAUNCH_DIR"            # the launcher's status directory (workers leave notes there)
RESTART_COUNT = "DISTNET_RESTART_COUNT"      # how many times the job was restarted before this attempt
WATCHDOG_TIMEOUT = "DISTNET_WATCHDOG_TIMEOUT"  # seconds a rank may wait for the others at a collective
DISABLE = "DISTNET_DISABLE"                  # "1": every process trains alone, even under mpirun
NO_PREFIX = "DISTNET_NO_PREFIX"              # "1": do not prefix other ranks' output lines
TIMELINE = "DISTNET_TIMELINE"                # path of a Chrome trace of every step's phases
RAY_SHM = "DISTNET_RAY_SHM"                  # "0": Ray ring hops between co-located workers go through TCP
RAY_PLACEMENT_TIMEOUT = "DISTNET_RAY_PLACEMENT_TIMEOUT"

# Set by mpirun/mpiexec (Open MPI, MPICH/Hydra, PMI/PMIx launchers) in every rank's environment.
MPI_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS",
                     "HYDI_CONTROL_FD")
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def launched_by_mpi(environ=None):
    """True when this process was started by mpirun/mpiexec."""
    environ = os.environ if environ is None else environ
    return any(k in environ for k in MPI_LAUNCHER_VARS)


def rank_from_env(environ=None):
    """This process's rank as the MPI launcher announced it (0 when there is none): answers 'am I rank 0?'
    without joining the job."""
    environ = os.environ if environ is None else environ
    for var in _RANK_VARS:
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return 0


# -- output lines -------------------------------------------------------------------------------------------
def line_prefix(rank, size):
    """What a worker puts before each of its output lines: nothing on rank 0, else '[rank r/N] '."""
    return "" if rank == 0 else f"[rank {rank}/{size}] "


# ours (MPI workers) or Ray's actor prefix, which distnet sets to "(rank r/N pid=..., ip=...)"
PREFIX_RE = re.compile(r"^(?:\[rank (\d+)/(\d+)\] |\(rank (\d+)/(\d+)[^)]*\) )")


def parse_line(line):
    """(rank, text without the prefix) of a worker's output line; lines without a prefix are rank 0's."""
    m = PREFIX_RE.match(line)
    if not m:
        return 0, line
    return int(m.group(1) or m.group(3)), line[m.end():]


# -- status files -------------------------------------------------------------------------------------------
# rank r's process id (written when it joins), its uncaught exception, and how its process ended (written by
# its supervisor, launch/supervise.py)
PID, ERROR, EXIT = "pid", "error", "exit"


def write_status(kind, rank, info, environ=None):
    """Leave a note for the launcher (rank r's pid, its uncaught exception, how it ended) in its status
    directory, so its failure summary can name the rank that failed first. Every note carries the wall-clock
    `time`, the `monotonic` clock (comparable between processes of one host: Linux's CLOCK_MONOTONIC) and the
    `host`. Without a launcher, nothing happens."""
    environ = os.environ if environ is None else environ
    directory = environ.get(LAUNCH_DIR)
    if not directory or not os.path.isdir(directory):
        return
    path = os.path.join(directory, f"rank{int(rank)}.{kind}")
    stamp = {"rank": int(rank), "time": time.time(), "monotonic": time.monotonic(), "host": os.uname().nodename}
    try:
        with open(path + ".tmp", "w") as f:
            json.dump({**stamp, **info}, f)
        os.replace(path + ".tmp", path)        # the launcher never reads a half-written note
    except OSError:
        pass


def read_statuses(directory, kind):
    """Every rank's note of this kind: a list of dicts (each has 'rank' and 'time')."""
    out = []
    try:
        names = os.listdir(directory)
    except OSError:
        return out
    for name in sorted(names):
        if not (name.startswith("rank") and name.endswith("." + kind)):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                info = json.load(f)
            info["rank"] = int(info["rank"])
            out.append(info)
        except (OSError, ValueError, KeyError):
            continue
    return out


# -- stopping ---------------------------------------------------------------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The user or the system asked the job to stop (Ctrl-C, SIGTERM, a closed terminal's SIGHUP): a decision,
    not a failure, so nothing restarts. `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        super().__init__(signal.Signals(self.signum).name)

    def describe(self):
        return "interrupted" if self.signum == signal.SIGINT else f"stopped by {signal.Signals(self.signum).name}"


def remove_files(paths):
    """Unlink each path (one already gone, or not ours to remove, is skipped); return those removed."""
    removed = []
    for path in paths:
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def processes_matching(field, needle):
    """Pids of this machine's processes (other than this one) whose /proc/PID/<field> ('environ', 'cmdline':
    NUL-separated) contains the bytes `needle`; the content is read as NUL + content + NUL, so b'\0NAME=v\0'
    matches one whole environment entry."""
    me, found = os.getpid(), []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/{field}", "rb") as f:
                if needle in b"\0" + f.read() + b"\0":
                    found.append(int(name))
        except OSError:         # gone, or another user's
            continue
    return found


def kill_and_wait(pids, wait=2.0):
    """SIGKILL `pids` and wait (up to `wait` s) until they are gone; return how many were signalled."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline and any(process_running(pid) for pid in pids):
        time.sleep(0.01)
    return len(pids)


def process_running(pid):
    """True while process `pid` of this machine exists and is not a zombie (a zombie holds no memory)."""
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError, ValueError):
        return False


# -- BLAS threads -------------------------------------------------------------------------------------------
# Any of these set by the user means: the user chose the thread count; distnet does not touch it.
BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def blas_threads(local_workers, cores=None):
    """Threads per worker so that the workers of one node share its cores without fighting over them."""
    cores = cores or usable_cores()
    return max(1, cores // max(1, int(local_workers)))


def user_chose_threads(environ=None):
    environ = os.environ if environ is None else environ
    return any(v in environ for v in BLAS_VARS)


# -- restarts -----------------------------------------------------------------------------------------------
def with_restarts(attempt, max_restarts, say, what="job"):
    """Run attempt(k) for k = 0, 1, ... until it succeeds or max_restarts restarts are spent.

    attempt(k) returns (ok, result, summary): on failure `summary` (text) is shown through say() before the
    next try. Returns the last result. An interrupt (KeyboardInterrupt) is the user's decision, not a failure:
    it propagates at once, with no restart."""
    result = None
    for k in range(max_restarts + 1):
        ok, result, summary = attempt(k)
        if ok:
            return result
        if summary:
            say(summary)
        if k < max_restarts:
            say(f"restarting the {what} ({k + 1} of {max_restarts} restarts); training resumes from the last "
                "checkpoint if the script uses BackupAndRestore")
            time.sleep(1)
    return result
