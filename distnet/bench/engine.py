"""Engine step time: forward + backward + optimizer of the two example models, via `fit`, medians per step.

    python -m distnet.bench engine [--threads 1] [--batch 32,128] [--compare torch]
"""
import time

import numpy as np

from .. import callbacks, layers, utils
from ..models import Sequential
from .stats import summarize


def build(model_name, input_shape=(32, 32, 3), **compile_kw):
    """The two example architectures: 'mlp' (8-10-10-1, Adam, BCE) and 'cnn' (the Keras snippet, Adam, CCE)."""
    if model_name == "mlp":
        model = Sequential([layers.Dense(10, input_dim=8, activation="relu"), layers.Dense(10, activation="relu"),
                            layers.Dense(1, activation="sigmoid")])
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"], **compile_kw)
        return model
    if model_name == "cnn":
        model = Sequential([
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=input_shape), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"], **compile_kw)
        return model
    raise ValueError(f"model must be 'mlp' or 'cnn', received {model_name!r}")


def synthetic_data(model_name, n, input_shape=(32, 32, 3), seed=0):
    rng = np.random.default_rng(seed)
    if model_name == "mlp":
        return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 2, n).astype(np.float32)
    x = rng.random((n,) + tuple(input_shape), dtype=np.float32)
    return x, np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]


class StepTimer(callbacks.Callback):
    """Records the wall time of every training step (batch begin to batch end)."""

    def __init__(self):
        super().__init__()
        self.durations = []

    def on_train_batch_begin(self, batch, logs=None):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.durations.append(time.perf_counter() - self._t0)


def time_distnet(model_name, batch, steps=50, warmup=5, seed=0):
    """Per-step times of `fit` on synthetic data (one epoch of warmup+steps steps)."""
    utils.set_random_seed(seed)
    model = build(model_name)
    x, y = synthetic_data(model_name, batch * (steps + warmup), seed=seed)
    timer = StepTimer()
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer], shuffle=True)
    return summarize(timer.durations[warmup:])


# -- PyTorch, the reference (optional: pip install torch) ----------------------------------------------------
def torch_model(model_name, input_shape=(32, 32, 3)):
    """The same architecture, initialisation scheme and optimizer (Adam, Keras's epsilon) in PyTorch."""
    import torch
    from torch import nn
    if model_name == "mlp":
        net = nn.Sequential(nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1))
        loss = nn.BCEWithLogitsLoss()
    else:
        h, w, c = input_shape
        net = nn.Sequential(nn.Conv2d(c, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Conv2d(64, 128, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                            nn.LazyLinear(128), nn.ReLU(), nn.Linear(128, 10))
        net(torch.zeros(1, c, h, w))
        loss = nn.CrossEntropyLoss()
    return net, loss, torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)


def torch_batches(model_name, batch, count, seed=0):
    import torch
    x, y = synthetic_data(model_name, batch * count, seed=seed)
    if model_name == "mlp":
        xs, ys = torch.from_numpy(x), torch.from_numpy(y).reshape(-1, 1)
    else:
        xs, ys = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y.argmax(1))
    return [(xs[i * batch:(i + 1) * batch], ys[i * batch:(i + 1) * batch]) for i in range(count)]


def time_torch_steps(net, loss_fn, opt, batches):
    out = []
    for xb, yb in batches:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xb), yb).backward()
        opt.step()
        out.append(time.perf_counter() - t0)
    return out


# -- Keras 3 (optional: pip install keras; runs on its torch backend) -----------------------------------------
def keras_model(model_name, input_shape=(32, 32, 3)):
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    from keras import layers as kl
    if model_name == "mlp":
        model = keras.Sequential([keras.Input((8,)), kl.Dense(10, activation="relu"), kl.Dense(10, activation="relu"),
                                  kl.Dense(1, activation="sigmoid")])
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    else:
        model = keras.Sequential([
            keras.Input(input_shape), kl.Conv2D(32, (3, 3), activation="relu"), kl.MaxPooling2D((2, 2)),
            kl.Conv2D(64, (3, 3), activation="relu"), kl.MaxPooling2D((2, 2)),
            kl.Conv2D(128, (3, 3), activation="relu"), kl.MaxPooling2D((2, 2)),
            kl.Flatten(), kl.Dense(128, activation="relu"), kl.Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return model


def keras_step_times(model, x, y, batch):
    import keras
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            times.append(time.perf_counter() - self.t0)
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[Timer()], shuffle=True)
    return times


def compare_three(model_name, batch, rounds=5, steps=20, warmup=5, seed=0, with_keras=True):
    """distnet, PyTorch and (optionally) Keras 3 on torch, timed alternately round by round in one process."""
    import torch
    utils.set_random_seed(seed)
    torch.manual_seed(seed)
    model = build(model_name)
    x, y = synthetic_data(model_name, batch * (steps + warmup), seed=seed)
    net, loss_fn, opt = torch_model(model_name)
    batches = torch_batches(model_name, batch, steps + warmup, seed)
    km = keras_model(model_name) if with_keras else None
    ours, theirs, keras_times = [], [], []
    for _ in range(rounds):
        timer = StepTimer()
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, callbacks=[timer], shuffle=True)
        ours += timer.durations[warmup:]
        theirs += time_torch_steps(net, loss_fn, opt, batches)[warmup:]
        if km is not None:
            keras_times += keras_step_times(km, x, y, batch)[warmup:]
    return {"distnet": summarize(ours), "torch": summarize(theirs),
            **({"keras": summarize(keras_times)} if km is not None else {})}
