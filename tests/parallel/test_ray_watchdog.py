"""The stall watchdog on Ray workers: `distributed.init(watchdog_timeout=...)` works there as under MPI."""
import pytest

pytest.importorskip("ray")
from tests.parallel.test_ray import run_py  # noqa: E402

WATCHDOG = """
import time
import numpy as np
import distnet.ray

def train():
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init(watchdog_timeout=3)      # inside an actor: the Ray communicator's watchdog
    m = Sequential([layers.Input((3,)), layers.Dense(4), layers.Dense(1)])
    m.compile(loss="mse", optimizer="sgd")
    class Stall(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if comm.rank == 1 and batch == 2:
                time.sleep(600)
    m.fit(np.zeros((64, 3)), np.zeros(64), batch_size=8, epochs=5, verbose=0, callbacks=[Stall()])

t0 = time.time()
try:
    distnet.ray.run(train, num_workers=3)
except distnet.ray.WorkerFailure as e:
    print("FAILED", e.stalled, "|", round(time.time() - t0, 1))
"""


@pytest.mark.timeout(200)
def test_watchdog_set_inside_a_ray_worker_names_the_stalled_rank(tmp_path):
    res = run_py(WATCHDOG, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("FAILED")), None)
    assert line is not None, res.stdout[-2000:] + res.stderr[-2000:]
    stalled, seconds = line[len("FAILED "):].split(" | ")
    assert stalled == "[1]" and float(seconds) < 60, line
