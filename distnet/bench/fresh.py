"""A benchmark protocol that reproduces: every implementation is timed in its own fresh process, the
implementations alternate, the whole is repeated (>= 5 times), and each is reported as the median of the
per-run medians with the range; ratios are ratios of medians.

    distnet-bench engine --model cnn,lstm,resnet --batch 32,128 --threads 1,2 --compare torch --repeat 5

One process runs one (implementation, model, batch, threads) measurement: `python -m distnet.bench.fresh
IMPL MODEL BATCH THREADS STEPS WARMUP` prints the per-step times as JSON. Thread counts are fixed through the
environment before NumPy or torch load (OMP/OPENBLAS/MKL_NUM_THREADS, torch.set_num_threads); OpenBLAS's
core-type overrides are removed, as they slow NumPy.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

MODELS = ("mlp", "cnn", "lstm", "resnet")


# -- the models (distnet, and the same networks in PyTorch) ---------------------------------------------------
def distnet_model(name):
    from . import engine
    if name in ("mlp", "cnn"):
        return engine.build(name)
    import distnet
    from distnet import layers
    if name == "lstm":                  # MNIST rows as sequences: examples/train_lstm.py's network
        m = distnet.Sequential([layers.Input((28, 28)), layers.LSTM(128), layers.Dense(10, activation="softmax")])
    elif name == "resnet":              # examples/train_resnet.py's ResNet-20 on CIFAR-shaped data
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
        from train_resnet import resnet
        m = resnet((32, 32, 3), 10, 3)
    else:
        raise ValueError(f"model must be one of {MODELS}, received {name!r}")
    m.compile(loss="categorical_crossentropy", optimizer="adam")
    return m


def data(name, n, seed=0):
    from . import engine
    if name in ("mlp", "cnn"):
        return engine.synthetic_data(name, n, seed=seed)
    rng = np.random.default_rng(seed)
    shape = (28, 28) if name == "lstm" else (32, 32, 3)
    return rng.random((n,) + shape, dtype=np.float32), np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]


def torch_model(name):
    import torch
    from torch import nn
    from . import engine
    if name in ("mlp", "cnn"):
        return engine.torch_model(name)
    if name == "lstm":
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm, self.out = nn.LSTM(28, 128, batch_first=True), nn.Linear(128, 10)

            def forward(self, x):
                return self.out(self.lstm(x)[0][:, -1])
        net = Net()
    else:
        def block(cin, cout, stride):
            class Block(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
                    self.b1 = nn.BatchNorm2d(cout)
                    self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
                    self.b2 = nn.BatchNorm2d(cout)
                    self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                                  if stride != 1 or cin != cout else nn.Identity())

                def forward(self, x):
                    h = torch.relu(self.b1(self.c1(x)))
                    return torch.relu(self.b2(self.c2(h)) + self.short(x))
            return Block()
        stages, cin = [], 16
        for s, cout in enumerate((16, 32, 64)):
            for b in range(3):
                stages.append(block(cin, cout, 2 if s > 0 and b == 0 else 1))
                cin = cout
        net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), *stages,
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    return net, nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)


# -- one measurement, in this (fresh) process -----------------------------------------------------------------
def measure(impl, name, batch, threads, steps, warmup):
    """Per-step seconds of `steps` training steps after `warmup` ones."""
    if impl == "distnet":
        from .. import backend, utils
        from . import engine
        backend.set_num_threads(threads)
        utils.set_random_seed(0)
        model = distnet_model(name)
        x, y = data(name, batch * (steps + warmup))
        timer = engine.StepTimer()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer], shuffle=True)
        return timer.durations[warmup:]
    import torch
    from . import engine
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, loss_fn, opt = torch_model(name)
    x, y = data(name, batch * (steps + warmup))
    xs = torch.from_numpy(x) if x.ndim != 4 else torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(y.argmax(1)) if name != "mlp" else torch.from_numpy(y).reshape(-1, 1)
    batches = [(xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]) for i in range(steps + warmup)]
    return engine.time_torch_steps(net, loss_fn, opt, batches)[warmup:]


def profile_run(name, batch, threads, steps, warmup):
    """bench/profile.py's (rows, summary) of one model in this process, one BLAS thread per intra-op thread (the
    ceiling: one core's GEMM)."""
    from threadpoolctl import threadpool_limits

    from .. import backend
    from . import profile
    with threadpool_limits(limits=1, user_api="blas"):
        backend.set_num_threads(threads)
        try:
            return profile.profile(distnet_model(name), *data(name, batch * (steps + warmup)), batch, steps, warmup)
        finally:
            backend.set_num_threads(1)


def child_env(threads):
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env.update({"OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS":
                str(threads), "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(os.path.dirname(
                    os.path.abspath(__file__)))), env.get("PYTHONPATH", "")])})
    return env


def run_fresh(impl, name, batch, threads, steps, warmup, timeout=900):
    cmd = [sys.executable, "-m", "distnet.bench.fresh", impl, name, str(batch), str(threads), str(steps),
           str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=child_env(threads), timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def protocol(models, batches, threads_list, impls, repeat=5, steps=30, warmup=5, say=print):
    """Rows: one per (model, batch, threads, impl) with median and range of the per-run median step times."""
    rows = []
    for name in models:
        for batch in batches:
            for threads in threads_list:
                runs = {impl: [] for impl in impls}
                for rep in range(repeat):
                    for impl in (impls if rep % 2 == 0 else impls[::-1]):     # alternate, and swap who goes first
                        t = run_fresh(impl, name, batch, threads, steps, warmup)
                        runs[impl].append(statistics.median(t))
                    say(f"  {name} b{batch} t{threads} rep {rep + 1}/{repeat}: " +
                        ", ".join(f"{i} {runs[i][-1] * 1e3:.2f} ms" for i in impls))
                ref = statistics.median(runs[impls[-1]]) if len(impls) > 1 else None
                for impl in impls:
                    med = statistics.median(runs[impl])
                    rows.append({"kind": "engine", "impl": impl, "model": name, "batch": batch, "threads": threads,
                                 "step_ms": med * 1e3, "min_ms": min(runs[impl]) * 1e3,
                                 "max_ms": max(runs[impl]) * 1e3, "runs": len(runs[impl]),
                                 "samples_per_s": batch / med, "ratio": med / ref if ref else None})
    return rows


if __name__ == "__main__":
    impl, name, batch, threads, steps, warmup = sys.argv[1:7]
    t0 = time.perf_counter()
    run = profile_run if impl == "profile" else lambda *a: measure(impl, *a)
    print(json.dumps(run(name, int(batch), int(threads), int(steps), int(warmup))))
