"""Keras 3 model files: `.keras` archives and `.weights.h5` weight files, read and written with h5py.

A `.keras` file is a zip of `metadata.json`, `config.json` (the model's Keras config, see keras_config.py) and
`model.weights.h5`. The weights file has Keras's H5IOStore layout: a group per object, its variables in a
`vars` subgroup as datasets "0", "1", ... in the layer's variable order, the object's name in the `vars` group's
`name` attribute:

    vars                          {name: <model name>}, empty
    layers/dense/vars/0, 1        kernel, bias (groups: snake_case class name, _1, _2 ... per class, in layer order)
    layers/max_pooling2d/vars     a layer without variables: an empty group
    optimizer/vars/0, 1, 2 ...    iterations, learning_rate (absent with a schedule), then the slots per variable

distnet writes the same layout (so Keras 3 loads the file) and reads files Keras wrote. h5py is optional:
`pip install 'distnet[keras-files]'`.
"""
import datetime
import io
import json
import os
import warnings
import zipfile

import numpy as np

from .. import __version__, checkpoint
from ..checkpoint import CheckpointError
from ..layers.base import segments
from . import keras_config, saving

CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
KERAS_FORMAT_VERSION = "3.0.0"      # the oldest Keras that reads what distnet writes

# The optimizer's variables after iterations and learning_rate, as Keras 3 creates them: each tuple is one
# add_optimizer_variables call, which interleaves its names per model variable (Adam: m0 v0 m1 v1 ... then the
# v_hat of every variable). Names are distnet's slot names; slots an optimizer does not have are skipped.
OPTIMIZER_SLOTS = {"SGD": [("momentum",)], "Adam": [("m", "v"), ("v_hat",)], "AdamW": [("m", "v"), ("v_hat",)],
                   "RMSprop": [("velocity",), ("momentum",), ("average_gradient",)],
                   "Adagrad": [("accumulator",)]}


def h5py():
    try:
        import h5py
    except ImportError:
        raise ImportError("Keras model files (.keras, .weights.h5) need h5py, an optional dependency of distnet: "
                          "pip install 'distnet[keras-files]'") from None
    return h5py


# -- writing --------------------------------------------------------------------------------------------------
def _write_weights(model, f, as_configured=False):
    """Fill the open h5py file f with the model's variables (and optimizer state) in Keras's layout.
    as_configured: the optimizer state laid out for the weights the model's config trains (a .keras file, whose
    config holds a trainable flag changed since compile()), else for those compiled."""
    f.create_group("vars").attrs["name"] = model.name
    for path, layer, weights in keras_config.weight_groups(model):
        group = f.create_group(path)
        group.attrs["name"] = layer.name
        for i, w in enumerate(weights):
            group[str(i)] = w.value
    if model.compiled and model.built:
        group = f.create_group("optimizer/vars")
        group.attrs["name"] = model.optimizer.name
        for i, value in enumerate(_optimizer_variables(model, as_configured)):
            group[str(i)] = value


def _weights_bytes(model, as_configured=False):
    buf = io.BytesIO()
    with h5py().File(buf, "w") as f:
        _write_weights(model, f, as_configured)
    return buf.getvalue()


def save_model(model, filepath):
    """Write `model` as a Keras 3 `.keras` archive (atomically); Keras's `keras.models.load_model` reads it."""
    config = json.dumps(keras_config.model_to_keras(model))
    metadata = json.dumps({"keras_version": KERAS_FORMAT_VERSION, "saved_by": f"distnet {__version__}",
                           "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")})
    weights = _weights_bytes(model, as_configured=True)

    def write(f):
        with zipfile.ZipFile(f, "w") as zf:       # stored, not deflated, as Keras writes it
            zf.writestr(METADATA, metadata)
            zf.writestr(CONFIG, config)
            zf.writestr(WEIGHTS, weights)
    return checkpoint.atomic_write(filepath, write, suffix=".keras")


def save_weights(model, filepath):
    """Write the model's weights (and optimizer state) as a Keras 3 `.weights.h5` file (atomically)."""
    if not os.fspath(filepath).endswith(".weights.h5"):
        raise ValueError(f"A Keras weights file name ends in .weights.h5, received {os.fspath(filepath)!r}")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it (or fit it) before saving its weights")
    weights = _weights_bytes(model)
    return checkpoint.atomic_write(filepath, lambda f: f.write(weights), suffix=".h5")


# -- reading --------------------------------------------------------------------------------------------------
def _open_archive(filepath):
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise CheckpointError(f"No such file: {filepath!r}")
    try:
        zf = zipfile.ZipFile(filepath)
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{filepath!r} is not a Keras .keras archive (not a zip file): {e}") from e
    names = set(zf.namelist())
    if CONFIG not in names or WEIGHTS not in names:
        zf.close()
        extra = " (weights stored as model.weights.npz, which distnet does not read)" \
            if "model.weights.npz" in names else ""
        raise CheckpointError(f"{filepath!r} is not a complete Keras .keras archive: it holds {sorted(names)}, "
                              f"expected {CONFIG} and {WEIGHTS}{extra}")
    return zf


def _open_weights(filepath):
    """An open h5py File of a .weights.h5 file or of the weights inside a .keras archive."""
    filepath = os.fspath(filepath)
    if filepath.endswith(".keras"):
        with _open_archive(filepath) as zf:
            return h5py().File(io.BytesIO(zf.read(WEIGHTS)), "r")
    if not os.path.exists(filepath):
        raise CheckpointError(f"No such file: {filepath!r}")
    try:
        return h5py().File(filepath, "r")
    except OSError as e:
        raise CheckpointError(f"{filepath!r} is not a readable HDF5 weights file: {e}") from e


def _read_weights(model, f, filepath):
    """Set the model's weights from the open h5py file f (Keras layout), checking every shape first."""
    values = {}
    legacy = "layers" not in f and "_layer_checkpoint_dependencies" in f     # .keras files of tf.keras 2.13+
    for path, layer, weights in keras_config.weight_groups(model):
        if legacy:
            path = path.replace("layers", "_layer_checkpoint_dependencies", 1)
        group = f.get(path)
        stored = [] if group is None else [group[str(i)] for i in range(len(group))]
        if len(stored) != len(weights):
            raise CheckpointError(f"{filepath!r}: layer '{layer.name}' ({type(layer).__name__}) has "
                                  f"{len(weights)} weights at '{path}', but the file holds {len(stored)}; "
                                  "was it saved from a different architecture?")
        for w, ds in zip(weights, stored):
            if tuple(ds.shape) != w.value.shape:
                raise CheckpointError(f"{filepath!r}: weight '{w.name}' has shape {w.value.shape}, but the file "
                                      f"holds shape {tuple(ds.shape)} at '{path}'")
            values[id(w)] = np.asarray(ds)
    missing = [w.name for w in model.weights if id(w) not in values]
    if missing:
        raise CheckpointError(f"{filepath!r}: no place in Keras's layout for weights {missing}")
    model.set_weights([values[id(w)] for w in model.weights])


def load_weights(model, filepath):
    """Load weights from a Keras `.weights.h5` file or `.keras` archive into a built model (Keras's layout, matched
    by layer order and class as Keras matches it), and the optimizer state when the model is compiled."""
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it before loading weights into it")
    with _open_weights(filepath) as f:
        _read_weights(model, f, os.fspath(filepath))
        if model.compiled and "optimizer/vars" in f:
            _set_optimizer_variables(model, f["optimizer/vars"], filepath)


def load_model(filepath, compile=True):
    """A distnet model from a Keras 3 `.keras` archive: its architecture, weights and (compile=True) its compile
    settings and optimizer state. An unsupported layer is a ValueError naming its class and name."""
    with _open_archive(filepath) as zf:
        try:
            config = json.loads(zf.read(CONFIG))
        except ValueError as e:
            raise CheckpointError(f"{os.fspath(filepath)!r}: {CONFIG} is not valid JSON: {e}") from e
        weights = zf.read(WEIGHTS)
    model = keras_config.model_from_keras(config)
    if compile and config.get("compile_config"):
        keras_config.compile_from_keras(model, config["compile_config"])
    with h5py().File(io.BytesIO(weights), "r") as f:
        _read_weights(model, f, os.fspath(filepath))
        if model.compiled and "optimizer/vars" in f:
            _set_optimizer_variables(model, f["optimizer/vars"], filepath)
    return model


# -- optimizer state ------------------------------------------------------------------------------------------
def _slot_layout(model, trainable=None):
    """[(slot name, offset, shape)] in Keras's variable order, after iterations and learning_rate: the trainable
    variables in the order of Keras's `model.layers` (a graph's differs from distnet's flat buffer). trainable:
    the weights the slots cover, in their order (default: those compiled, the flat buffer's)."""
    opt, flat = model.optimizer, model.flat_state
    trainable = flat.trainable if trainable is None else trainable
    offsets = {id(w): offset for (offset, _), w in zip(segments(trainable), trainable)}
    per_var = [(offsets[id(w)], w.value.shape) for _, _, weights in keras_config.weight_groups(model)
               for w in weights if id(w) in offsets]
    out = []
    for names in OPTIMIZER_SLOTS.get(type(opt).__name__, []):
        names = [n for n in names if n in opt.slots]
        out += [(name, offset, shape) for offset, shape in per_var for name in names]
    return out


def _has_lr_variable(opt):
    return opt.schedule is None


def _optimizer_variables(model, as_configured=False):
    opt = model.optimizer
    values = [np.asarray(opt.iterations, np.int64)]
    if _has_lr_variable(opt):
        values.append(np.asarray(opt.learning_rate, np.float32))
    slots, trainable = saving.optimizer_state_as_configured(model) if as_configured else (opt.slots, None)
    for name, offset, shape in _slot_layout(model, trainable):
        values.append(slots[name][offset:offset + int(np.prod(shape))].reshape(shape))
    return values


def _set_optimizer_variables(model, group, filepath):
    opt = model.optimizer
    layout = _slot_layout(model)
    expected = 1 + _has_lr_variable(opt) + len(layout)
    if type(opt).__name__ not in OPTIMIZER_SLOTS or len(group) != expected:
        warnings.warn(f"{os.fspath(filepath)!r}: skipping the optimizer state: {type(opt).__name__} '{opt.name}' has "
                      f"{expected} variables, the file holds {len(group)}", stacklevel=3)
        return
    values = [np.asarray(group[str(i)]) for i in range(expected)]
    for (name, offset, shape), v in zip(layout, values[expected - len(layout):]):
        if v.shape != shape:
            raise CheckpointError(f"{os.fspath(filepath)!r}: optimizer variable of shape {v.shape} where "
                                  f"{type(opt).__name__} expects its '{name}' slot of shape {shape}")
    opt.iterations = int(values[0])
    if _has_lr_variable(opt):
        opt.learning_rate = float(values[1])
    for (name, offset, shape), v in zip(layout, values[expected - len(layout):]):
        opt.slots[name][offset:offset + v.size] = v.ravel()
