"""Keras 3 functional graphs <-> distnet's functional Model: the "Functional" config of a `.keras` file.

    {"name": "functional", "trainable": true,
     "layers": [{"class_name": "InputLayer", "config": {...}, "name": "img", "inbound_nodes": []},
                {"class_name": "Add", "config": {...}, "name": "add",
                 "inbound_nodes": [{"args": [[<tensor>, <tensor>]], "kwargs": {}}]}, ...],
     "input_layers": ["img", 0, 0],                  (a list of such triples for a list of inputs)
     "output_layers": [["head_a", 0, 0], ["head_b", 0, 0]]}

    <tensor> = {"class_name": "__keras_tensor__",
                "config": {"shape": [null, 8], "dtype": "float32", "keras_history": [layer, node, index]}}

A layer has one inbound node per call; distnet uses each layer once, so a layer called twice (shared weights)
or a nested model is refused by name. tf.keras 2 wrote a node as a list of [layer, node, index, kwargs].
Keras lists the layers, and numbers the groups of model.weights.h5, by depth (Model.layers_by_depth), not in
distnet's run order. Importing this module registers it in keras_config's hooks, with the table lines of the
layers only a graph holds (merge layers) and of the wrappers (their inner layers are Keras specs too).
"""
from ..layers.core import Input
from . import keras_config
from .keras_config import LAYERS, LayerSpec, layer_from_keras, layer_to_keras, layer_variables

KERAS_TENSOR = "__keras_tensor__"
MODEL_CLASSES = ("Functional", "Sequential", "Model")


# -- reading --------------------------------------------------------------------------------------------------
class _NotYet(Exception):
    """A node reads a layer that is not built yet (the config lists layers out of order): retried later."""


def _is_triple(ref):
    return isinstance(ref, (list, tuple)) and len(ref) in (3, 4) and isinstance(ref[0], str)


def _tensor(made, ref, what):
    """The symbolic tensor of a keras_history [layer name, node index, tensor index]."""
    name, node, index = ref[:3]
    if node != 0:
        raise ValueError(f"{what} reads call {node} of layer '{name}': a layer called more than once (shared "
                         "weights), which distnet does not build; each distnet layer is used once")
    if name not in made:
        raise _NotYet(name)
    outputs = made[name]
    if not 0 <= index < len(outputs):
        raise ValueError(f"{what} reads output {index} of layer '{name}', which has {len(outputs)} output(s)")
    return outputs[index]


def _unpack(value, made, what):
    """A node argument: a Keras tensor, or a list (or tuple) of them, as distnet symbolic tensors."""
    if isinstance(value, dict) and value.get("class_name") == KERAS_TENSOR:
        return _tensor(made, value["config"]["keras_history"], what)
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        value = value["config"]["value"]
    if isinstance(value, (list, tuple)) and value:
        return [_unpack(v, made, what) for v in value]
    raise ValueError(f"{what} is called on {value!r}; distnet layers take a tensor or a list of tensors")


def _node_inputs(node, made, what):
    """The input(s) of one call: a symbolic tensor, or a list of them for a layer that takes several."""
    legacy = isinstance(node, list)                            # tf.keras 2: [[layer, node, index, kwargs], ...]
    if legacy:
        args = [[{"class_name": KERAS_TENSOR, "config": {"keras_history": entry[:3]}} for entry in node]]
        kwargs = {k: v for entry in node if len(entry) == 4 for k, v in (entry[3] or {}).items()}
    else:
        args, kwargs = node.get("args", []), node.get("kwargs") or {}
    extra = {k: v for k, v in kwargs.items() if v is not None}
    if len(args) != 1 or extra:
        raise ValueError(f"{what} is called with arguments distnet layers do not take: {len(args)} positional "
                         f"argument(s), keyword arguments {sorted(extra)} (distnet takes one tensor, or a list)")
    inputs = _unpack(args[0], made, what)
    return inputs[0] if legacy and len(inputs) == 1 else inputs


def _check_buildable(spec):
    """Refuse, by name, what a distnet graph cannot hold: nested models, layers called several times."""
    name, class_name = spec.get("name"), spec.get("class_name")
    what = f"Keras layer '{name}' ({class_name})"
    if class_name in MODEL_CLASSES or "layers" in (spec.get("config") or {}):
        raise ValueError(f"{what} is a nested model; distnet reads a graph of layers only (rebuild the inner "
                         "model's layers in the outer graph)")
    nodes = spec.get("inbound_nodes") or []
    if len(nodes) > 1:
        raise ValueError(f"{what} is called {len(nodes)} times in the graph (a shared layer); distnet layers are "
                         "used once each, so shared weights cannot be rebuilt")
    return what, nodes


def _make(spec, made):
    """Build one layer of the config and call it on its inputs; its output tensors go into `made`."""
    what, nodes = _check_buildable(spec)
    if spec.get("class_name") == "InputLayer":
        layer = layer_from_keras(spec)
        made[spec["name"]] = [Input(shape=layer.declared_input_shape, batch_size=layer.batch_size,
                                    name=spec["name"], dtype=layer.dtype)]
        return
    if not nodes:
        raise ValueError(f"{what} is not connected to the graph (it has no inbound node)")
    inputs = _node_inputs(nodes[0], made, what)            # _NotYet before anything is built
    layer = layer_from_keras(spec)
    try:
        out = layer(inputs)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {e}") from e
    made[spec["name"]] = out if isinstance(out, list) else [out]


def _endpoints(refs, made, what):
    """input_layers / output_layers: one [name, node, index] triple, or a list of them (a list of one included)."""
    if isinstance(refs, dict):
        raise ValueError(f"The Keras model's {what} are a dict {sorted(refs)}; distnet models take a tensor or "
                         "a list of tensors (rebuild the Keras model with lists)")
    if _is_triple(refs):
        return _tensor(made, refs, f"The model's {what}")
    return [_endpoints(r, made, what) for r in refs]


def functional_from_keras(config):
    """A distnet functional Model from the config of a Keras "Functional" model."""
    from .functional import Model
    pending, made = list(config.get("layers", [])), {}
    names = [spec.get("name") for spec in pending]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"The Keras graph names several layers {dup}; layer names must be unique")
    while pending:                            # Keras lists a layer after what it reads; tolerate other orders
        left, missing = [], set()
        for spec in pending:
            try:
                _make(spec, made)
            except _NotYet as e:
                left.append(spec)
                missing.add(e.args[0])
        if len(left) == len(pending):
            unknown = sorted(missing - set(names))
            raise ValueError(f"The Keras graph cannot be connected: layers {[s.get('name') for s in left]} read "
                             + (f"unknown layers {unknown}" if unknown else "each other (a cycle)"))
        pending = left
    return Model(_endpoints(config["input_layers"], made, "inputs"),
                 _endpoints(config["output_layers"], made, "outputs"),
                 name=config.get("name"), trainable=config.get("trainable", True))


# -- writing --------------------------------------------------------------------------------------------------
def _tensor_to_keras(t):
    return {"class_name": KERAS_TENSOR, "config": {"shape": list(t.shape), "dtype": t.dtype,
                                                   "keras_history": [t.layer.name, 0, t.index]}}


def functional_to_keras(model):
    """The config of a Keras "Functional" model for a distnet functional Model, layers in Keras's order."""
    specs = []
    for layer in keras_layers(model):
        spec = layer_to_keras(layer)
        spec["name"] = layer.name
        if layer.inbound is None:
            spec["inbound_nodes"] = []
        else:
            arg = [_tensor_to_keras(t) for t in layer.inbound] if layer.multi_input \
                else _tensor_to_keras(layer.inbound)
            spec["inbound_nodes"] = [{"args": [arg], "kwargs": {}}]
        specs.append(spec)

    def refs(tensors, many):
        triples = [[t.layer.name, 0, t.index] for t in tensors]
        return triples if many else triples[0]
    return {"name": model.name, "trainable": model.trainable, "layers": specs,
            "input_layers": refs(model.inputs, model.multiple_inputs),
            "output_layers": refs(model.outputs, model.multiple_outputs)}


def keras_layers(model):
    """Keras's `model.layers` of a graph: by depth, Input layers included (they hold a group each in
    model.weights.h5: layers/input_layer, layers/input_layer_1, ...)."""
    return [layer for layer, _ in model.layers_by_depth()]


# -- wrappers: their inner layers are Keras layer specs, their variables sit in the inner layers' groups -------
def _bidirectional_to_keras(layer, config):
    return {**config, "layer": layer_to_keras(layer.forward_layer),
            "backward_layer": layer_to_keras(layer.backward_layer)}


def _inner_variables(layer, *inner):
    """[(path, weights)] of the wrapped layers, each under the attribute Keras keeps it in."""
    return [(f"{attr}/{path}", weights) for attr in inner
            for path, weights in layer_variables(getattr(layer, attr))]


LAYERS.update({
    **{merge: LayerSpec() for merge in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                                        "Concatenate")},
    "Bidirectional": LayerSpec(write=_bidirectional_to_keras,
                               variables=lambda la: _inner_variables(la, "forward_layer", "backward_layer")),
    "TimeDistributed": LayerSpec(write=lambda la, config: {**config, "layer": layer_to_keras(la.layer)},
                                 variables=lambda la: _inner_variables(la, "layer")),
})
keras_config.MODEL_READERS["Functional"] = functional_from_keras
keras_config.MODEL_WRITERS["Model"] = ("keras.src.models.functional", "Functional", functional_to_keras)
keras_config.KERAS_LAYER_ORDER["Model"] = keras_layers
