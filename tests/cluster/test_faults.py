"""Faults across emulated nodes under MPI: every process of a node killed mid-training (the job restarts and
resumes: same weights as an uninterrupted run), and a node's link taken down mid-training (the watchdog names the
unreachable rank within its timeout; nothing hangs, nothing is left)."""
import json
import re
import time

import numpy as np
import pytest

from tests.cluster.conftest import JOB, cluster_of, launch, nothing_left, start, wait_for, without_link
from tests.parallel.mpi_helpers import require_mpi

ARGS = ["--samples", "640", "--epochs", "2"]


def reference_run(bed, tmp_path, n):
    """An uninterrupted run on n nodes in tmp_path/ref; returns (ref, broken): its directory and an empty one."""
    ref, broken = tmp_path / "ref", tmp_path / "broken"
    ref.mkdir()
    broken.mkdir()
    res = launch(bed, "-n", str(n), "--threads", "1", JOB, str(ref), *ARGS, "--backup", str(ref / "backup"))
    assert res.returncode == 0, res.stderr[-3000:]
    return ref, broken


@pytest.mark.timeout(400)
def test_a_node_whose_processes_all_die_is_restarted_and_training_resumes(tmp_path):
    require_mpi()
    with cluster_of(nodes=2) as bed:
        ref, broken = reference_run(bed, tmp_path, 2)
        proc = start(bed, broken, "-n", "2", "--threads", "1", "--max-restarts", "1", JOB, str(broken), *ARGS,
                     "--backup", str(broken / "backup"), "--slow-from", "8")
        wait_for(broken / "reached", proc)
        killed = bed.kill_processes("node2")              # rank 1, its Hydra proxy, the agent's shell
        assert killed >= 2
        assert proc.wait(240) == 0, (broken / "launch.log").read_text()[-3000:]
        log = (broken / "launch.log").read_text()
        assert "restarting the job (1 of 1 restarts)" in log, log[-3000:]
        np.testing.assert_array_equal(np.load(broken / "weights.npy"), np.load(ref / "weights.npy"))
        nothing_left(bed)


@pytest.mark.timeout(500)
def test_a_crashed_node_is_left_out_and_the_job_continues_on_the_others_with_the_same_result(tmp_path):
    """distnet-launch --min-workers: node3 crashes (link down, every process gone, the ssh stand-in answers that
    it is down); the job is relaunched on node1 and node2 only and resumes from its backup: 3 workers, then 2,
    with the weights of an uninterrupted 3-worker run."""
    require_mpi()
    with cluster_of(nodes=3) as bed:
        ref, broken = reference_run(bed, tmp_path, 3)
        proc = start(bed, broken, "-n", "3", "--threads", "1", "--max-restarts", "2", "--min-workers", "2",
                     "--watchdog-timeout", "5", JOB,
                     str(broken), *ARGS, "--backup", str(broken / "backup"), "--slow-from", "8")
        wait_for(broken / "reached", proc)
        t0 = time.monotonic()
        assert bed.crash("node3") >= 3                    # init, rank 2 (supervisor + worker), its proxy
        assert proc.wait(300) == 0, (broken / "launch.log").read_text()[-3000:]
        log = (broken / "launch.log").read_text()
        node3 = bed.node("node3")["address"]
        assert f"host {node3} is unreachable (" in log and "is down" in log, log[-3000:]
        assert "relaunching on 2 worker(s) (was 3)" in log, log[-3000:]
        assert "saved by 3 workers; continuing on 2 workers" in log, log[-3000:]
        result = json.loads((broken / "result.json").read_text())
        assert result["workers"] == 2 and len(set(result["hosts"])) == 2, result
        np.testing.assert_allclose(np.load(broken / "weights.npy"), np.load(ref / "weights.npy"), rtol=0, atol=1e-5)
        print(f"crash -> job done in {time.monotonic() - t0:.1f} s")
        nothing_left(bed)


@pytest.mark.timeout(300)
def test_a_node_losing_its_link_is_named_by_the_watchdog_and_nothing_hangs(tmp_path):
    require_mpi()
    with cluster_of(nodes=2) as bed:
        proc = start(bed, tmp_path, "-n", "2", "--threads", "1", JOB, str(tmp_path), *ARGS, "--slow-from", "6",
                     env={"DISTNET_WATCHDOG_TIMEOUT": "3"})
        wait_for(tmp_path / "reached", proc)
        rc, elapsed, log = without_link(bed, "node2", proc, tmp_path / "launch.log")
        assert rc != 0 and elapsed < 3 + 10, (rc, elapsed, log[-3000:])
        # the launcher's summary (from rank 0's status note); rank 0's own stderr line usually comes too, unless
        # MPI_Abort ends the forwarding first
        assert re.search(r"first failure: rank 0 of 2: raised watchdog: rank\(s\) \[1\] did not reach collective "
                         r"#\d+ \(allreduce\) within 3 s", log), log[-3000:]
        nothing_left(bed, timeout=30)          # node2's proxy ends once its link is back and mpiexec is gone


INSIDE = """
import sys, time
import numpy as np
import distnet
comm = distnet.distributed.init("mpi", watchdog_timeout=3)
buf = np.ones(8 << 20, np.float32)                   # 32 MiB: seconds on a 100 Mbit/s link
comm.barrier()
if comm.rank == 0:
    open(sys.argv[1], "w").close()
comm.allreduce_(buf, algorithm=sys.argv[2])
print("SHOULD NOT FINISH", flush=True)
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algorithm", ["native", "ring"])
def test_a_link_lost_inside_a_collective_ends_the_job_naming_the_peer(tmp_path, algorithm):
    """All ranks entered the allreduce, then the link went down: MPI would wait forever; the watchdog's deadline
    ends the job after its timeout and names the rank this one waits on."""
    require_mpi()
    job = tmp_path / "inside.py"
    job.write_text(INSIDE)
    with cluster_of(nodes=2, link="100mbit") as bed:
        proc = start(bed, tmp_path, "-n", "2", str(job), str(tmp_path / "reached"), algorithm)
        wait_for(tmp_path / "reached", proc)
        time.sleep(0.5)
        rc, elapsed, log = without_link(bed, "node2", proc, tmp_path / "launch.log")
        assert rc != 0 and elapsed < 3 + 5, (rc, elapsed, log[-3000:])
        # both sides time out together: each names the other (on its stderr line, or in the launcher's summary)
        said = re.findall(r"(?:\[rank (\d)/2\] distnet watchdog: |rank (\d) of 2: raised watchdog: )collective #\d+ "
                          r"\(allreduce\) did not complete within 3 s; this rank waits on rank\(s\) \[(\d)\]", log)
        assert said and all({int(a or b), int(c)} == {0, 1} for a, b, c in said), log[-3000:]
        assert "SHOULD NOT FINISH" not in log
        nothing_left(bed, timeout=30)
