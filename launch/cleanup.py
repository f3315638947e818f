"""What a job may leave on this machine, and its removal: MPICH's shared-memory segments in /dev/shm, and
processes that outlived mpirun.

MPICH unlinks its segments only on a clean finalize; after MPI_Abort or SIGKILL they stay and hold memory.
A segment is removed only if it appeared while our job ran and no live process has it mapped, so segments of
other jobs on the machine are never touched. A process is ours when its environment carries our launch's
status directory."""
import glob

from distnet.parallel import protocol

PATTERN = "/dev/shm/mpich_shm_*"


def snapshot():
    return set(glob.glob(PATTERN))


def mapped_paths():
    paths = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as f:
                for line in f:
                    if "/dev/shm/" in line:
                        paths.add(line.rsplit(None, 1)[-1])
        except OSError:
            continue
    return paths


def remove_leftovers(before):
    """Delete segments created since `before` (a snapshot) that no process maps; return how many."""
    new = snapshot() - before
    if not new:
        return 0
    return len(protocol.remove_files(new - mapped_paths()))


def processes_of(launch_dir):
    """Pids of this machine's processes started for the launch whose status directory is `launch_dir` (their
    environment says so: mpirun, its proxies, supervisors and workers all inherit it)."""
    return processes_with_env(protocol.LAUNCH_DIR, launch_dir)


def processes_with_env(name, value):
    """Pids of this machine's processes (other than this one) started with name=value in their environment."""
    return protocol.processes_matching("environ", f"\0{name}={value}\0".encode())


def kill_processes_of(launch_dir, wait=2.0):
    """SIGKILL every process left from that launch on this machine and wait (up to `wait` s) until they are
    gone, so that their shared memory is unmapped; return how many were signalled."""
    return protocol.kill_and_wait(processes_of(launch_dir), wait)
