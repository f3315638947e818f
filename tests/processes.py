"""Process helpers for the tests: the live processes below a pid, and waiting for one to end."""
import glob
import time

from distnet.parallel.protocol import process_running


def descendants(pid):
    """pids of every live process below `pid` (by parent links in /proc)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def gone(pid, timeout=5):
    """True once pid has exited (waiting up to `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_running(pid)
