"""Data-parallel training under mpirun: N-invariance, uneven data, rank-0 output, failures end the job."""
import json
import os
import re

import numpy as np
import pytest

from tests.parallel.mpi_helpers import run_mpi

TRAIN_JOB = """
import json, sys
import numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
from threadpoolctl import threadpool_info

distnet.utils.set_random_seed(5)
rng = np.random.default_rng(0)
n = 103                                   # not a multiple of the batch (10) nor of 2, 3 or 4 ranks
x = rng.normal(size=(n, 6, 6, 1)).astype(np.float32)
y = rng.integers(0, 3, n)
model = Sequential([layers.Input((6, 6, 1)), layers.Conv2D(3, 3, activation="relu"), layers.MaxPooling2D(),
                    layers.Flatten(), layers.Dense(8, activation="tanh"), layers.Dense(3, activation="softmax")])
model.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
hist = model.fit(x, y, batch_size=10, epochs=4, validation_split=0.2, verbose=2)
comm = distnet.distributed.communicator()
out = sys.argv[1]
np.savez(f"{out}/weights_{comm.size}_rank{comm.rank}.npz", *model.get_weights())
json.dump({"history": hist.history, "blas": [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]},
          open(f"{out}/info_{comm.size}_rank{comm.rank}.json", "w"))
print("FINAL", comm.rank, flush=True)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("dp")
    results = {}
    for n in (1, 2, 4):
        res = run_mpi(n, TRAIN_JOB, out, args=(str(out),), timeout=150)
        assert res.returncode == 0, res.stderr[-3000:]
        results[n] = res
    return out, results


def weights(out, n, rank=0):
    with np.load(out / f"weights_{n}_rank{rank}.npz") as z:
        return [z[k] for k in sorted(z.files, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.timeout(400)
@pytest.mark.parametrize("n", [2, 4])
def test_n_invariance_same_weights_as_one_worker(trained, n):
    out, _ = trained
    for a, b in zip(weights(out, 1), weights(out, n)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(400)
def test_replicas_stay_identical_and_see_identical_global_metrics(trained):
    out, _ = trained
    infos = [json.loads((out / f"info_4_rank{r}.json").read_text()) for r in range(4)]
    for r in range(1, 4):
        for a, b in zip(weights(out, 4, 0), weights(out, 4, r)):
            np.testing.assert_array_equal(a, b)
        assert infos[r]["history"] == infos[0]["history"]
    one = json.loads((out / "info_1_rank0.json").read_text())["history"]
    np.testing.assert_allclose(infos[0]["history"]["loss"], one["loss"], rtol=1e-5)
    np.testing.assert_allclose(infos[0]["history"]["val_accuracy"], one["val_accuracy"], rtol=1e-6)


@pytest.mark.timeout(400)
def test_only_rank0_prints_progress_and_blas_threads_are_limited(trained):
    out, results = trained
    stdout = results[4].stdout
    assert stdout.count("Epoch 1/4") == 1 and stdout.count("Epoch 4/4") == 1
    assert "[rank" not in "".join(ln for ln in stdout.splitlines() if "Epoch" in ln or "loss" in ln)
    assert sorted(ln for ln in stdout.splitlines() if "FINAL" in ln) == [
        "FINAL 0", "[rank 1/4] FINAL 1", "[rank 2/4] FINAL 2", "[rank 3/4] FINAL 3"]
    blas = json.loads((out / "info_4_rank0.json").read_text())["blas"]
    assert blas and all(t == 1 for t in blas)   # 4 ranks on a 2-core machine: 1 thread each


FAIL_JOB = """
import sys, time
import numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential

comm = distnet.distributed.init()
print("SEGMENTS", *{ln.split()[-1] for ln in open("/proc/self/maps") if "/dev/shm/mpich_shm_" in ln}, flush=True)
x, y = np.zeros((40, 4), np.float32), np.zeros(40, np.float32)
mode = sys.argv[1]
units = 5 if (mode == "model" and comm.rank == 2) else 4
model = Sequential([layers.Dense(units, input_dim=4), layers.Dense(1)])
model.compile(loss="mse", optimizer="sgd")
if mode == "data" and comm.rank == 1:
    x, y = x[:39], y[:39]

class Boom(distnet.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if comm.rank == 1 and batch == 2:
            raise RuntimeError("boom on purpose")

model.fit(x, y, batch_size=8, epochs=50, verbose=0, callbacks=[Boom()] if mode == "raise" else [])
print("SHOULD NOT FINISH", flush=True)
time.sleep(30)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,message", [
    ("raise", r"\[rank 1/3\].*RuntimeError: boom on purpose"),
    ("model", r"Workers disagree on model: rank 0 has .*rank 2 has"),
    ("data", r"Workers disagree on training data \(samples\): rank 0 has 40, rank 1 has 39"),
])
def test_failure_on_one_rank_ends_the_job_and_names_it(tmp_path, mode, message):
    import re
    import time
    t0 = time.time()
    res = run_mpi(3, FAIL_JOB, tmp_path, args=(mode,), timeout=60)
    elapsed = time.time() - t0
    context = f"rc={res.returncode} after {elapsed:.1f}s\nstdout: {res.stdout[-1500:]}\nstderr: {res.stderr[-2500:]}"
    assert res.returncode != 0, context
    assert elapsed < 30, context
    assert re.search(message, res.stderr, re.S), context
    assert "SHOULD NOT FINISH" not in res.stdout
    assert_segments_removed(res.stdout)


def assert_segments_removed(stdout):
    """MPICH frees its /dev/shm segments only in MPI_Finalize; after an MPI_Abort the aborting rank removes
    them (each rank printed the segments it maps, on a line starting SEGMENTS)."""
    segments = {p for ln in stdout.splitlines() if "SEGMENTS" in ln for p in ln.split()[1:] if p.startswith("/dev")}
    assert segments, stdout[-1500:]
    assert [p for p in segments if os.path.exists(p)] == []


STALL_JOB = """
import time, numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
comm = distnet.distributed.init(watchdog_timeout=3)
print("SEGMENTS", *{ln.split()[-1] for ln in open("/proc/self/maps") if "/dev/shm/mpich_shm_" in ln}, flush=True)
m = Sequential([layers.Dense(4, input_dim=3), layers.Dense(1)])
m.compile(loss="mse", optimizer="sgd")
class Stall(distnet.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if comm.rank == 2 and batch == 3:
            time.sleep(600)            # a rank stuck without dying: MPI itself would wait forever
m.fit(np.zeros((64, 3)), np.zeros(64), batch_size=8, epochs=5, verbose=0, callbacks=[Stall()])
"""


@pytest.mark.timeout(120)
def test_watchdog_names_a_stalled_rank_and_ends_the_job(tmp_path):
    import time
    t0 = time.time()
    res = run_mpi(4, STALL_JOB, tmp_path, timeout=60)
    elapsed = time.time() - t0
    assert res.returncode != 0 and elapsed < 30, (elapsed, res.stderr[-2000:])
    assert re.search(r"\[rank 0/4\] distnet watchdog: rank\(s\) \[2\] did not reach collective #\d+ \(allreduce\) "
                     r"within 3 s", res.stderr), res.stderr[-2000:]
    assert_segments_removed(res.stdout)
