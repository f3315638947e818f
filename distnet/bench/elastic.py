"""Cost of losing a worker: the time from its death to the next completed step, elastic (the survivors go on)
vs restart (the group is recreated and resumes from its last BackupAndRestore backup), on the same job.

    distnet-bench elastic [--repeat 5] [--workers 3]
"""
import os
import signal
import statistics
import tempfile
import time

import numpy as np


def train(out_dir, kill_at, backup=None, steps_after=20):
    """The job: an MLP on synthetic data; rank 2 writes the time and dies after step `kill_at` (first attempt);
    every rank records when each later step ends."""
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    distnet.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    m = Sequential([layers.Input((32,)), layers.Dense(256, activation="relu"), layers.Dense(256, activation="relu"),
                    layers.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    first_attempt = os.environ.get("DISTNET_RESTART_COUNT", "0") == "0"

    class Probe(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if comm.rank == 2 and batch == kill_at and first_attempt and getattr(comm, "generation", 0) == 0:
                with open(f"{out_dir}/died", "w") as f:
                    f.write(repr(time.time()))
                os.kill(os.getpid(), signal.SIGKILL)
            if comm.rank == 0 and batch > kill_at and not os.path.exists(f"{out_dir}/next"):
                with open(f"{out_dir}/next", "w") as f:
                    f.write(repr(time.time()))
    cbs = [Probe()] + ([callbacks.BackupAndRestore(backup, save_freq=1)] if backup else [])
    m.fit(x, y, batch_size=60, epochs=1, verbose=0, callbacks=cbs, steps_per_epoch=kill_at + steps_after)
    return comm.size


def once(mode, workers, kill_at=10):
    import distnet.ray
    with tempfile.TemporaryDirectory() as d:
        if mode == "elastic":
            distnet.ray.run(train, num_workers=workers, min_workers=2, args=(d, kill_at))
        else:
            distnet.ray.run(train, num_workers=workers, max_failures=1, args=(d, kill_at, d + "/backup"))
        died = float(open(f"{d}/died").read())
        return float(open(f"{d}/next").read()) - died


def main(repeat=5, workers=3):
    times = {"elastic": [], "restart": []}
    for _ in range(repeat):
        for mode in times:                  # alternate the two, side by side
            times[mode].append(once(mode, workers))
    rows = []
    for mode, t in times.items():
        rows.append({"kind": "elastic", "mode": mode, "workers": workers, "median_s": statistics.median(t),
                     "min_s": min(t), "max_s": max(t), "runs": len(t)})
        print(f"{mode:8s} death -> next completed step: median {statistics.median(t):.2f} s "
              f"[{min(t):.2f}-{max(t):.2f}] over {len(t)} runs ({workers} workers)")
    return rows
