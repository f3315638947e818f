"""distnet.distributed under mpirun: collectives, opt-out, rank-0 broadcast of initial weights, buckets, timeline."""
import json

import pytest

from tests.parallel.mpi_helpers import run_mpi

API_JOB = """
import json, sys
import numpy as np
import distnet
import distnet.distributed as dist
from distnet import layers
from distnet.models import Sequential
from distnet.timeline import Timeline

out = sys.argv[1]
comm = dist.init()
r, n = dist.rank(), dist.size()
res = {"rank": r, "size": n, "is_main": dist.is_main(), "local_size": dist.local_size()}
res["sum"] = dist.allreduce(np.array([r + 1.0, 2.0])).tolist()
res["mean"] = dist.allreduce(np.array([float(r)]), op="mean").tolist()
res["bcast"] = dist.broadcast(np.array([r * 10, 7]), root=1).tolist()
dist.barrier()

# every rank initialises differently (seed = rank); rank 0's weights must win
distnet.utils.set_random_seed(100 + r)
def model(bucket):
    m = Sequential([layers.Dense(16, input_dim=5, activation="relu"), layers.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="sgd", bucket_bytes=bucket)
    return m
m = model(None)
init0 = dist.broadcast(m.flat_state.params)
x = np.random.default_rng(0).normal(size=(50, 5)).astype(np.float32)
y = np.random.default_rng(1).integers(0, 3, 50)
m.timeline = Timeline(f"{out}/trace.json")
m.fit(x, y, batch_size=10, epochs=2, verbose=0, shuffle=False)
b = model(64)                                   # 64-byte buckets: many allreduce calls per step
b.flat_state.params[...] = init0
b.fit(x, y, batch_size=10, epochs=2, verbose=0, shuffle=False)
res["weights"] = [float(v) for v in m.flat_state.params[:5]]
res["bucket_diff"] = float(np.max(np.abs(b.flat_state.params - m.flat_state.params)))
res["init0"] = [float(v) for v in init0[:5]]

# opt-out: every rank trains alone on its own data
dist.disable()
res["after_disable"] = [dist.rank(), dist.size()]
json.dump(res, open(f"{out}/api_{r}.json", "w"))
"""


@pytest.mark.timeout(180)
def test_distributed_api_under_mpi(tmp_path):
    res = run_mpi(3, API_JOB, tmp_path, args=(str(tmp_path),))
    assert res.returncode == 0, res.stderr[-3000:]
    infos = [json.loads((tmp_path / f"api_{r}.json").read_text()) for r in range(3)]
    for r, info in enumerate(infos):
        assert (info["rank"], info["size"], info["is_main"]) == (r, 3, r == 0)
        assert info["local_size"] == 3
        assert info["sum"] == [6.0, 6.0] and info["mean"] == [1.0] and info["bcast"] == [10, 7]
        assert info["weights"] == infos[0]["weights"]        # replicas identical despite different seeds
        assert info["init0"] == infos[0]["init0"]
        assert info["bucket_diff"] < 1e-6                     # bucketed allreduce: same training
        assert info["after_disable"] == [0, 1]
    trace = json.loads((tmp_path / "trace.json").read_text())
    names = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X"}
    assert {"forward", "backward", "allreduce", "optimizer", "data"} <= names
    assert {e["pid"] for e in trace["traceEvents"] if e["ph"] == "X"} == {0, 1, 2}
