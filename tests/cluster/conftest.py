"""Emulated nodes for the multi-node tests: a testbed per test module, always removed.

Removal is guaranteed three ways: the fixture's teardown (also on a failing test or Ctrl-C), and a detached
reaper that takes the testbed down when this pytest process is gone (killed), started by `up(owner=...)`."""
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from launch import testbed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def require_testbed():
    found = testbed.problems()
    if found:
        pytest.skip("emulated nodes need network namespaces: " + "; ".join(found))


def _free_subnets():
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    used += subprocess.run(["ip", "-o", "route"], capture_output=True, text=True).stdout
    for x in range(100, 250):
        if f"10.77.{x}." not in used:
            yield x


@contextlib.contextmanager
def cluster_of(nodes=2, link="1gbit", slots=1):
    """A fresh testbed with its own prefix and subnet (another test run may hold others), removed after."""
    require_testbed()
    bed, last = None, None
    for x in _free_subnets():
        try:
            bed = testbed.up(nodes, link, prefix=f"dt{x}", subnet=f"10.77.{x}.0/24", slots=slots,
                             owner=os.getpid())
            break
        except testbed.TestbedError as e:        # taken meanwhile by a concurrent run: try the next
            last = e
    if bed is None:
        raise AssertionError(f"no testbed could be created: {last}")
    try:
        yield bed
    finally:
        testbed.down(bed.prefix)


def run_on(bed, node, argv, timeout=120, **kw):
    """Run argv on a node; a hang fails the test (and the node's processes die with the testbed)."""
    try:
        return subprocess.run(bed.exec_argv(node, argv, cwd=kw.pop("cwd", ROOT)), capture_output=True, text=True,
                              timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{argv} on {node} did not finish within {timeout} s\n{e.stdout}\n{e.stderr}") from None


def leftovers(bed):
    """Everything of the testbed still on this machine: links, namespaces, state, processes in its nodes."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out = [w for w in links.split() + spaces.split() if w.rstrip(":").split("@")[0].startswith(bed.prefix + "-")]
    if os.path.exists(bed.state_dir):
        out.append(bed.state_dir)
    return out


# -- running jobs on the nodes ------------------------------------------------------------------------------
JOB = os.path.join(ROOT, "tests", "cluster", "cnn_job.py")


def launch(bed, *args, timeout=240):
    env = {**os.environ, "PYTHONPATH": ROOT}
    try:
        return subprocess.run([sys.executable, "-m", "launch", "--testbed", "--testbed-name", bed.prefix, *args],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"distnet-launch {args} did not finish in {timeout}s: {e.stdout} {e.stderr}") from None


def one_process(out, *args):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, JOB, str(out), *args], capture_output=True, text=True, env=env,
                         timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    return np.load(out / "weights.npy"), json.loads((out / "result.json").read_text())


def nothing_left(bed, timeout=15):
    """Every node runs only its init again (no proxy, rank or daemon left), within `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        left = {n["name"]: len(bed.processes(n["name"])) - 1 for n in bed.nodes
                if bed.init_pid(n["name"]) is not None}            # a crashed node has none
        if not any(left.values()):
            return True
        time.sleep(0.2)
    raise AssertionError(f"processes left on the nodes: {left}")


def start(bed, out, *args, env=None):
    """distnet-launch on the testbed in the background; returns the process (output in out/launch.log)."""
    log = open(out / "launch.log", "w")
    return subprocess.Popen([sys.executable, "-m", "launch", "--testbed", "--testbed-name", bed.prefix, *args],
                            stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})


def wait_for(path, proc, timeout=120):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the job ended before {path.name}: {(path.parent / 'launch.log').read_text()}"
        assert time.time() < deadline, f"no {path} within {timeout} s"
        time.sleep(0.05)


def without_link(bed, node, proc, log, timeout=60):
    """Take the node's link down until the job ends (or `timeout` s); (exit code, seconds it took, its log)."""
    t0 = time.time()
    bed.set_link(node, up=False)
    try:
        rc = proc.wait(timeout)
    finally:
        elapsed = time.time() - t0
        bed.set_link(node, up=True)
    return rc, elapsed, log.read_text()
