"""Sequential: a stack of layers, each feeding the next (Keras's `keras.Sequential`) — one case of the functional
graph: once the input shape is known, the stack is connected as a chain and runs as any functional Model."""
from ..layers import InputLayer, Layer
from ..layers.symbolic import SymbolicTensor, connect
from . import summary
from .functional import Model


class Sequential(Model):
    default_name = "sequential"

    def __init__(self, layers=None, name=None, trainable=True):
        Model.__base__.__init__(self, name=name, trainable=trainable)      # no graph until the shape is known
        self.stack = []
        self.order = []
        for layer in layers or []:
            self.add(layer)

    @property
    def all_layers(self):
        return self.order if self.built else self.stack

    def add(self, layer):
        if isinstance(layer, SymbolicTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer             # Sequential([Input((8,)), ...]) as in Keras 3
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a distnet Layer instance, received {layer!r}")
        if isinstance(layer, InputLayer) and self.stack:
            raise ValueError(f"An Input layer can only be the first layer of a Sequential model; model "
                             f"'{self.name}' already has {len(self.stack)} layer(s)")
        if any(layer.name == other.name for other in self.stack):
            raise ValueError(f"All layers in a model must have unique names; '{layer.name}' is already in "
                             f"model '{self.name}'")
        if layer.multi_input or layer.multi_output:
            raise ValueError(f"Layer '{layer.name}' ({type(layer).__name__}) takes or returns several tensors; "
                             "use the functional API (distnet.Model(inputs, outputs)) for it")
        if layer.inbound is not None:
            raise ValueError(f"Layer '{layer.name}' is already used in another model's graph; create a new layer")
        self.stack.append(layer)
        self.built = False
        self._build_if_declared()

    def pop(self):
        if not self.layers:
            raise ValueError(f"Model '{self.name}' has no layers to pop")
        layer = self.stack.pop()
        layer.inbound = None
        self.built = False
        self._build_if_declared()
        return layer

    def _build_if_declared(self):
        """Build as soon as the first layer declares its input shape, as Keras does."""
        if self.layers and self.stack[0].declared_input_shape is not None:
            self.build_for(self.stack[0].declared_input_shape)

    def build_for(self, input_shape):
        """Connect the stack as a chain from an input of `input_shape` (no batch dim), then build like any graph."""
        if not self.stack or (len(self.stack) == 1 and isinstance(self.stack[0], InputLayer)):
            raise ValueError(f"Model '{self.name}' has no layers; add layers before building or training it")
        input_shape = tuple(input_shape)
        layers = list(self.stack)
        first = layers.pop(0) if isinstance(layers[0], InputLayer) else InputLayer(shape=input_shape)
        first.build_for(input_shape)
        tensor = SymbolicTensor(input_shape, first.dtype, first)
        inputs = tensor
        for layer in layers:
            layer.inbound = None            # reconnected from scratch (after add/pop)
            tensor = connect(layer, tensor)
        self.inputs, self.outputs = [inputs], [tensor]
        self.multiple_inputs = self.multiple_outputs = False
        self.order = [first] + layers
        self.implicit_input = first is not self.stack[0]
        Model.build_for(self, input_shape)

    def summary_rows(self):
        """Keras prints a Sequential as a chain: no Input row, no Connected-to column."""
        return [summary.layer_row(la) for la in self.layers]

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "layers": [{"class_name": type(la).__name__, "config": la.get_config()} for la in self.stack],
                "input_shape": list(self.input_shape[1:]) if self.built else None}

    @classmethod
    def from_config(cls, config):
        """A model from get_config()'s dict, or from a Keras 3 Sequential's get_config() (translated)."""
        from ..layers import get_layer_class
        if "build_input_shape" in config or any("module" in spec for spec in config.get("layers", [])):
            from .keras_config import sequential_from_keras
            return sequential_from_keras(config)
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        for spec in config["layers"]:
            model.add(get_layer_class(spec["class_name"]).from_config(dict(spec["config"])))
        if not model.built and config.get("input_shape") is not None:
            model.build_for(tuple(config["input_shape"]))
        return model
