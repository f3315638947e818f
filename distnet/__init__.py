"""distnet: Keras-style NumPy models trained data-parallel over MPI or Ray with a ring-allreduce.

    from distnet.models import Sequential
    from distnet.layers import Dense
    model = Sequential([Dense(10, input_dim=8, activation="relu"), Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, epochs=150, batch_size=10)     # run under `mpirun -n 4` and it trains on 4 workers
"""
from . import (activations, backend, callbacks, datasets, distributed, initializers, layers, losses, metrics, models,
               optimizers, regularizers, utils)
from .models import Sequential, load_model

__version__ = "0.1.0"

__all__ = ["activations", "backend", "callbacks", "datasets", "distributed", "initializers", "layers", "losses",
           "metrics",
           "models", "optimizers", "regularizers", "utils", "Sequential", "load_model"]
