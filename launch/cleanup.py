"""Remove shared-memory segments that MPICH leaves in /dev/shm when a job is killed or aborted.

MPICH unlinks its segments only on a clean finalize; after MPI_Abort or SIGKILL they stay and hold memory.
A segment is removed only if it appeared while our job ran and no live process has it mapped, so segments of
other jobs on the machine are never touched."""
import glob
import os

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
    in_use = mapped_paths()
    removed = 0
    for path in new - in_use:
        try:
            os.unlink(path)
            removed += 1
        except OSError:
            pass
    return removed
