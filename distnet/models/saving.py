"""Saving and loading models: distnet's own pickle-free `.npz` files (see distnet.checkpoint), and Keras 3's
`.keras` / `.weights.h5` files (keras_format.py), chosen by the file name's extension.

A model file holds the architecture (config JSON), every weight, the compile settings and the optimizer state;
a weights file holds the weights and the architecture they belong to.
"""
import contextlib
import json
import os

import numpy as np

from .. import checkpoint
from ..checkpoint import CheckpointError
from ..layers.base import segments
from ..utils import register_keras_serializable  # noqa: F401  (keras.saving.register_keras_serializable)

MODEL_FORMAT, WEIGHTS_FORMAT = "distnet.model", "distnet.weights"


def jsonable(obj):
    """obj with NumPy scalars turned into Python numbers (and anything else into its str), ready for JSON."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _weight_arrays(model):
    return {f"weights/{i:04d}": v for i, v in enumerate(model.get_weights())}


# -- dispatch on the extension: Keras 3 files for .keras / .weights.h5, distnet's .npz for anything else --------
def _keras_format(filepath, what):
    name = os.fspath(filepath)
    if name.endswith((".keras", ".weights.h5")):
        from . import keras_format
        return keras_format
    if name.endswith((".h5", ".hdf5")):
        raise ValueError(f"{what}: {name!r} names a legacy Keras 2 HDF5 file, which distnet does not use; save as "
                         "'.keras' or '.weights.h5' (Keras 3), or use any other extension for distnet's .npz format")
    return None


def save_model(model, filepath):
    keras = _keras_format(filepath, "save")
    if keras is not None:
        if not os.fspath(filepath).endswith(".keras"):
            raise ValueError(f"save: {os.fspath(filepath)!r} is a weights file name; use save_weights for it, or "
                             "a .keras name to save the whole model")
        return keras.save_model(model, filepath)
    return save_npz_model(model, filepath)


def save_weights(model, filepath):
    keras = _keras_format(filepath, "save_weights")
    return keras.save_weights(model, filepath) if keras else save_npz_weights(model, filepath)


def load_weights(model, filepath):
    keras = _keras_format(filepath, "load_weights")
    return keras.load_weights(model, filepath) if keras else load_npz_weights(model, filepath)


def load_model(filepath, compile=True, custom_objects=None, safe_mode=True):
    """A model saved with `model.save`: a Keras 3 `.keras` file (written by Keras or by distnet), or distnet's
    `.npz`. custom_objects and safe_mode are accepted for Keras's sake and unused: distnet builds only the layer
    classes it knows and never runs code from a file."""
    keras = _keras_format(filepath, "load_model")
    if keras is not None:
        return keras.load_model(filepath, compile=compile)
    return load_npz_model(filepath, compile=compile)


def check_overwrite(filepath, overwrite):
    if not overwrite and os.path.exists(os.fspath(filepath)):
        raise FileExistsError(f"{os.fspath(filepath)!r} exists and overwrite=False")


def to_json(model, **kwargs):
    from .keras_config import model_to_keras
    return json.dumps(model_to_keras(model), **kwargs)


def model_from_json(json_string, custom_objects=None):
    """A model (new weights) from the Keras 3 JSON of `model.to_json()`, distnet's or Keras's."""
    from .keras_config import model_from_keras
    return model_from_keras(json.loads(json_string))


# -- distnet's .npz files -------------------------------------------------------------------------------------
def save_npz_model(model, filepath):
    arrays = _weight_arrays(model)
    meta = {"format": MODEL_FORMAT, "class_name": type(model).__name__, "config": model.get_config(),
            "compile": model.compile_config()}
    if model.compiled:
        meta["optimizer_iterations"] = model.optimizer.iterations
        arrays.update({f"optimizer/{k}": v for k, v in optimizer_state_as_configured(model)[0].items()})
    return checkpoint.save_arrays(filepath, arrays, jsonable(meta))


def optimizer_state_as_configured(model):
    """(slots, weights they cover in order): the optimizer's slots laid out for the weights the saved config
    trains. A trainable flag changed since compile() is in the config (it takes effect at the next compile),
    while the slots still cover the weights compiled: the model load_model rebuilds would not fit them. Each
    weight that still trains keeps its slots; one that trains only from now on gets what a freshly built
    optimizer gives it (Adagrad's initial value)."""
    from .. import optimizers
    opt, flat = model.optimizer, model.flat_state
    if not model.built or not model.trainable_pending():
        return opt.slots, flat.trainable
    where = {id(w): offset for (offset, _), w in zip(flat.segments, flat.trainable)}
    wanted = {id(w) for w, want in model.wanted_trainable() if want}
    kept = [w for w in model.weights if id(w) in wanted]       # the order FlatState gives the loaded model
    fresh = optimizers.get(optimizers.serialize(opt))
    fresh.build(np.zeros(sum(w.value.size for w in kept), flat.params.dtype))
    for (offset, size), w in zip(segments(kept), kept):
        if id(w) in where:
            for name, slot in fresh.slots.items():
                slot[offset:offset + size] = opt.slots[name][where[id(w)]:where[id(w)] + size]
    return fresh.slots, kept


def save_npz_weights(model, filepath):
    return checkpoint.save_arrays(filepath, _weight_arrays(model),
                                  {"format": WEIGHTS_FORMAT, "architecture": jsonable(model.architecture())})


def load_npz_weights(model, filepath):
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


def load_npz_model(filepath, compile=True):
    """Rebuild a model saved with `model.save` as .npz: architecture, weights, and (if compiled) optimizer state.
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
    load_npz_weights(model, filepath)
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
