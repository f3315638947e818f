"""distnet-bench cluster: the cost model's shared-host term, the report tables, and a small run end to end."""
import json
import os
import subprocess
import sys

import pytest

from distnet.bench import cluster_report, costmodel
from tests.cluster.conftest import ROOT, require_testbed
from tests.parallel.mpi_helpers import require_mpi


def _records(alpha=50e-6, beta=1 / 0.12e9, host_beta=1 / 2e9):
    return [{"n": n, "bytes": b, "seconds": costmodel.ring_time(n, b, alpha, beta, host_beta)}
            for n in (2, 3, 4) for b in (1 << 16, 1 << 20, 1 << 24)]


def test_fit_with_the_shared_host_term_recovers_the_parameters():
    fit = costmodel.fit_alpha_beta_host(_records())
    assert fit["alpha"] == pytest.approx(50e-6, rel=1e-3)
    assert 1 / fit["beta"] == pytest.approx(0.12e9, rel=1e-3) and 1 / fit["host_beta"] == pytest.approx(2e9, rel=1e-3)
    plain = costmodel.fit_alpha_beta(_records(host_beta=0.0))
    assert 1 / plain["beta"] == pytest.approx(0.12e9, rel=1e-3) and plain["alpha"] == pytest.approx(50e-6, rel=1e-3)
    # every coefficient stays >= 0 even when the data would pull one below
    noisy = [dict(r, seconds=r["seconds"] * (0.9 if r["bytes"] < 1e5 else 1.0)) for r in _records(alpha=0)]
    assert min(costmodel.fit_alpha_beta_host(noisy).values()) >= 0
    with pytest.raises(ValueError, match="2\\+ worker counts"):
        costmodel.fit_alpha_beta_host([r for r in _records() if r["n"] == 2])


def test_tables():
    recs = [dict(r, link=link, backend="mpi", impl="ring", nodes=r["n"], repetition=k, busbw_GBps=0.1 + 0.01 * k)
            for link in ("1gbit", "10gbit") for k in range(3) for r in _records()]
    text = cluster_report.allreduce_table(recs)
    assert "| 1gbit | mpi ring | 2 | 0.11 [0.10-0.12]" in text and text.index("| 1gbit") < text.index("| 10gbit")
    fits, rows = cluster_report.model_check(recs, host_term=True)
    assert all(abs(r["error"]) < 1e-6 for r in rows)
    assert "9/9 |" in cluster_report.model_table(recs, host_term=True)
    levers = [{"link": "-", "lever": "1 worker", "efficiency": 1.0, "step_s": 0.03}] + [
        {"link": "1gbit", "lever": lev, "efficiency": e / 2, "comm_efficiency": e, "comm_share": 1 - e,
         "step_s": 0.04, "link_bytes_per_update": 6e5} for lev, e in (("none", 0.6), ("bf16", 0.8), ("topk 1%", 0.9))]
    assert cluster_report.recovered(levers) == ("topk 1%", pytest.approx(0.75))
    assert ("| 1gbit | bf16 | 40.0 [40.0-40.0]% | 80.0 [80.0-80.0]% | 20.0 [20.0-20.0]% | 40.0 [40.0-40.0] | 600,000 |"
            in cluster_report.levers_table(levers))


def test_hierarchical_model_and_table():
    a, b, local = 50e-6, 1 / 0.12e9, 1 / 8e9
    m = 1 << 24
    # 2 nodes x 2: a reduce and a broadcast of one level over shared memory, and a 2-leader ring
    assert costmodel.hierarchical_time(2, 2, m, a, b, local) == pytest.approx(2 * m * local + 2 * a + m * b)
    assert costmodel.hierarchical_time(2, 1, m, a, b, local) == costmodel.ring_time(2, m, a, b)
    model = [{"link": "1gbit", "backend": "mpi", "impl": "ring", "repetition": 0, **r} for r in _records(a, b, 0)]
    recs = [{"link": "1gbit", "impl": impl, "bytes": m, "repetition": k, "seconds": t}
            for k in range(2) for impl, t in (("ring", 0.3), ("native", 0.35), ("hierarchical", 0.2))]
    text = cluster_report.hierarchical_table(recs, model, 8e9)
    ring_ms = costmodel.ring_time(4, m, a, b) * 1e3
    assert (f"| 16 MiB | 300.0 [300.0-300.0] | 350.0 [350.0-350.0] | 200.0 [200.0-200.0] | 1.50x | {ring_ms:.1f} |"
            in text)


@pytest.mark.timeout(600)
def test_distnet_bench_cluster_end_to_end(tmp_path):
    require_testbed()
    require_mpi()
    pytest.importorskip("matplotlib")
    env = {**os.environ, "PYTHONPATH": ROOT, "DISTNET_BENCH_TESTBED": "dtbench,10.77.253.0/24"}
    for what, extra in (("allreduce", ["--nodes", "2,3", "--sizes", "64K,1M", "--backend", "mpi"]),
                        ("levers", ["--steps", "3"]), ("hierarchical", ["--sizes", "64K,1M"])):
        res = subprocess.run([sys.executable, "-m", "distnet.bench", "cluster", what, "--links", "1gbit",
                              "--repeat", "2", "--plot", str(tmp_path), "--json", str(tmp_path / f"{what}.json"),
                              *extra], capture_output=True, text=True, env=env, timeout=500, cwd=ROOT)
        assert res.returncode == 0, res.stderr[-3000:]
        assert (tmp_path / f"cluster_{what}.png").exists()
        rows = json.loads((tmp_path / f"{what}.json").read_text())["results"]
        assert {r["repetition"] for r in rows} == {0, 1}
    assert "| 1 MiB |" in res.stdout and "ring / hierarchical" in res.stdout
    assert not os.path.exists("/run/distnet-cluster/dtbench")
