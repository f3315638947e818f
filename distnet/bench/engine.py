"""Engine step time: forward + backward + optimizer of the two example models, via `fit`, medians per step.

    python -m distnet.bench engine [--threads 1] [--batch 32,128] [--compare torch]
"""
import time

import numpy as np

from .. import callbacks, layers, utils
from ..models import Sequential
from .stats import summarize


def build(model_name, input_shape=(32, 32, 3)):
    """The two example architectures: 'mlp' (8-10-10-1, Adam, BCE) and 'cnn' (the Keras snippet, Adam, CCE)."""
    if model_name == "mlp":
        model = Sequential([layers.Dense(10, input_dim=8, activation="relu"), layers.Dense(10, activation="relu"),
                            layers.Dense(1, activation="sigmoid")])
        model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
        return model
    if model_name == "cnn":
        model = Sequential([
            layers.Conv2D(32, (3, 3), activation="relu", input_shape=input_shape), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Conv2D(128, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
            layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
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
