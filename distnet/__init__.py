"""distnet: Keras-style NumPy models trained data-parallel over MPI or Ray with a ring-allreduce.

    import distnet as keras                      # Keras 3 spelling works for the layers distnet has
    from distnet import layers
    model = keras.Sequential([layers.Input((8,)), layers.Dense(10, activation="relu"),
                              layers.Dense(1, activation="sigmoid")])
    model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
    model.fit(x, y, epochs=150, batch_size=10)     # run under `mpirun -n 4` and it trains on 4 workers

`import distnet as keras` gives Keras 3's names for what distnet has: keras.Input, keras.Sequential, keras.Model,
keras.layers, .optimizers, .losses, .metrics, .callbacks, .datasets, .utils, .initializers, .regularizers,
.models (load_model reads and writes Keras 3 .keras files too), .config, .saving.

Submodules load on first use (importing distnet is cheap and has no side effect; `launch/` imports
distnet.parallel.protocol without loading NumPy).
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = ("activations", "backend", "callbacks", "checkpoint", "data", "datasets", "distributed",
               "initializers", "layers", "losses", "metrics", "models", "optimizers", "parallel", "regularizers",
               "training", "utils")
_NAMES = {"Sequential": "models", "Model": "models", "load_model": "models", "Input": "layers"}
_ALIASES = {"config": "backend", "saving": "models.saving"}     # Keras 3's spellings of distnet modules


def __getattr__(name):
    if name in _SUBMODULES or name in _ALIASES:
        return importlib.import_module(f"{__name__}.{_ALIASES.get(name, name)}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module 'distnet' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES) | set(_NAMES) | set(_ALIASES))


__all__ = list(_SUBMODULES) + list(_NAMES) + list(_ALIASES)
