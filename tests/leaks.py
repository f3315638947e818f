"""The test session's leak check: what the suite leaves on the machine that was not there when it started.

- processes: every process the suite starts inherits DISTNET_TEST_SESSION=<id> (set at session start); any left
  alive at the end is a leak (and is killed after being reported);
- /dev/shm files (distnet-* ring outboxes, mpich_shm_* segments) that appeared and that no process maps;
- Ray sessions: new session_* directories in Ray's shared temp dir (/tmp/ray) and distnet-ray-* directories of
  private instances.

The machine may be shared with other test runs, so a file or directory counts against this session only when it
can be traced to it: a sampler notes every few hundred ms which files this session's processes map and which pids
they have (Ray names a session directory after the pid that started it). What cannot be traced is reported as a
warning, not a failure.
"""
import glob
import os
import signal
import tempfile
import threading
import time
import uuid

from distnet.parallel import protocol
from launch import cleanup
from tests.processes import descendants

MARK = "DISTNET_TEST_SESSION"
SHM = ("/dev/shm/distnet-*", "/dev/shm/mpich_shm_*")
RAY_ROOT = "/tmp/ray"            # Ray's default temp dir: distnet's private instances and the tests use their own


def ray_dirs():
    """Session directories of Ray's shared temp dir, and private instances' directories."""
    root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return set(glob.glob(os.path.join(root, "ray", "session_2*"))) | set(
        glob.glob(os.path.join(tempfile.gettempdir(), "distnet-ray-*")))


def shm_files():
    return {p for pattern in SHM for p in glob.glob(pattern)}


def _owner_pid(path):
    """The pid a Ray directory is named after: session_<date>_<time>_<pid>, distnet-ray-<pid>-<random>."""
    name = os.path.basename(path)
    part = name.rsplit("_", 1)[-1] if name.startswith("session_") else name.split("-")[2]
    return int(part) if part.isdigit() else None


class LeakCheck:
    def __init__(self):
        self.session = uuid.uuid4().hex
        os.environ[MARK] = self.session
        self.shm_before, self.ray_before = shm_files(), ray_dirs()
        self.ray_root_before = os.path.exists(RAY_ROOT)
        self.pids = {os.getpid()}             # this session's processes, as sampled
        self.mapped = set()                   # /dev/shm files they were seen to map
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="leak-sampler", daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(0.3):
            for pid in descendants(os.getpid()):
                self.pids.add(pid)
                try:
                    with open(f"/proc/{pid}/maps") as f:
                        self.mapped.update(ln.split(None, 5)[5].strip() for ln in f if "/dev/shm/" in ln)
                except (OSError, IndexError):
                    continue

    def finish(self):
        """Stop sampling; return (failures, warnings): lines naming what this session left behind."""
        self._stop.set()
        self._thread.join(5)
        failures, warnings = [], []
        left = cleanup.processes_with_env(MARK, self.session)
        deadline = time.monotonic() + 3         # a process killed by the last test may still be on its way out
        while time.monotonic() < deadline and any(protocol.process_running(pid) for pid in left):
            time.sleep(0.05)
        for pid in cleanup.processes_with_env(MARK, self.session):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            failures.append(f"process {pid} still running (killed now): {cmd[:160]}")
        time.sleep(0.2)
        in_use = cleanup.mapped_paths()
        for path in sorted(shm_files() - self.shm_before - in_use):
            if path in self.mapped:
                failures.append(f"{path} left in /dev/shm (removed now)")
                protocol.remove_files([path])
            else:
                warnings.append(f"{path} appeared in /dev/shm during the session (another run's?)")
        for path in sorted(ray_dirs() - self.ray_before):
            if _owner_pid(path) in self.pids:
                failures.append(f"Ray directory {path} left behind")
            else:
                warnings.append(f"Ray directory {path} appeared during the session (another run's?)")
        if not self.ray_root_before and os.path.exists(RAY_ROOT):
            warnings.append(f"Ray's shared temp dir {RAY_ROOT} appeared during the session")
        return failures, warnings
