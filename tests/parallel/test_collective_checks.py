"""Collective calls never hang or blend: the watchdog covers every collective, evaluate shares rank 0's weights,
and workers that disagree are told what about."""
import json
import re
import time

import numpy as np
import pytest

from tests.parallel.mpi_helpers import run_mpi

STALL = """
import sys, time, numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
comm = distnet.distributed.init()
mode = sys.argv[1]
m = Sequential([layers.Input((3,)), layers.Dense(2), layers.Dense(1)])
m.compile(loss="mse", optimizer="sgd")
x, y = np.zeros((32, 3)), np.zeros(32)
if comm.rank == 2 and mode == "sleep-before-fit":
    time.sleep(600)
if comm.rank == 2 and mode == "exit-before-fit":
    sys.exit(0)
if mode.endswith("before-fit"):
    m.fit(x, y, verbose=0)
if comm.rank == 1 and mode == "sleep-before-evaluate":
    m.fit(x, y, verbose=0)
    time.sleep(600)
if mode == "sleep-before-evaluate":
    m.fit(x, y, verbose=0)
    m.evaluate(x, y, verbose=0)
if mode == "evaluate-while-fit":
    (m.evaluate if comm.rank == 1 else m.fit)(x, y, verbose=0)
print("SHOULD NOT FINISH", flush=True)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,message", [
    ("sleep-before-fit", r"rank\(s\) \[2\] did not reach collective #1 \(allgather\) within 3 s"),
    ("exit-before-fit", r"rank\(s\) \[2\] did not reach collective #1 \(allgather\) within 3 s"),
    ("sleep-before-evaluate", r"rank\(s\) \[1\] did not reach collective #\d+ \(allgather\) within 3 s"),
    ("evaluate-while-fit", r"Workers disagree on (training|evaluate) data \(samples\)"),
])
def test_a_stalled_or_misplaced_rank_is_named_at_any_collective(tmp_path, mode, message):
    t0 = time.time()
    res = run_mpi(3, STALL, tmp_path, args=(mode,), timeout=60, env={"DISTNET_WATCHDOG_TIMEOUT": "3"})
    elapsed = time.time() - t0
    context = f"rc={res.returncode} after {elapsed:.1f}s\n{res.stdout[-1000:]}\n{res.stderr[-2500:]}"
    assert res.returncode != 0 and elapsed < 40, context
    assert re.search(message, res.stderr), context
    assert "SHOULD NOT FINISH" not in res.stdout, context


AGREE = """
import json, sys, numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
comm = distnet.distributed.init()
out = {}
if comm.rank == 1:
    layers.Dense(7)             # an extra layer object shifts this rank's automatic names
distnet.utils.set_random_seed(100 + comm.rank)    # every rank initialises differently
m = Sequential([layers.Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
m.compile(loss="mse", optimizer="sgd")
x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
y = x.sum(axis=1)
out["evaluate"] = m.evaluate(x, y, batch_size=8, verbose=0)
out["rank0_weights"] = distnet.distributed.broadcast(m.flat_state.params).tolist()
out["weights"] = m.flat_state.params.tolist()
m.fit(x, y, batch_size=8, epochs=1, verbose=0)
out["trained"] = True
try:
    m.fit(x, y, batch_size=8, epochs=1, verbose=0, validation_data=(x, y) if comm.rank == 0 else None)
except RuntimeError as e:
    out["validation_error"] = str(e)
json.dump(out, open(f"{sys.argv[1]}/agree_{comm.rank}.json", "w"))
"""


@pytest.mark.timeout(120)
def test_evaluate_starts_from_rank0_weights_and_names_differ_harmlessly(tmp_path):
    res = run_mpi(3, AGREE, tmp_path, args=(str(tmp_path),), timeout=90)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = [json.loads((tmp_path / f"agree_{r}.json").read_text()) for r in range(3)]
    for o in outs:
        assert o["trained"] and o["weights"] == outs[0]["weights"] == o["rank0_weights"]
        assert o["evaluate"] == outs[0]["evaluate"]
        assert re.search(r"validation_data \(samples\): rank 0 has 30, rank 1 has None.*validation_data must be given "
                         r"on every rank", o["validation_error"]), o["validation_error"]
    # rank 0's own model on all the data, as one process would compute it
    from distnet import layers
    from distnet.models import Sequential
    m = Sequential([layers.Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    m.compile(loss="mse", optimizer="sgd")
    m.flat_state.params[...] = np.array(outs[0]["rank0_weights"], np.float32)
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    assert np.isclose(m.evaluate(x, x.sum(axis=1), batch_size=8, verbose=0), outs[0]["evaluate"], rtol=1e-5)
