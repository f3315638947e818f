"""Memory of a training run: peak RSS, RSS growth in steady state, and bytes allocated per step.

    distnet-bench memory --model cnn --steps 2000 [--compare torch]

Each framework runs in a fresh process (so peak RSS is its own), on the same synthetic data and batch.
"""
import json
import resource
import subprocess
import sys
import time
import tracemalloc


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run_distnet(model_name, batch, steps):
    import numpy as np
    from threadpoolctl import threadpool_limits

    from . import engine
    threadpool_limits(1)
    model = engine.build(model_name)
    x, y = engine.synthetic_data(model_name, batch * 4, seed=0)
    rss = []

    class Probe(engine.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            rss.append(_rss_bytes())

    epochs = -(-steps // 4)
    model.fit(x, y, batch_size=batch, epochs=epochs, verbose=0, callbacks=[Probe()], shuffle=True)
    # bytes allocated by one steady-state step (NumPy reports its buffers to tracemalloc)
    from ..timeline import NULL
    idx = np.arange(batch)
    data = model.arrays(x, y, "fit")
    xb, yb, _ = data.batch(idx, "fit")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    model.step.train(xb, yb, None, NULL)
    per_step = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    return rss, per_step


def run_torch(model_name, batch, steps):
    import torch

    from . import engine
    torch.set_num_threads(1)
    net, loss_fn, opt = engine.torch_model(model_name)
    batches = engine.torch_batches(model_name, batch, 4)
    rss = []
    for s in range(steps):
        xb, yb = batches[s % 4]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()
        rss.append(_rss_bytes())
    return rss, None


def child(impl, model_name, batch, steps):
    t0 = time.perf_counter()
    rss, per_step = (run_distnet if impl == "distnet" else run_torch)(model_name, batch, steps)
    warm = min(100, len(rss) - 1)
    print(json.dumps({"kind": "memory", "impl": impl, "model": model_name, "batch": batch, "steps": len(rss),
                      "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_after_warmup_MB": rss[warm] / 2**20, "rss_final_MB": rss[-1] / 2**20,
                      "rss_growth_MB": (rss[-1] - rss[warm]) / 2**20,
                      "alloc_per_step_bytes": per_step, "seconds": time.perf_counter() - t0}))


def run(model_name, batch, steps, impls=("distnet",)):
    records = []
    for impl in impls:
        res = subprocess.run([sys.executable, "-m", "distnet.bench.memory", impl, model_name, str(batch),
                              str(steps)], capture_output=True, text=True, timeout=3600,
                             env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
        if res.returncode != 0:
            raise RuntimeError(f"memory benchmark of {impl} failed:\n{res.stderr[-3000:]}")
        records.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return records


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
