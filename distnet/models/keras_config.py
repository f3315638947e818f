"""Keras 3 configs <-> distnet: the `config.json` of a `.keras` file, one function per direction.

    model_from_keras(config) -> distnet model        model_to_keras(model) -> Keras config (JSON-ready dict)
    layer_from_keras(spec)   -> distnet layer        layer_to_keras(layer) -> Keras layer spec
    compile_from_keras(model, compile_config)        compile_to_keras(model) -> Keras compile_config

Layers go through LAYERS, one line per Keras class distnet builds. distnet layers take Keras's argument names,
so the generic translation does most of the work: nested objects are converted by key (`*_initializer`,
`*_regularizer`, `*_constraint`, `dtype`), options distnet does not take are dropped when Keras wrote null or the
default listed in the table, and anything else is a clear error naming the layer. A new layer is usually one
line; a layer whose variables live in sublayers in Keras's weights file (an RNN's `cell`, Bidirectional's
`forward_layer` and `backward_layer`) also gives `variables`. Models go through MODEL_READERS (Keras class
name -> reader), MODEL_WRITERS (distnet class name -> writer) and KERAS_LAYER_ORDER: keras_graph.py plugs in the
functional API's "Functional" reader, "Model" writer and Keras's layer order of a graph there.
"""
import inspect
import re
from dataclasses import dataclass, field

from .. import initializers, layers as layers_mod, losses, metrics, optimizers, regularizers
from ..layers import InputLayer


@dataclass(frozen=True)
class LayerSpec:
    keras_defaults: dict = field(default_factory=dict)  # Keras-only options distnet honours only at these values
    ignored: tuple = ()        # Keras-only options that change nothing in distnet, whatever their value
    read: object = None        # optional: keras config -> distnet kwargs (after the generic conversion)
    write: object = None       # optional: (distnet layer, keras config) -> keras config
    variables: object = None   # optional: layer -> [(path under the layer's group, [Weight])] in model.weights.h5;
    #                            default [("vars", layer.weights)]


def layer_variables(layer):
    """[(path under the layer's group in model.weights.h5, [Weight])] for one layer."""
    entry = LAYERS.get(type(layer).__name__)
    return entry.variables(layer) if entry and entry.variables else [("vars", layer.weights)]


def _input_from_keras(config):
    shape = config.pop("batch_shape", None) or config.pop("batch_input_shape", None)
    if shape is None:
        raise ValueError(f"Keras InputLayer '{config.get('name')}' has no batch_shape: {config}")
    return {**config, "shape": tuple(shape[1:]), "batch_size": shape[0]}


def _input_to_keras(layer, config):
    return {"batch_shape": [layer.batch_size] + list(layer.declared_input_shape), "dtype": config["dtype"],
            "sparse": False, "name": layer.name}


LAYERS = {
    "InputLayer": LayerSpec({"sparse": False, "ragged": False, "optional": False}, read=_input_from_keras,
                            write=_input_to_keras),
    "Dense": LayerSpec(),
    "Conv2D": LayerSpec({"groups": 1}),
    "Activation": LayerSpec(),
    "Dropout": LayerSpec(),
    "Flatten": LayerSpec({"data_format": "channels_last"}),
    "Reshape": LayerSpec(),
    "MaxPooling2D": LayerSpec(),
    "AveragePooling2D": LayerSpec(),
    "GlobalAveragePooling2D": LayerSpec(),
    "BatchNormalization": LayerSpec({"synchronized": False, "renorm": False},
                                    ignored=("renorm_momentum", "renorm_clipping")),
    # layers of the layers issue (Keras files tested when distnet has them): an RNN's variables sit in its cell;
    # distnet has no masks, so zero_output_for_mask (True in a Bidirectional returning sequences) changes nothing
    "Conv1D": LayerSpec({"groups": 1}),
    "MaxPooling1D": LayerSpec(),
    "Embedding": LayerSpec(),
    "LayerNormalization": LayerSpec(),
    **{rnn: LayerSpec({"stateful": False, "unroll": False}, ignored=("use_cudnn", "seed", "zero_output_for_mask"),
                      variables=lambda layer: [("cell/vars", layer.weights)])
       for rnn in ("SimpleRNN", "LSTM", "GRU")},
}  # merge layers and wrappers: keras_graph.py


def keras_snake_case(name):
    """Keras's to_snake_case, which names the groups of model.weights.h5 (Conv2D -> conv2d)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# -- generic pieces -------------------------------------------------------------------------------------------
def _plain(obj):
    """A Keras-serialized object's (class_name, config), or (None, obj) for a plain value."""
    if isinstance(obj, dict) and "class_name" in obj:
        return obj["class_name"], obj.get("config") or {}
    return None, obj


def _accepted(cls):
    """The keyword arguments cls's constructor takes, following **kwargs up the class hierarchy."""
    names = set()
    for klass in inspect.getmro(cls):
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)} - {"self"}
        if not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            break
    return names


def _kwargs_for(cls, config, what, defaults=None, ignored=()):
    """config reduced to what cls takes: Keras-only keys dropped when null, at their default, or ignored;
    any other Keras-only value is an error naming `what`."""
    accepted, out = _accepted(cls), {}
    for key, value in config.items():
        if key in accepted:
            out[key] = value
        elif value is None or key in ignored or (defaults and key in defaults and _same(value, defaults[key])):
            continue
        else:
            hint = f" (distnet supports {key}={defaults[key]!r})" if defaults and key in defaults else ""
            raise ValueError(f"{what} has {key}={value!r}, which distnet's {cls.__name__} does not support{hint}")
    return out


def _same(a, b):
    return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


def _dtype_from_keras(value, what, ids=False):
    """A layer's dtype; an Input (ids=True) may also hold integer ids (for an Embedding)."""
    _, config = _plain(value)
    name = config.get("name") if isinstance(config, dict) else config
    if name not in (None, "float32", "float64") + (("int32", "int64") if ids else ()):
        raise ValueError(f"{what} has dtype {name!r}; distnet computes in float32 (or float64), and an Input "
                         "may hold int32 or int64 ids")
    return name


def _object_from_keras(module, base, value, what, renames=None):
    """An initializer or regularizer (a `base` of `module`) from its Keras form: a name or a serialized object."""
    class_name, config = _plain(value)
    if class_name is None:
        return value                     # a name such as 'glorot_uniform', or None
    cls = getattr(module, (renames or {}).get(class_name, class_name), None)
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{what} uses the {base.__name__.lower()} {class_name!r}, which distnet lacks")
    return cls(**_kwargs_for(cls, config, what))


def _object_to_keras(module_name, obj):
    return None if obj is None else {"module": module_name, "class_name": type(obj).__name__,
                                     "config": obj.get_config(), "registered_name": None}


def _values_from_keras(config, what, ids=False):
    """Nested Keras objects of a layer config turned into what distnet layers take, by key."""
    out = {}
    for key, value in config.items():
        if key == "dtype":
            value = _dtype_from_keras(value, what, ids)
        elif key.endswith("_initializer"):
            value = _object_from_keras(initializers, initializers.Initializer, value, what,
                                       {"OrthogonalInitializer": "Orthogonal"})
        elif key.endswith("_regularizer"):
            value = _object_from_keras(regularizers, regularizers.Regularizer, value, what)
        elif key in ("layer", "backward_layer") and isinstance(value, dict):
            value = layer_from_keras(value)          # a wrapper's inner layer (Bidirectional, TimeDistributed)
        elif key.endswith("_constraint") and value is not None:
            raise ValueError(f"{what} has {key}={value!r}; distnet has no weight constraints")
        elif isinstance(value, dict) and "class_name" in value:
            raise ValueError(f"{what} has {key}={value!r}, a Keras object distnet cannot rebuild")
        out[key] = value
    return out


# -- layers ---------------------------------------------------------------------------------------------------
def layer_from_keras(spec):
    """A distnet layer from a Keras layer spec {"class_name", "config", ...}."""
    class_name, config = spec.get("class_name"), dict(spec.get("config") or {})
    what = f"Keras layer '{config.get('name')}' ({class_name})"
    entry = LAYERS.get(class_name)
    if entry is None:
        raise ValueError(f"{what} is not supported by distnet; supported layers: {', '.join(sorted(LAYERS))}")
    config = _values_from_keras(config, what, ids=class_name == "InputLayer")
    if entry.read is not None:
        config = entry.read(config)
    cls = layers_mod.get_layer_class(class_name)
    kwargs = _kwargs_for(cls, config, what, entry.keras_defaults, entry.ignored)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from e


def layer_to_keras(layer):
    """A Keras layer spec for a distnet layer (built: with its build_config)."""
    class_name = type(layer).__name__
    if class_name not in LAYERS:
        raise ValueError(f"Layer '{layer.name}' ({class_name}) has no Keras equivalent that distnet can write; "
                         f"supported: {', '.join(sorted(LAYERS))}")
    config = {k: v for k, v in layer.get_config().items() if k != "input_shape"}
    for key, value in config.items():
        if key.endswith("_initializer"):
            config[key] = _object_to_keras("keras.initializers", initializers.get(value))
        elif key.endswith("_regularizer"):
            config[key] = _object_to_keras("keras.regularizers", regularizers.get(value))
        elif isinstance(value, tuple):
            config[key] = list(value)
    entry = LAYERS[class_name]
    if entry.write is not None:
        config = entry.write(layer, config)
    spec = {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}
    if layer.built and not isinstance(layer, InputLayer):
        shapes = [[None] + list(s) for s in (layer.input_shape if layer.multi_input else [layer.input_shape])]
        spec["build_config"] = {"input_shape": shapes if layer.multi_input else shapes[0]}
    return spec


# -- models ---------------------------------------------------------------------------------------------------
def sequential_from_keras(config):
    from .sequential import Sequential
    model = Sequential(name=config.get("name"), trainable=config.get("trainable", True))
    for spec in config.get("layers", []):
        model.add(layer_from_keras(spec))
    shape = config.get("build_input_shape")
    if not model.built and shape:
        model.build_for(tuple(shape[1:]))
    return model


def sequential_to_keras(model):
    specs = [layer_to_keras(la) for la in model.all_layers]
    if not isinstance(model.all_layers[0], InputLayer):
        specs.insert(0, {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                         "config": {"batch_shape": list(model.input_shape), "dtype": model.all_layers[0].dtype,
                                    "sparse": False, "name": "input_layer"}})
    return {"name": model.name, "trainable": model.trainable, "dtype": model.all_layers[0].dtype, "layers": specs,
            "build_input_shape": list(model.input_shape)}


# Keras class name -> reader(inner config) -> distnet model; the functional API adds "Functional"
MODEL_READERS = {"Sequential": sequential_from_keras}
# distnet class name -> (Keras module, Keras class name, writer(model) -> inner config); the functional API adds
# "Model": ("keras.src.models.functional", "Functional", functional_to_keras)
MODEL_WRITERS = {"Sequential": ("keras", "Sequential", sequential_to_keras)}
# distnet class name -> the model's layers in the order of Keras's `model.layers`, which numbers the groups of
# model.weights.h5 (Keras re-derives it from the graph when it loads a file, so a writer must follow it); the
# functional API adds "Model": Keras's order of a graph (by depth from the inputs), not distnet's run order
KERAS_LAYER_ORDER = {"Sequential": lambda model: model.layers}


def weight_groups(model):
    """[(group path, layer, [Weight])]: where variables sit in model.weights.h5, named as Keras names them:
    layers/<snake_case class name>[_<k>] in the order of Keras's `model.layers`, then the layer's own paths."""
    counts, out = {}, []
    for layer in KERAS_LAYER_ORDER.get(type(model).__name__, lambda m: m.layers)(model):
        base = keras_snake_case(type(layer).__name__)
        k = counts[base] = counts.get(base, -1) + 1
        for sub, weights in layer_variables(layer):
            out.append((f"layers/{base if k == 0 else f'{base}_{k}'}/{sub}", layer, weights))
    return out


def model_from_keras(config):
    """A distnet model from a Keras model config ({"class_name": "Sequential", "config": {...}, ...})."""
    class_name = config.get("class_name")
    reader = MODEL_READERS.get(class_name)
    if reader is None:
        raise ValueError(f"The Keras file holds a model of class {class_name!r}; distnet reads "
                         f"{', '.join(sorted(MODEL_READERS))} models (a subclassed model has no config to rebuild)")
    return reader(config.get("config") or {})


def model_to_keras(model):
    """The Keras 3 config of a built distnet model, with its compile_config when compiled."""
    module, class_name, writer = MODEL_WRITERS.get(type(model).__name__, (None, None, None))
    if writer is None:
        raise ValueError(f"distnet cannot write a {type(model).__name__} model as a Keras file; it writes "
                         f"{', '.join(sorted(MODEL_WRITERS))} models")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; build it (or fit it) before saving a Keras file")
    return {"module": module, "class_name": class_name, "config": writer(model), "registered_name": None,
            "build_config": {"input_shape": None if class_name == "Functional" else list(model.input_shape)},
            "compile_config": compile_to_keras(model) if model.compiled else None}


# -- compile settings -----------------------------------------------------------------------------------------
_OPTIMIZER_DEFAULTS = {"use_ema": False}
_OPTIMIZER_IGNORED = ("ema_momentum", "ema_overwrite_frequency", "is_legacy_optimizer")
_LOSS_CLASSES = {cls.__name__: cls for cls in (losses.BinaryCrossentropy, losses.CategoricalCrossentropy,
                                               losses.SparseCategoricalCrossentropy, losses.MeanSquaredError,
                                               losses.MeanAbsoluteError, losses.Huber)}


def optimizer_from_keras(value):
    class_name, config = _plain(value)
    if class_name is None:
        return optimizers.get(value)
    what = f"Keras optimizer {class_name!r}"
    cls = getattr(optimizers, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, optimizers.Optimizer)):
        raise ValueError(f"{what} is not supported by distnet (SGD, Adam, AdamW, RMSprop, Adagrad are)")
    config = dict(config)
    lr_class, lr_config = _plain(config.get("learning_rate"))
    if lr_class is not None:
        schedule = getattr(optimizers.schedules, lr_class, None)
        if schedule is None:
            raise ValueError(f"{what} uses the learning-rate schedule {lr_class!r}, which distnet lacks")
        config["learning_rate"] = schedule(**_kwargs_for(schedule, lr_config, what))
    return cls(**_kwargs_for(cls, config, what, _OPTIMIZER_DEFAULTS, _OPTIMIZER_IGNORED))


def optimizer_to_keras(opt):
    config = opt.get_config()
    lr = opt.schedule
    if lr is not None:
        config["learning_rate"] = {"module": "keras.optimizers.schedules", "class_name": type(lr).__name__,
                                   "config": lr.get_config(), "registered_name": None}
    return {"module": "keras.optimizers", "class_name": type(opt).__name__, "config": config,
            "registered_name": None}


def loss_from_keras(value):
    class_name, config = _plain(value)
    if class_name == "function":             # a loss function given by name: {"config": "mse", ...}
        return losses.get(config)
    if class_name is None:
        return losses.get(value)
    cls = _LOSS_CLASSES.get(class_name)
    if cls is None:
        raise ValueError(f"Keras loss {class_name!r} is not supported by distnet (supported: "
                         f"{', '.join(sorted(_LOSS_CLASSES))})")
    defaults = {"axis": -1, "reduction": "sum_over_batch_size"}
    return cls(**_kwargs_for(cls, config, f"Keras loss {class_name!r}", defaults, ("dtype",)))


def _metric_from_keras(value):
    class_name, config = _plain(value)
    if class_name is None:
        return value
    cls = getattr(metrics, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, metrics.Metric)):
        raise ValueError(f"Keras metric {class_name!r} is not supported by distnet")
    return cls(**_kwargs_for(cls, config, f"Keras metric {class_name!r}"))


def _per_output(value, fn):
    """fn applied to one object, or to each of a per-output list or dict (a dict that is not a Keras object)."""
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _per_output(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_per_output(v, fn) for v in value]
    return fn(value)


def _metrics_from_keras(value):
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]                  # one output's list, nested
    return None if value is None else _per_output(value if isinstance(value, (list, tuple, dict)) else [value],
                                                  _metric_from_keras)


def compile_from_keras(model, config):
    """Compile `model` from a Keras compile_config (optimizer, loss, metrics, loss_weights; per output too)."""
    model.compile(optimizer=optimizer_from_keras(config.get("optimizer", "rmsprop")),
                  loss=_per_output(config.get("loss"), loss_from_keras),
                  metrics=_metrics_from_keras(config.get("metrics")),
                  weighted_metrics=_metrics_from_keras(config.get("weighted_metrics")),
                  loss_weights=config.get("loss_weights"))


def compile_to_keras(model):
    """Keras's compile_config from the model's own (`model.compile_config()`): losses as Keras objects, metrics by
    name or as the Keras metric objects distnet has, the optimizer with its schedule."""
    config = model.compile_config()
    weights = config.get("loss_weights")
    metric_specs, weighted_specs = _compile_metric_specs(model)
    return {"optimizer": optimizer_to_keras(model.optimizer),
            "loss": _per_output(config["loss"], lambda loss: {"module": "keras.losses", **loss,
                                                              "registered_name": None}),
            "loss_weights": None if weights in (None, 1.0) else weights,
            "metrics": _metrics_to_keras(metric_specs), "weighted_metrics": _metrics_to_keras(weighted_specs),
            "run_eagerly": False, "steps_per_execution": 1, "jit_compile": False}


def _compile_metric_specs(model):
    """(metrics, weighted_metrics) as given to compile, metric objects included (compile_config() keeps names)."""
    settings = getattr(model, "compile_settings", None)         # the Trainer of the functional API
    if settings is not None:
        return settings.metrics, settings.weighted_metrics
    pairs = list(zip(model.metric_ids, model.metric_weighted))
    return [m for m, w in pairs if not w], [m for m, w in pairs if w]


def _metrics_to_keras(spec):
    """Names stay names; distnet's Keras metric classes become Keras objects; other objects are left out."""
    def one(m):
        if isinstance(m, metrics.Metric) and type(m) is not metrics.Metric and type(m).__name__ in vars(metrics):
            config = {"name": m.name, **({"threshold": m.threshold} if hasattr(m, "threshold") else {})}
            return {"module": "keras.metrics", "class_name": type(m).__name__, "config": config,
                    "registered_name": None}
        return m if isinstance(m, str) else None

    def prune(v):
        if isinstance(v, dict):
            return {k: prune(x) for k, x in v.items()}
        return [prune(x) for x in v if x is not None] if isinstance(v, list) else v
    if spec is None:
        return None
    return prune(_per_output(spec, one)) or None


from . import keras_graph  # noqa: E402,F401  (registers the functional API's reader, writer and layer order)
