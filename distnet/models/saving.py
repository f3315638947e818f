"""Saving and loading models: distnet's own pickle-free `.npz` files (see distnet.checkpoint).

A model file holds the architecture (config JSON), every weight, the compile settings and the optimizer state;
a weights file holds the weights and the architecture they belong to.
"""
import contextlib
import json

from .. import checkpoint
from ..checkpoint import CheckpointError

MODEL_FORMAT, WEIGHTS_FORMAT = "distnet.model", "distnet.weights"


def jsonable(obj):
    """obj with NumPy scalars turned into Python numbers (and anything else into its str), ready for JSON."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _weight_arrays(model):
    return {f"weights/{i:04d}": v for i, v in enumerate(model.get_weights())}


def save_model(model, filepath):
    arrays = _weight_arrays(model)
    meta = {"format": MODEL_FORMAT, "class_name": type(model).__name__, "config": model.get_config(),
            "compile": model.compile_config()}
    if model.compiled:
        meta["optimizer_iterations"] = model.optimizer.iterations
        arrays.update({f"optimizer/{k}": v for k, v in model.optimizer.slots.items()})
    return checkpoint.save_arrays(filepath, arrays, jsonable(meta))


def save_weights(model, filepath):
    return checkpoint.save_arrays(filepath, _weight_arrays(model),
                                  {"format": WEIGHTS_FORMAT, "architecture": jsonable(model.architecture())})


def load_weights(model, filepath):
    arrays, meta = checkpoint.load_arrays(filepath)
    if meta.get("format") not in (WEIGHTS_FORMAT, MODEL_FORMAT):
        raise CheckpointError(f"{filepath!r} is not a distnet weights file (format {meta.get('format')!r})")
    weights = [arrays[k] for k in sorted(k for k in arrays if k.startswith("weights/"))]
    if len(weights) != len(model.weights):
        raise CheckpointError(f"{filepath!r} holds {len(weights)} weight arrays, but model '{model.name}' has "
                              f"{len(model.weights)}; was it saved from a different architecture?")
    for w, v in zip(model.weights, weights):
        if v.shape != w.value.shape:
            raise CheckpointError(f"{filepath!r}: weight '{w.name}' has shape {w.value.shape} in model "
                                  f"'{model.name}', but the file holds shape {v.shape}")
    model.set_weights(weights)


def _required(meta, key, filepath):
    if key not in meta:
        raise CheckpointError(f"{filepath!r} is not a complete distnet model file: it has no {key!r} entry "
                              f"(found {sorted(meta)})")
    return meta[key]


def load_model(filepath, compile=True):
    """Rebuild a model saved with `model.save`: architecture, weights, and (if compiled) optimizer state.
    Anything wrong with the file (see distnet.checkpoint) or inside it is a CheckpointError."""
    from .. import models
    arrays, meta = checkpoint.load_arrays(filepath)
    if meta.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{filepath!r} is not a distnet model file (format {meta.get('format')!r})")
    config = _required(meta, "config", filepath)
    class_name = meta.get("class_name", "Sequential")
    cls = getattr(models, class_name, None) if isinstance(class_name, str) else None
    if cls is None or not hasattr(cls, "from_config"):
        raise CheckpointError(f"{filepath!r} holds a model of class {class_name!r}, which distnet cannot build")
    with _malformed(filepath, "model config"):
        model = cls.from_config(config)
    load_weights(model, filepath)
    comp = meta.get("compile")
    if compile and comp:
        with _malformed(filepath, "compile settings or optimizer state"):
            model.compile_from_config(comp)
            model.optimizer.set_state({"iterations": meta.get("optimizer_iterations", 0),
                                       "slots": {k.split("/", 1)[1]: v for k, v in arrays.items()
                                                 if k.startswith("optimizer/")}})
    return model


@contextlib.contextmanager
def _malformed(filepath, what):
    """Errors from rebuilding what a file describes mean the description is malformed: a CheckpointError."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{filepath!r} has malformed {what}: {type(e).__name__}: {e}") from e
