"""distnet-bench runs end to end (tiny sizes) and writes its records, predictions and plots."""
import json
import os

import pytest

from distnet.bench import costmodel
from distnet.bench.__main__ import main
from tests.parallel.mpi_helpers import require_mpi


def test_cost_model_fit_recovers_alpha_beta_and_predicts():
    truth = {"alpha": 20e-6, "beta": 1 / 2e9}
    records = [{"n": n, "bytes": b, "seconds": costmodel.ring_time(n, b, **truth)}
               for n in (2, 4) for b in (1 << 10, 1 << 20, 16 << 20)]
    fit = costmodel.fit_alpha_beta(records)
    assert fit["alpha"] == pytest.approx(truth["alpha"], rel=1e-6) and fit["beta"] == pytest.approx(truth["beta"])
    ps = costmodel.predict(0.03, 4e6, [2, 64], costmodel.parse_network("10gbit"))
    assert 0 < ps[1]["efficiency"] < ps[0]["efficiency"] < 1
    fp16 = costmodel.predict(0.03, 4e6, [64], costmodel.NETWORKS["10gbit"], "fp16")[0]
    assert fp16["efficiency"] > ps[1]["efficiency"]
    with pytest.raises(ValueError, match="network must be one of"):
        costmodel.parse_network("1gbit")


@pytest.mark.timeout(300)
def test_bench_cli_engine_allreduce_scaling(tmp_path, capsys):
    require_mpi()
    assert main(["engine", "--model", "mlp", "--batch", "8", "--steps", "3", "--warmup", "1", "--repeat", "2",
                 "--json", str(tmp_path / "e.json")]) == 0
    rows = json.loads((tmp_path / "e.json").read_text())["results"]
    assert rows[0]["impl"] == "distnet" and rows[0]["runs"] == 2 and rows[0]["min_ms"] <= rows[0]["step_ms"]
    assert main(["allreduce", "-n", "2", "--sizes", "4K,64K", "--json", str(tmp_path / "a.json"),
                 "--plot", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "a.json").read_text())["results"]
    ar = [r for r in rows if r["kind"] == "allreduce"]
    assert {r["impl"] for r in ar} == {"ring", "native"} and all(r["algbw_GBps"] > 0 for r in ar)
    assert os.path.getsize(tmp_path / "allreduce.png") > 1000
    assert main(["scaling", "-n", "1,2", "--model", "mlp", "--steps", "5", "--predict", "10gbit", "--repeat", "2",
                 "--plot", str(tmp_path), "--json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "PREDICTED" in out and "efficiency" in out and "over 2 runs" in out
    rows = json.loads((tmp_path / "s.json").read_text())["results"]
    measured = [r for r in rows if r["kind"] == "scaling"]
    assert [r["n"] for r in measured] == [1, 2, 1, 2] and measured[0]["efficiency"] == 1.0
    assert all(r["samples_per_s"] > 0 for r in measured)
    for name in ("efficiency", "throughput", "breakdown"):
        assert os.path.getsize(tmp_path / f"scaling_{name}.png") > 1000


def test_history_plot(tmp_path):
    from distnet import plot
    path = plot.history({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.5, 0.8]}, tmp_path / "h.png")
    assert os.path.getsize(path) > 1000
    with pytest.raises(ValueError, match="history is empty"):
        plot.history({}, tmp_path / "x.png")


@pytest.mark.parametrize("repeat", [1, 2])
def test_engine_profile_names_layers_flops_and_the_ceiling(repeat, tmp_path, capsys):
    assert main(["engine", "--model", "cnn", "--batch", "4", "--steps", "2", "--warmup", "1", "--profile",
                 "--repeat", str(repeat), "--json", str(tmp_path / "p.json")]) == 0
    rows = json.loads((tmp_path / "p.json").read_text())["results"]
    layers = [r for r in rows if r["kind"] == "profile"]         # (names depend on the layers made before)
    first, second = [r for r in layers if r["class"] == "Conv2D"][:2]
    flatten = next(r for r in layers if r["class"] == "Flatten")
    assert first["gflop"] > 0 and first["forward_ms"] > 0 and flatten["gflop"] == 0
    # computed: the first layer has no input gradient (2 of 3 products); the second, pooled in one pass, its
    # 12x12 of 13x13 output positions
    assert first["computed_gflop"] == pytest.approx(first["gflop"] * 2 / 3)
    assert second["computed_gflop"] == pytest.approx(second["gflop"] * 144 / 169)
    summary = next(r for r in rows if r["kind"] == "profile_summary")
    assert summary["gemm_ceiling_gflops"] > 0 and 0 < summary["share_of_ceiling"]
    assert summary["computed_gflop_per_step"] < summary["gflop_per_step"]
    out = capsys.readouterr().out
    assert "of this core's GEMM" in out and "the engine computes" in out
    if repeat > 1:
        assert summary["runs"] == 2 and len(summary["layers_share_runs"]) == 2 and "2 fresh processes" in out


def test_profile_times_a_max_pooling_entered_through_its_relu_input():
    """A chain enters a max pooling after a ReLU at backward_relu_input: its time is the layer's backward."""
    import time

    import numpy as np

    from distnet import layers
    from distnet.bench import profile
    pool = layers.MaxPooling2D()
    pool.build_for((4, 4, 2))
    pool(np.ones((1, 4, 4, 2), np.float32))
    acc = [0.0, 0.0]
    profile._wrap(pool, acc)
    pool.backward = lambda g, need_input_grad=True: time.sleep(0.02) or g      # the work inside the entry
    pool.backward_relu_input(np.ones((1, 2, 2, 2), np.float32))
    assert acc[1] >= 0.02 and acc[0] == 0.0
