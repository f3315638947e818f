"""MPI across emulated nodes: distnet-launch reaches them through the testbed's ssh stand-in, gradients cross the
links (counted), and the result equals one process's."""
import json
import os
import subprocess

import numpy as np
import pytest

from launch import cli, mpi
from tests.cluster.conftest import JOB, ROOT, cluster_of, launch, nothing_left, one_process
from tests.parallel.mpi_helpers import require_mpi


@pytest.mark.timeout(300)
def test_cnn_across_two_nodes_matches_one_process_and_crosses_the_links(tmp_path):
    require_mpi()
    ref, _ = one_process(tmp_path, "--samples", "320")
    with cluster_of(nodes=2, link="1gbit") as bed:
        out = tmp_path / "mpi"
        out.mkdir()
        before = [bed.link_bytes(k) for k in (1, 2)]
        res = launch(bed, "-n", "2", "--threads", "1", JOB, str(out), "--samples", "320")
        after = [bed.link_bytes(k) for k in (1, 2)]
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        result = json.loads((out / "result.json").read_text())
        assert result["hosts"] == [f"{bed.prefix}-node1", f"{bed.prefix}-node2"], result
        np.testing.assert_allclose(np.load(out / "weights.npy"), ref, rtol=1e-5, atol=1e-6)
        # every step sums the whole gradient: each node sends at least the gradient's bytes per step
        need = result["gradient_bytes"] * result["steps"]
        assert result["steps"] == 10
        for k in (0, 1):
            assert after[k]["tx"] - before[k]["tx"] > need, (k, after[k], before[k], need)
        nothing_left(bed)


def test_launch_options_for_real_clusters(tmp_path, capsys):
    """--ssh with options becomes a wrapper script (Hydra takes one path), --iface and --network reach mpirun."""
    require_mpi()
    script = os.path.join(ROOT, "examples", "train_mlp.py")
    assert cli.main(["--dry-run", "--hosts", "a:2,b:2", "--ssh", "ssh -p 2222", "--iface", "eth1",
                     "--network", "tcp", script]) == 0
    out = capsys.readouterr().out
    assert "-hosts a:2,b:2 -launcher ssh -launcher-exec " in out and " -iface eth1 -genv UCX_TLS tcp,self " in out
    assert 'a script that runs ssh -p 2222 "$@"' in out
    cmd = mpi.command("mpirun", "hydra", 2, [("a", 1)], ["python", "x.py"], ssh="/usr/bin/ssh", network="tcp-only")
    assert cmd[cmd.index("-launcher-exec") + 1] == "/usr/bin/ssh"
    assert "MPIR_CVAR_NOLOCAL" in cmd
    cmd = mpi.command("mpirun", "openmpi", 2, [("a", 1)], ["python", "x.py"], ssh="ssh -p 2222", iface="eth1",
                      network="tcp")
    assert ["--mca", "plm_rsh_agent", "ssh -p 2222"] == cmd[5:8] and "btl_tcp_if_include" in cmd
    wrapper = mpi.ssh_wrapper("echo -p 2222", str(tmp_path))
    res = subprocess.run([wrapper, "-x", "host", "cmd"], capture_output=True, text=True)
    assert res.stdout.strip() == "-p 2222 -x host cmd"
    with pytest.raises(mpi.LaunchError, match="--network must be one of auto, tcp, tcp-only, received 'ib'"):
        mpi.command("mpirun", "hydra", 2, None, ["x"], network="ib")
    assert cli.main(["--testbed", "--testbed-name", "dtnone", script]) == 2
    assert "no testbed 'dtnone' is up" in capsys.readouterr().err


HIERARCHY = """
import json, sys
import numpy as np
import distnet

comm = distnet.distributed.init("mpi")
bad = []
for length in [0, 1, 3, 1001, 300000]:
    mine = np.random.default_rng(comm.rank * 7 + length).normal(size=length).astype(np.float32)
    want = np.sum(comm.allgather(mine.astype(np.float64).tolist()), axis=0) if length else mine
    for alg in ("hierarchical", "ring", "native", "auto"):
        buf = mine.copy()
        comm.allreduce_(buf, algorithm=alg)
        if not np.allclose(buf, want, rtol=1e-4, atol=1e-4):
            bad.append((alg, length))

def sent():
    with open("/sys/class/net/eth0/statistics/tx_bytes") as f:      # this node's link, as the node sees it
        return int(f.read())

link = {}
buf = np.ones(1 << 20, np.float32)                                    # 4 MiB
for alg in ("ring", "hierarchical"):
    comm.barrier()
    before = sent()
    for _ in range(5):
        comm.allreduce_(buf, algorithm=alg)
    comm.barrier()
    link[alg] = (sent() - before) / 5
out = comm.allgather({"bad": bad, "local": [comm.local_rank, comm.local_size], "nodes": comm.num_nodes,
                      "link": link, "auto": [comm.auto_algorithm(n) for n in (256 << 10, 1 << 20, 16 << 20)]})
if comm.rank == 0:
    json.dump(out, open(sys.argv[1], "w"))
"""


@pytest.mark.timeout(300)
def test_hierarchical_allreduce_on_two_nodes_of_two_ranks(tmp_path):
    """Sums inside each node, rings between the leaders: correct, and each node's link carries 1x the buffer per
    allreduce instead of the flat ring's 1.5x (2 of its 4 ranks' hops cross the network)."""
    require_mpi()
    job = tmp_path / "hier.py"
    job.write_text(HIERARCHY)
    with cluster_of(nodes=2, link="1gbit", slots=2) as bed:
        res = launch(bed, "-n", "4", "--threads", "1", str(job), str(tmp_path / "out.json"))
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
        ranks = json.loads((tmp_path / "out.json").read_text())
        assert all(r["bad"] == [] for r in ranks), ranks
        assert [r["local"] for r in ranks] == [[0, 2], [1, 2], [0, 2], [1, 2]] and {r["nodes"] for r in ranks} == {2}
        assert all(r["auto"] == ["hierarchical", "native", "ring"] for r in ranks)      # 256 KiB, 1 MiB, 16 MiB
        for r in ranks:
            mib = 4 * 2**20
            assert 1.4 * mib < r["link"]["ring"] < 1.7 * mib, r          # payload + TCP/IP headers
            assert 0.95 * mib < r["link"]["hierarchical"] < 1.15 * mib, r
        nothing_left(bed)


@pytest.mark.timeout(120)
def test_auto_takes_the_ring_across_three_nodes(tmp_path):
    """MPICH's own allreduce on a worker count that is not a power of two moves whole buffers first: across
    nodes, auto prefers the ring from 256 KiB (and stays native on one node, and below)."""
    require_mpi()
    job = tmp_path / "auto.py"
    job.write_text("import json, sys\nimport distnet\nc = distnet.distributed.init('mpi')\n"
                   "out = [c.num_nodes, [c.auto_algorithm(n) for n in (64 << 10, 1 << 20)]]\n"
                   "json.dump(out, open(sys.argv[1] + f'/{c.rank}.json', 'w'))\n")
    with cluster_of(nodes=3) as bed:
        res = launch(bed, "-n", "3", str(job), str(tmp_path))
        assert res.returncode == 0, res.stderr[-3000:]
        assert all(json.loads((tmp_path / f"{r}.json").read_text()) == [3, ["native", "ring"]] for r in range(3))
        nothing_left(bed)
