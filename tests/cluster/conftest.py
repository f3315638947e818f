"""Emulated nodes for the multi-node tests: a testbed per test module, always removed.

Removal is guaranteed three ways: the fixture's teardown (also on a failing test or Ctrl-C), and a detached
reaper that takes the testbed down when this pytest process is gone (killed), started by `up(owner=...)`."""
import contextlib
import os
import subprocess

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
