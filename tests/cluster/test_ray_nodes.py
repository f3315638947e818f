"""Ray across emulated nodes: the head started on node1 with cluster.yaml's own head command, node2 joined with
its worker command; distnet's workers placed on both nodes, the ring's bytes on the links, the same weights as
one process, and what Ray listens on."""
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from launch.testbed import ray_nodes
from tests.cluster.conftest import JOB, ROOT, cluster_of, launch, one_process, wait_for, without_link

pytest.importorskip("ray")
pytest.importorskip("yaml")


@pytest.fixture(scope="module")
def ray_cluster():
    with cluster_of(nodes=2, link="1gbit") as bed:
        head = ray_nodes.up(bed, os.path.join(ROOT, "cluster.yaml"))
        yield bed, head


def listening(bed, node):
    """(address, port, program) of every listening TCP socket of the node's processes."""
    owners = {}
    for pid in bed.processes(node):
        try:
            program = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode(errors="replace")
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owners[target[8:-1]] = os.path.basename(program)
        except OSError:
            continue
    out = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{bed.init_pid(node)}/net/{table}") as f:        # the node's own network namespace
            for line in f.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in owners:
                    address, port = fields[1].rsplit(":", 1)
                    out.append((_address(address), int(port, 16), owners[fields[9]]))
    return out


def _address(hex_text):
    if len(hex_text) == 8:
        return socket.inet_ntoa(struct.pack("<I", int(hex_text, 16)))
    words = struct.pack("<4I", *(int(hex_text[i:i + 8], 16) for i in range(0, 32, 8)))
    text = socket.inet_ntop(socket.AF_INET6, words)
    return text[7:] if text.startswith("::ffff:") else text


@pytest.mark.timeout(600)
def test_cnn_on_ray_across_two_nodes_matches_one_process(ray_cluster, tmp_path):
    bed, head = ray_cluster
    ref, _ = one_process(tmp_path, "--samples", "320")
    out = tmp_path / "ray"
    out.mkdir()
    before = [bed.link_bytes(k) for k in (1, 2)]
    res = launch(bed, "--backend", "ray", "-n", "2", JOB, str(out), "--samples", "320", timeout=300)
    after = [bed.link_bytes(k) for k in (1, 2)]
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["backend"] == "ray" and sorted(result["hosts"]) == [f"{bed.prefix}-node1", f"{bed.prefix}-node2"]
    np.testing.assert_allclose(np.load(out / "weights.npy"), ref, rtol=1e-5, atol=1e-6)
    need = result["gradient_bytes"] * result["steps"]            # the ring: each node sends a gradient per step
    for k in (0, 1):
        assert after[k]["tx"] - before[k]["tx"] > need, (k, after[k], before[k], need)
    no_actors_left(bed)


@pytest.mark.timeout(600)
def test_ray_job_submit_places_workers_on_both_nodes(ray_cluster, tmp_path):
    bed, head = ray_cluster
    out = tmp_path / "job"
    out.mkdir()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": ROOT}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    job = subprocess.run(bed.exec_argv("node1", [
        ray_bin, "job", "submit", "--address", f"http://{head.split(':')[0]}:8265", "--working-dir", ROOT, "--",
        sys.executable, "-m", "launch", "--backend", "ray", "-n", "2", "tests/cluster/cnn_job.py", str(out),
        "--samples", "64"]), capture_output=True, text=True, env=env, timeout=400)
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert sorted(result["hosts"]) == [f"{bed.prefix}-node1", f"{bed.prefix}-node2"], result


def test_ray_listens_only_on_the_cluster_address_and_loopback(ray_cluster):
    """Ray's core gRPC servers (GCS, raylet, workers, dashboard agent) bind either 127.0.0.1 or every interface,
    whatever --node-ip-address says; a node's only interfaces are loopback and its cluster link (IPv4 only), so
    every Ray port is reachable on the cluster's addresses alone. The rest bind the node's address."""
    bed, head = ray_cluster
    for n in bed.nodes:
        addresses = subprocess.run(bed.exec_argv(n["name"], ["ip", "-o", "addr"]), capture_output=True,
                                   text=True).stdout
        assert {ln.split()[3] for ln in addresses.splitlines()} == {"127.0.0.1/8", f"{n['address']}/24"}, \
            addresses                                                # no IPv6, no other interface
        found = listening(bed, n["name"])
        assert any(p == "gcs_server" for _, _, p in found) == (n["name"] == "node1")
        assert any(p == "raylet" for _, _, p in found)
        bad = [f for f in found if f[0] not in (n["address"], "127.0.0.1", "0.0.0.0", "::")]
        assert not bad, bad
        if n["name"] == "node1":
            assert (n["address"], 8265) in [(a, p) for a, p, _ in found]         # dashboard: the head's address


# -- faults (last in this module: they break node2, then rejoin it) ---------------------------------------------
DRIVER = """
import os, runpy, socket, sys
import distnet.ray

def train(job, out, args):
    from distnet.parallel import world
    with open(os.path.join(out, f"rank{world.current().rank}.host"), "w") as f:
        f.write(socket.gethostname())
    sys.argv = [job, out, *args]
    runpy.run_path(job, run_name="__main__")

job, head, out, max_failures, timeout, *args = sys.argv[1:]
try:
    distnet.ray.run(train, num_workers=2, address=head, max_failures=int(max_failures),
                    timeout=float(timeout) if timeout != "none" else None, args=(job, out, args),
                    min_workers=int(os.environ.get("MIN_WORKERS", "0")) or None, wait_for_workers=5)
    print("DONE")
except distnet.ray.WorkerFailure as e:
    print("FAILED", e.rank, e.stalled, "|", str(e).splitlines()[0], "|", str(e).splitlines()[-1])
"""


def drive(bed, head, out, max_failures=0, timeout="none", *args, min_workers=None):
    """The driver on the head node (Ray wants a raylet on the driver's node); returns the process."""
    script = out / "driver.py"
    script.write_text(DRIVER)
    log = open(out / "driver.log", "w")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": ROOT, "MIN_WORKERS": str(min_workers or 0)}
    return subprocess.Popen(bed.exec_argv("node1", [sys.executable, str(script), JOB, head, str(out),
                                                    str(max_failures), str(timeout), *args]),
                            stdout=log, stderr=subprocess.STDOUT, text=True, env=env)


def distnet_actors(bed):
    """Processes of distnet's worker actors still running on the nodes."""
    found = []
    for n in bed.nodes:
        for pid in bed.processes(n["name"]):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::Worker"):
                    found.append((n["name"], pid))
            except OSError:
                pass
    return found


def no_actors_left(bed, timeout=30):
    deadline = time.time() + timeout
    while distnet_actors(bed) and time.time() < deadline:
        time.sleep(0.5)
    assert not distnet_actors(bed), distnet_actors(bed)


@pytest.mark.timeout(600)
def test_ray_group_survives_losing_every_process_of_a_node(ray_cluster, tmp_path):
    bed, head = ray_cluster
    ref, broken = tmp_path / "ref", tmp_path / "broken"
    ref.mkdir()
    broken.mkdir()
    args = ["--samples", "640", "--epochs", "2"]
    proc = drive(bed, head, ref, 0, "none", *args, "--backup", str(ref / "backup"))
    assert proc.wait(300) == 0 and "DONE" in (ref / "driver.log").read_text(), (ref / "driver.log").read_text()
    proc = drive(bed, head, broken, 1, "none", *args, "--backup", str(broken / "backup"), "--slow-from", "8")
    wait_for(broken / "reached", proc)
    assert {(broken / f"rank{r}.host").read_text() for r in (0, 1)} == {f"{bed.prefix}-node1",
                                                                          f"{bed.prefix}-node2"}
    assert bed.kill_processes("node2") >= 3                  # the raylet, its agents and the distnet worker
    assert proc.wait(400) == 0
    log = (broken / "driver.log").read_text()
    assert "failed: its actor died" in log and "restarting the worker group (1 of 1 restarts)" in log, log[-3000:]
    assert "DONE" in log, log[-3000:]
    np.testing.assert_array_equal(np.load(broken / "weights.npy"), np.load(ref / "weights.npy"))
    no_actors_left(bed)
    ray_nodes.join(bed, "node2", os.path.join(ROOT, "cluster.yaml"))      # node2 back for the next test


@pytest.mark.timeout(600)
def test_ray_elastic_training_goes_on_on_the_node_left_when_a_node_fails(ray_cluster, tmp_path):
    """min_workers=1: every process of node2 dies mid-run (its raylet, agents and distnet worker); the worker on
    node1 goes on alone, without a restart, and ends with the weights of an uninterrupted 2-node run."""
    bed, head = ray_cluster
    ref, broken = tmp_path / "ref", tmp_path / "broken"
    ref.mkdir()
    broken.mkdir()
    args = ["--samples", "640", "--epochs", "2"]
    proc = drive(bed, head, ref, 0, "none", *args)
    assert proc.wait(300) == 0 and "DONE" in (ref / "driver.log").read_text(), (ref / "driver.log").read_text()
    proc = drive(bed, head, broken, 0, "none", *args, "--slow-from", "8", min_workers=1)
    wait_for(broken / "reached", proc)
    far = next(r for r in (0, 1) if (broken / f"rank{r}.host").read_text() == f"{bed.prefix}-node2")
    assert bed.kill_processes("node2") >= 3
    assert proc.wait(400) == 0
    log = (broken / "driver.log").read_text()
    assert re.search(rf"rank {far} left at step \d+ of epoch \d; continuing on 1 worker\b", log), log[-3000:]
    assert "DONE" in log and "restarting" not in log, log[-3000:]
    np.testing.assert_allclose(np.load(broken / "weights.npy"), np.load(ref / "weights.npy"), rtol=0, atol=1e-5)
    no_actors_left(bed)
    ray_nodes.join(bed, "node2", os.path.join(ROOT, "cluster.yaml"))      # node2 back for the next test


@pytest.mark.timeout(600)
def test_ray_timeout_names_the_rank_behind_a_dead_link(ray_cluster, tmp_path):
    bed, head = ray_cluster
    proc = drive(bed, head, tmp_path, 0, "5", "--samples", "640", "--epochs", "2", "--slow-from", "6")
    wait_for(tmp_path / "reached", proc, timeout=300)
    far = next(r for r in (0, 1) if (tmp_path / f"rank{r}.host").read_text() == f"{bed.prefix}-node2")
    _, elapsed, log = without_link(bed, "node2", proc, tmp_path / "driver.log")
    line = next((ln for ln in log.splitlines() if ln.startswith("FAILED")), None)
    assert line is not None, log[-3000:]
    # the ring's wait gives up after 5 s; asking every actor how far it got takes up to 5 s more
    # the 5 s timeout, the progress query, and slack for a loaded CI machine
    assert elapsed < 5 + 5 + 40, (elapsed, line)
    assert f"stalled: rank(s) [{far}] did not answer" in line, line
    no_actors_left(bed, timeout=60)
