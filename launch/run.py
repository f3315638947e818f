"""Running the job: forward output, remember each rank's last lines, summarise a failure from what the ranks'
supervisors recorded (launch/supervise.py), restart, and stop everything on Ctrl-C, SIGTERM or SIGHUP."""
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

from distnet.parallel import protocol

from . import cleanup
from .elastic import NotEnoughWorkers
from .supervise import die_with_parent

_HYDRA_PID = re.compile(r"PID (\d+) RUNNING AT (\S+)")
_HYDRA_CODE = re.compile(r"EXIT CODE: (\d+)")
_OMPI_RANK = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)")
_OMPI_EXIT = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited with (?:non-zero )?status (\d+)")
TAIL = 15
GRACE = 5.0     # seconds a stopped job may take to end before what is left of it is killed


class Job:
    """One run of mpirun (or of the Ray driver): its output forwarded line by line, the last lines of every rank
    kept, and a way to stop it all: `stop(signum)` asks it to end (SIGTERM to mpirun, which forwards it to every
    rank's supervisor; the Ray driver gets SIGINT), and after `grace` seconds every process left is killed."""

    def __init__(self, cmd, env, rank0_only, launch_dir, stop_signal=signal.SIGTERM, grace=GRACE):
        self.cmd, self.env, self.rank0_only, self.launch_dir = cmd, env, rank0_only, launch_dir
        self.stop_signal, self.grace = stop_signal, grace
        self.tails = collections.defaultdict(lambda: collections.deque(maxlen=TAIL))
        self.launcher_lines = []   # mpirun's own messages (not from a rank)
        self.proc = None
        self.stopped = None        # the signal that asked the job to stop
        self._kill_at = None
        self.held_back = False     # mpirun's lines are no longer shown (a rank's failure is on record)

    def _pump(self, stream, sink):
        for line in iter(stream.readline, ""):
            rank, text = protocol.parse_line(line)
            ours = not (_HYDRA_PID.search(line) or _HYDRA_CODE.search(line) or "exited on signal" in line
                        or "exited with" in line or line.startswith(("=", "[mpiexec@", "[proxy:"))
                        or "EXIT STRING" in line)
            if ours:
                self.tails[rank].append(text.rstrip("\n"))
            else:
                self.launcher_lines.append(line.rstrip("\n"))
            if (self.rank0_only and rank != 0) or (not ours and (self.stopped or self._failing())):
                continue               # mpirun's teardown noise of a stopped or failed job: the summary says it
            try:
                sink.write(line)
                sink.flush()
            except (OSError, ValueError):   # the terminal is gone (SIGHUP): keep draining the pipe
                pass

    def _failing(self):
        """True once a rank's failure is on record (the launcher's summary will name it; mpirun's own report of
        the teardown -- its banner, its proxies' asserts -- is then held back: DISTNET_LAUNCH_DEBUG=1 shows it)."""
        if self.held_back or os.environ.get("DISTNET_LAUNCH_DEBUG"):
            return self.held_back
        self.held_back = any(True for _ in _failures_on_record(self.launch_dir))
        return self.held_back

    def start(self):
        # its own session (the terminal's Ctrl-C reaches the launcher alone, which decides), but it dies with the
        # launcher (SIGTERM when the launcher is gone, even by SIGKILL: the job then stops as on SIGTERM)
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True,
                                     preexec_fn=lambda: die_with_parent(signal.SIGTERM))
        self.pumps = [threading.Thread(target=self._pump, args=(self.proc.stdout, sys.stdout), daemon=True),
                      threading.Thread(target=self._pump, args=(self.proc.stderr, sys.stderr), daemon=True)]
        for t in self.pumps:
            t.start()

    def stop(self, signum, now=False):
        """Ask the job to end (the launcher got `signum`); with now=True (a second Ctrl-C), kill it at once."""
        if self.stopped is not None and not now:
            return
        self.stopped = self.stopped or signum
        self._kill_at = time.monotonic() + (0 if now else self.grace)
        try:
            os.kill(self.proc.pid, self.stop_signal)
        except ProcessLookupError:
            pass

    def wait(self):
        """Wait for the job to end (killing what is left once a stop's grace is over); return mpirun's code."""
        while True:
            try:
                rc = self.proc.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if self._kill_at is not None and time.monotonic() >= self._kill_at:
                    self._kill_all()
        self._kill_all()          # whatever outlived mpirun on this machine (a proxy or worker it lost track of)
        for t in self.pumps:
            t.join(5)
        return rc

    def _kill_all(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        cleanup.kill_processes_of(self.launch_dir)

    def run(self):
        self.start()
        return self.wait()


TIE = 0.005     # seconds: failures recorded closer together than this cannot be ordered with confidence


def _failures_on_record(launch_dir):
    """(note, how) for each failure the workers and their supervisors recorded, in no particular order."""
    for e in protocol.read_statuses(launch_dir, protocol.ERROR):
        yield e, f"raised {e['error']}"
    for d in protocol.read_statuses(launch_dir, protocol.EXIT):
        if d.get("requested") or d.get("code") == 0:
            continue
        how = _signal_text(d["signal"]) if d.get("signal") else f"exited with code {d.get('code')}"
        yield d, f"{how} (pid {d.get('pid')})"


def recorded_failures(launch_dir):
    """The failures that the workers (their uncaught exceptions) and their supervisors (deaths not requested
    by a stop) recorded, earliest first: [(seconds, rank, how)]. Times are on each host's monotonic clock when
    all records come from one host, else on the wall clock."""
    events = list(_failures_on_record(launch_dir))
    one_host = len({e.get("host") for e, _ in events}) == 1 and all("monotonic" in e for e, _ in events)
    clock = "monotonic" if one_host else "time"
    return sorted((e[clock], e["rank"], how) for e, how in events)


def failure_summary(job, rc, launch_dir, n):
    """(rank, text): which rank failed first (None when it cannot be told), how (exception, exit code, signal),
    and its last lines of output (those of the most talkative rank when the rank is not known)."""
    pids = {int(info["pid"]): info for info in protocol.read_statuses(launch_dir, protocol.PID) if "pid" in info}
    failures = recorded_failures(launch_dir)
    text = "\n".join(job.launcher_lines)
    rank, how = None, None
    if failures:
        first, rank, how = failures[0]
        close = {}
        for t, r, h in failures[1:]:
            if r != rank and t - first < TIE and r not in close:
                close[r] = f"rank {r} {h} {1000 * (t - first):.1f} ms later"
        if close:      # recorded too close together to say which came first
            how += f"; which came first cannot be told: {'; '.join(close.values())}"
    elif _OMPI_RANK.search(text):
        m = _OMPI_RANK.search(text)
        rank, how = int(m.group(1)), _signal_text(int(m.group(4)))
    elif _OMPI_EXIT.search(text):
        m = _OMPI_EXIT.search(text)
        rank, how = int(m.group(1)), f"exited with code {m.group(4)}"
    elif _HYDRA_PID.search(text):
        pid = int(_HYDRA_PID.search(text).group(1))
        code = int(_HYDRA_CODE.search(text).group(1)) if _HYDRA_CODE.search(text) else rc
        rank = pids.get(pid, {}).get("rank")
        killed = "signal" in text.lower() or code in (6, 9, 11, 15)
        how = (_signal_text(code) if killed else f"exited with code {code}") + f" (pid {pid})"
    lines = [f"distnet-launch: the job failed (exit code {rc})."]
    if os.environ.get("DISTNET_LAUNCH_DEBUG"):
        lines.append(f"  recorded failures: {failures}")
    shown = rank
    if rank is None:
        lines.append("  the failing rank could not be determined from mpirun's report")
        if job.held_back and job.launcher_lines:      # held back while the job ended: show what mpirun said
            lines.append(f"  mpirun's last {min(TAIL, len(job.launcher_lines))} line(s):")
            lines += [f"    | {ln}" for ln in job.launcher_lines[-TAIL:]]
        shown = max(job.tails, key=lambda r: len(job.tails[r]), default=0)
    else:
        lines.append(f"  first failure: rank {rank} of {n}: {how}")
    tail = list(job.tails.get(shown, []))
    if tail:
        lines.append(f"  last {len(tail)} line(s) of rank {shown}:")
        lines += [f"    | {ln}" for ln in tail]
    return rank, "\n".join(lines)


def _signal_text(sig):
    try:
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    except ValueError:
        return f"killed by signal {sig}"


class Stopper:
    """While the launcher runs: SIGINT (Ctrl-C), SIGTERM and SIGHUP stop the running job, and no restart
    follows; `check()` then raises protocol.Interrupted. A second signal kills the job at once. The handler only
    takes note and signals the job; it never raises, so cleanup code is never cut short."""

    def __init__(self):
        self.job, self.signum = None, None

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in protocol.STOP_SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        again = self.signum is not None
        self.signum = self.signum or signum
        if self.job is not None and self.job.proc is not None:
            self.job.stop(signum, now=again)

    def run(self, job):
        """Run `job` to its end, stopping it if a signal came or comes; return its exit code."""
        self.job = job
        try:
            job.start()
            if self.signum is not None:
                job.stop(self.signum)
            return job.wait()
        finally:
            self.job = None

    def check(self):
        if self.signum is not None:
            raise protocol.Interrupted(self.signum)


def run_with_restarts(command, hosts, n, env_for, max_restarts, rank0_only, pool=None):
    """Run the job (command(hosts, n) -> mpirun argv; env_for(status directory, restart count) -> the workers'
    environment), restarting it up to max_restarts times after a failure. With a HostPool (--min-workers), each
    relaunch runs on the pool's healthy hosts only."""
    where = {"hosts": hosts, "n": n}

    def attempt(k):
        stopper.check()
        with tempfile.TemporaryDirectory(prefix="distnet-launch-") as launch_dir:
            env = env_for(launch_dir, k)
            job = Job(command(where["hosts"], where["n"]), env, rank0_only, launch_dir)
            before = cleanup.snapshot()
            rc = stopper.run(job)
            if rc != 0:
                cleanup.remove_leftovers(before)
            stopper.check()
            if rc == 0:
                return True, 0, None
            rank, summary = failure_summary(job, rc, launch_dir, where["n"])
        if pool is not None and k < max_restarts:
            say(summary)
            try:
                where["hosts"], where["n"], lines = pool.after_failure(rank)
            except NotEnoughWorkers as e:
                raise _GiveUp(rc, str(e)) from None
            for line in lines:
                say(line)
            summary = None
        return False, rc, summary

    with Stopper() as stopper:
        try:
            rc = protocol.with_restarts(attempt, max_restarts, say)
        except _GiveUp as e:
            say(e.message)
            rc = e.rc
    return rc if rc >= 0 else 128 - rc


class _GiveUp(Exception):
    def __init__(self, rc, message):
        super().__init__(message)
        self.rc, self.message = rc, message


def run_once(job):
    """Run one job (the Ray driver) under the same signal handling; protocol.Interrupted if it was stopped."""
    with Stopper() as stopper:
        rc = stopper.run(job)
        stopper.check()
    return rc


def say(text):
    """A line from the launcher on stderr (quietly nothing when the terminal is gone)."""
    try:
        print(text if text.startswith("distnet-launch") else f"distnet-launch: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
