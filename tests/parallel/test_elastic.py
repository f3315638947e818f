"""Elastic training on Ray: workers leave and join while train_fn keeps running, and the result is the same."""
import json

import pytest

pytest.importorskip("ray")
from tests.parallel.test_ray import run_py  # noqa: E402

ELASTIC = """
import json, os, signal, sys, time
import numpy as np
import distnet.ray

def train(out_dir, kill_rank=None, kill_at=None, pause=0.0):
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    with open(f"{out_dir}/started-{os.getpid()}", "a") as f:       # how often train_fn starts in this process
        f.write("x")
    distnet.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    m = Sequential([layers.Input((5,)), layers.Dense(8, activation="relu"), layers.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    class Kill(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if kill_rank is not None and comm.rank == kill_rank and comm.generation == 0 and batch == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)                 # mid-epoch, without warning
            time.sleep(pause)
    h = m.fit(x, y, batch_size=12, epochs=6, verbose=0, callbacks=[Kill()])
    return {"params": m.flat_state.params.tolist(), "size": comm.size, "pid": os.getpid(),
            "membership": h.membership, "loss": h.history["loss"]}

out_dir = sys.argv[1]
ref = distnet.ray.run(train, num_workers=3, args=(out_dir + "/ref",))
elastic = distnet.ray.run(train, num_workers=3, min_workers=2, args=(out_dir + "/el", 2, 4, 0.1))
json.dump({"ref": ref, "elastic": elastic}, open(out_dir + "/out.json", "w"))
"""


@pytest.mark.timeout(240)
def test_a_killed_worker_leaves_a_new_one_joins_and_the_result_is_unchanged(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "el").mkdir()
    res = run_py(ELASTIC, tmp_path, args=(str(tmp_path),), timeout=200)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    import numpy as np
    ref = np.array(out["ref"][0]["params"])
    for r in out["elastic"]:
        np.testing.assert_allclose(np.array(r["params"]), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r["loss"], out["ref"][0]["loss"], rtol=1e-5)
    events = out["elastic"][0]["membership"]
    assert events[0]["event"] == "rank 2 left" and events[0]["workers"] == 2 and events[0]["step"] == 5
    assert any(e["event"] == "1 worker joined" and e["workers"] == 3 for e in events), events
    assert [r["size"] for r in out["elastic"]] == [3, 3, 3]
    starts = {p.name: p.read_text() for p in (tmp_path / "el").iterdir()}
    assert len(starts) == 4 and all(v == "x" for v in starts.values())     # 3 first + 1 joiner; none restarted
    survivors = {r["pid"] for r in out["elastic"]}
    assert len(survivors & {int(n.split("-")[1]) for n in starts}) == 3
    assert "rank 2 left at step 5 of epoch 1; continuing on 2 workers" in res.stdout + res.stderr
    assert "1 worker joined at step" in res.stdout + res.stderr


BELOW_MIN = """
import os, sys, time
import numpy as np
import ray
from ray.cluster_utils import Cluster
import distnet.ray
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
lost = cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)

def train(marker):
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    m = Sequential([layers.Input((3,)), layers.Dense(1)])
    m.compile(loss="mse", optimizer="sgd")
    class Slow(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                open(marker, "a").close()
            time.sleep(0.05)
    m.fit(np.zeros((64, 3)), np.zeros(64), batch_size=4, epochs=50, verbose=0, callbacks=[Slow()])

import threading
marker = sys.argv[1] + "/started"
def remove_node():
    while not os.path.exists(marker):
        time.sleep(0.1)
    cluster.remove_node(lost)              # the node under one worker goes away, and its CPU with it
threading.Thread(target=remove_node, daemon=True).start()
t0 = time.time()
try:
    distnet.ray.run(train, num_workers=2, min_workers=2, args=(marker,), wait_for_workers=3)
    print("NO FAILURE")
except distnet.ray.WorkerFailure as e:
    print("FAILED", round(time.time() - t0, 1), "|", e)
ray.shutdown()
cluster.shutdown()
"""


@pytest.mark.timeout(240)
def test_below_min_workers_the_job_waits_then_fails_with_a_message(tmp_path, ray_tmpdir):
    res = run_py(BELOW_MIN, tmp_path, args=(str(tmp_path),), timeout=200, env={"RAY_TMPDIR": ray_tmpdir})
    assert res.returncode == 0, res.stderr[-3000:]
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith(("FAILED", "NO FAILURE"))), "")
    assert line.startswith("FAILED"), res.stdout[-2000:] + res.stderr[-2000:]
    assert "only 1 worker(s) left, fewer than min_workers=2; waited 3 s for capacity" in line, line


SCRIPT = """
import os, signal, sys
import numpy as np
import distnet
from distnet import callbacks, layers
from distnet.models import Sequential
comm = distnet.distributed.init()
out, kill = sys.argv[1], sys.argv[2] == "kill"
distnet.utils.set_random_seed(7)
rng = np.random.default_rng(0)
x = rng.normal(size=(120, 5)).astype(np.float32)
y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
m = Sequential([layers.Input((5,)), layers.Dense(8, activation="relu"), layers.Dense(2, activation="softmax")])
m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
class Kill(callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kill and comm.rank == 2 and comm.generation == 0 and batch == 4:
            os.kill(os.getpid(), signal.SIGKILL)
h = m.fit(x, y, batch_size=12, epochs=4, verbose=0, callbacks=[Kill()])
if comm.rank == 0:
    np.save(f"{out}/{sys.argv[2]}.npy", m.flat_state.params)
    print("workers at the end:", comm.size, flush=True)
"""


@pytest.mark.timeout(300)
def test_distnet_launch_ray_min_workers_runs_a_script_elastically(tmp_path, ray_tmpdir):
    """distnet-launch --backend ray --min-workers: a script's fit goes on without rank 2 (not restarted), with
    the weights of an uninterrupted 3-worker run."""
    import numpy as np
    from tests.launch.test_launcher import launch
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {"RAY_TMPDIR": ray_tmpdir}
    clean = launch("--backend", "ray", "-n", "3", str(script), str(tmp_path), "clean", timeout=240, env=env)
    assert clean.returncode == 0, clean.stderr[-3000:]
    res = launch("--backend", "ray", "-n", "3", "--min-workers", "2", str(script), str(tmp_path), "kill",
                 timeout=240, env=env)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "rank 2 left at step 5 of epoch 1; continuing on 2 workers" in out, out[-3000:]
    assert "restarting" not in out
    np.testing.assert_allclose(np.load(tmp_path / "kill.npy"), np.load(tmp_path / "clean.npy"), rtol=0, atol=1e-5)
