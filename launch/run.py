"""Running the job: forward output, remember each rank's last lines, summarise a failure, restart."""
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

from . import cleanup, mpi

_HYDRA_PID = re.compile(r"PID (\d+) RUNNING AT (\S+)")
_HYDRA_CODE = re.compile(r"EXIT CODE: (\d+)")
_OMPI_RANK = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited on signal (\d+)")
_OMPI_EXIT = re.compile(r"process rank (\d+) with PID (\d+) on node (\S+) exited with (?:non-zero )?status (\d+)")
TAIL = 15


def _proc_exit(pid):
    """None while pid runs; else (exit_code, signal) when Linux still shows it as a zombie, or (None, None)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return (None, None)
    if fields[0] not in ("Z", "X"):
        return None
    status = int(fields[-1]) if len(fields) >= 50 else None     # exit_code field (Linux >= 3.5)
    if status is None:
        return (None, None)
    return (status >> 8, None) if status & 0x7F == 0 else (None, status & 0x7F)


class Job:
    """One mpirun run: its output forwarded line by line, the last lines of every rank kept, and local workers
    watched so that the first one to die is known even when mpirun's own report names another."""

    def __init__(self, cmd, env, rank0_only, launch_dir):
        self.cmd, self.env, self.rank0_only, self.launch_dir = cmd, env, rank0_only, launch_dir
        self.tails = collections.defaultdict(lambda: collections.deque(maxlen=TAIL))
        self.launcher_lines = []   # mpirun's own messages (not from a rank)
        self.deaths = []           # (time, rank, pid, exit_code, signal) of local workers, in order seen
        self._done = threading.Event()

    def _watch(self):
        """Wake the moment a local worker exits (pidfd, Linux >= 5.3), so the first death is told apart from
        the kills that mpirun's cleanup sends the others milliseconds later."""
        import select
        poller, fds, seen = select.poll(), {}, set()
        while not self._done.is_set():
            for info in protocol.read_statuses(self.launch_dir, protocol.PID):
                path = info["rank"]
                if path in seen:
                    continue
                try:
                    rank, pid = info["rank"], int(info["pid"])
                except (ValueError, KeyError):
                    continue
                try:
                    fd = os.pidfd_open(pid)
                except ProcessLookupError:         # gone before we could watch it: it died before the rest
                    seen.add(path)
                    self.deaths.insert(0, (time.time() - 3600, rank, pid, None, None))
                    continue
                except (OSError, AttributeError):
                    continue
                seen.add(path)
                fds[fd] = (rank, pid)
                poller.register(fd, select.POLLIN)
            now, woke = time.time(), []
            for fd, _ in poller.poll(20):
                rank, pid = fds.pop(fd)
                poller.unregister(fd)
                woke.append((now, rank, pid, *(_proc_exit(pid) or (None, None))))
                os.close(fd)
            # Several exits in one wake-up: one already reaped by mpirun's proxy (no status left) died before
            # those still waiting as zombies, which are the ones the proxy then killed.
            woke.sort(key=lambda d: (d[3] is not None or d[4] is not None))
            self.deaths += woke
        for fd in fds:
            os.close(fd)

    def _pump(self, stream, sink):
        for line in iter(stream.readline, ""):
            rank, text = protocol.parse_line(line)
            if _HYDRA_PID.search(line) or _HYDRA_CODE.search(line) or "exited on signal" in line \
                    or "exited with" in line or line.startswith("=") or "EXIT STRING" in line:
                self.launcher_lines.append(line.rstrip("\n"))
            else:
                self.tails[rank].append(text.rstrip("\n"))
            if not (self.rank0_only and rank != 0):
                sink.write(line)
                sink.flush()

    def run(self):
        proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, start_new_session=True)
        pumps = [threading.Thread(target=self._pump, args=(proc.stdout, sys.stdout), daemon=True),
                 threading.Thread(target=self._pump, args=(proc.stderr, sys.stderr), daemon=True)]
        watcher = threading.Thread(target=self._watch, daemon=True)
        for t in pumps + [watcher]:
            t.start()

        def forward(signum, frame):
            try:
                os.killpg(proc.pid, signum)
            except ProcessLookupError:
                pass
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            rc = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        self._done.set()
        for t in pumps + [watcher]:
            t.join(5)
        return rc


def failure_summary(job, rc, launch_dir, n):
    """Which rank failed first, how (exception, exit code, signal), and its last lines of output."""
    pids = {int(info["pid"]): info for info in protocol.read_statuses(launch_dir, protocol.PID) if "pid" in info}
    errors = protocol.read_statuses(launch_dir, protocol.ERROR)
    text = "\n".join(job.launcher_lines)
    rank, how = None, None
    if errors:
        first = min(errors, key=lambda e: e["time"])
        rank, how = first["rank"], f"raised {first['error']}"
    elif job.deaths:
        _, rank, pid, code, sig = job.deaths[0]
        if sig is None and code is None:       # reaped before we could read its status: ask mpirun's report
            m = _HYDRA_CODE.search(text)
            code = int(m.group(1)) if m else rc
            sig = code if "signal" in text.lower() else None
        how = (_signal_text(sig) if sig else f"exited with code {code}") + f" (pid {pid})"
        close = [f"rank {d[1]}" for d in job.deaths[1:] if d[0] - job.deaths[0][0] < 0.010]
        if close:       # too close to order with certainty from outside the workers
            how += f"; {', '.join(close)} ended within 10 ms"
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
        lines.append(f"  deaths seen: {job.deaths}")
    if rank is None:
        lines.append("  the failing rank could not be determined from mpirun's report")
        rank = max(job.tails, key=lambda r: len(job.tails[r]), default=0)
    else:
        lines.append(f"  first failure: rank {rank} of {n}: {how}")
    tail = list(job.tails.get(rank, []))
    if tail:
        lines.append(f"  last {len(tail)} line(s) of rank {rank}:")
        lines += [f"    | {ln}" for ln in tail]
    return rank, "\n".join(lines)


def _signal_text(sig):
    try:
        return f"killed by signal {sig} ({signal.Signals(sig).name})"
    except ValueError:
        return f"killed by signal {sig}"


def run_with_restarts(cmd, n, kind, threads, max_restarts, rank0_only):
    def attempt(k):
        with tempfile.TemporaryDirectory(prefix="distnet-launch-") as launch_dir:
            env = mpi.worker_env(os.environ, kind, threads, launch_dir, k)
            job = Job(cmd, env, rank0_only, launch_dir)
            before = cleanup.snapshot()
            rc = job.run()
            if rc == 0:
                return True, 0, None
            cleanup.remove_leftovers(before)
            return False, rc, failure_summary(job, rc, launch_dir, n)[1]

    def say(text):
        print(text if text.startswith("distnet-launch") else f"distnet-launch: {text}", file=sys.stderr, flush=True)

    rc = protocol.with_restarts(attempt, max_restarts, say)
    return rc if rc >= 0 else 128 - rc
