"""Scaling efficiency: throughput of the example models on 1..N MPI workers, weak or strong scaling.

    distnet-bench scaling -n 1,2,4 --model cnn --mode weak [--batch 32] [--threads 1]

weak: each worker keeps `batch` samples per step (global batch = batch * n); strong: the global batch stays
`batch`. Efficiency = throughput_n / (n * throughput_1), Horovod's definition. Each record also carries the
median per-step breakdown (data, forward, backward, wait for other workers, allreduce, optimizer).
"""
import json
import os
import subprocess
import sys
import tempfile

from .. import callbacks
from .allreduce import mpirun


class LinkBytes(callbacks.Callback):
    """Bytes this machine (node) sends on network interface `iface` from batch `start` to the end of fit."""

    def __init__(self, iface, start):
        super().__init__()
        self.iface, self.start, self.first, self.last = iface, start, None, None

    def read(self):
        with open(f"/sys/class/net/{self.iface}/statistics/tx_bytes") as f:
            return int(f.read())

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.start:
            self.first = self.read()

    def on_train_end(self, logs=None):
        self.last = self.read()


def measure(model_name, global_batch, steps, warmup, compile_kw=None, link=None):
    """Inside a worker (MPI rank or Ray actor): fit one epoch on synthetic data, return rank 0's record.
    link: a network interface whose sent bytes per update (during the timed steps) the record reports."""
    from .. import distributed
    from ..timeline import Timeline
    from . import engine
    comm = distributed.init()
    compile_kw = dict(compile_kw or {})
    model = engine.build(model_name, **compile_kw)
    k = compile_kw.get("steps_per_sync", 1)
    x, y = engine.synthetic_data(model_name, global_batch * (steps + warmup) * k, seed=1)
    model.timeline = Timeline(measure_wait=True)
    timer = engine.StepTimer()
    counter = LinkBytes(link, warmup * k) if link else None
    model.fit(x, y, batch_size=global_batch, epochs=1, verbose=0, shuffle=True,
              callbacks=[timer] + ([counter] if counter else []))
    from .stats import summarize
    # with steps_per_sync=K an update is K micro-steps: time per update = sum of K consecutive micro-steps
    d = timer.durations[warmup * k:]
    d = [sum(d[i:i + k]) for i in range(0, len(d) - k + 1, k)]
    s = summarize(d)
    record = {"kind": "scaling", "backend": comm.backend if comm.size > 1 else "mpi", "model": model_name,
              "n": comm.size, "global_batch": global_batch, "batch_per_worker": global_batch / comm.size,
              "step_s": s["median_s"], "p10_s": s["p10_s"], "p90_s": s["p90_s"],
              "samples_per_s": global_batch * k / s["median_s"], "levers": compile_kw,
              "wire_bytes_per_update": model.distribute_strategy.wire_bytes // max(model.optimizer.iterations, 1),
              "breakdown_s": model.timeline.step_breakdown(skip=warmup // k),
              "gradient_bytes": int(model.flat_state.buffer.nbytes)}
    if counter is not None:
        record["link_bytes_per_update"] = (counter.last - counter.first) / steps
    return record if comm.rank == 0 else None


def worker(model_name, global_batch, steps, warmup, out_path, compile_kw=None, link=None):
    """out_path may hold '{rank}' (the launcher's rank): processes that each train alone (DISTNET_DISABLE=1)
    then write one record each."""
    from ..parallel import protocol
    record = measure(model_name, global_batch, steps, warmup, compile_kw, link)
    if record is not None:
        with open(out_path.format(rank=protocol.rank_from_env()), "w") as f:
            json.dump(record, f)


def _run_ray(n, model_name, global_batch, steps, warmup, threads, compile_kw=None):
    from ..parallel import ray as ray_backend
    ray_backend.init_ray(None, n)
    group = ray_backend.WorkerGroup(n, env={"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)})
    try:
        record = group.run("run_function", measure, (model_name, global_batch, steps, warmup, compile_kw), {})[0]
    finally:
        group.shutdown()
    record["backend"] = "ray"
    return record


def run(ns, model_name="cnn", mode="weak", batch=32, steps=30, warmup=5, threads=1, progress=print, backend="mpi",
        compile_kw=None):
    if mode not in ("weak", "strong"):
        raise ValueError(f"mode must be 'weak' or 'strong', received {mode!r}")
    records = []
    for n in ns:
        global_batch = batch * n if mode == "weak" else batch
        if global_batch < n:
            raise ValueError(f"strong scaling with batch {batch} cannot feed {n} workers")
        progress(f"scaling ({backend}): {model_name} {mode}, {n} worker(s), global batch {global_batch} ...")
        if backend == "ray":
            rec = _run_ray(n, model_name, global_batch, steps, warmup, threads, compile_kw)
            rec.update(mode=mode, threads=threads)
            records.append(rec)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "record.json")
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
                   "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
            cmd = [mpirun(), "-n", str(n), sys.executable, "-m", "distnet.bench.scaling", "--worker", model_name,
                   str(global_batch), str(steps), str(warmup), out, json.dumps(compile_kw or {})]
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
            if res.returncode != 0:
                raise RuntimeError(f"scaling run with {n} workers failed:\n{res.stderr[-3000:]}")
            with open(out) as f:
                rec = json.load(f)
        rec.update(mode=mode, threads=threads)
        records.append(rec)
    if backend == "ray":
        from ..parallel import ray as ray_backend
        ray_backend.shutdown_private()
    for r in records:
        base = next((b for b in records if b["n"] == 1 and b["backend"] == r["backend"]), None)
        if base:
            r["speedup"] = r["samples_per_s"] / base["samples_per_s"]
            r["efficiency"] = r["speedup"] / r["n"]
    return records


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], json.loads(sys.argv[7]),
           sys.argv[8] if len(sys.argv) > 8 else None)
