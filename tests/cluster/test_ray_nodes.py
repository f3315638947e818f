"""Ray across emulated nodes: the head started on node1 with cluster.yaml's own head command, node2 joined with
its worker command; distnet's workers placed on both nodes, the ring's bytes on the links, the same weights as
one process, and what Ray listens on."""
import json
import os
import socket
import struct
import subprocess
import sys

import numpy as np
import pytest

from launch.testbed import ray_nodes
from tests.cluster.conftest import ROOT, cluster_of
from tests.cluster.test_mpi_nodes import JOB, launch, one_process

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
