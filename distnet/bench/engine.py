"""The example models for engine benchmarks (distnet and the same networks in PyTorch), synthetic data, and a
per-step timer. The protocol that times them is bench/fresh.py (`distnet-bench engine`)."""
import time

import numpy as np

from .. import callbacks, layers
from ..models import Sequential


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
