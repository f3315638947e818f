"""Sequential: a stack of layers, each feeding the next (Keras's `keras.Sequential`)."""
from ..layers import InputLayer, Layer
from . import summary
from .model import Model


class Sequential(Model):
    default_name = "sequential"

    def __init__(self, layers=None, name=None, trainable=True):
        super().__init__(name=name, trainable=trainable)
        self.stack = []
        for layer in layers or []:
            self.add(layer)

    @property
    def all_layers(self):
        return self.stack

    def add(self, layer):
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
        self.stack.append(layer)
        self.built = False
        self._build_if_declared()

    def pop(self):
        if not self.layers:
            raise ValueError(f"Model '{self.name}' has no layers to pop")
        layer = self.stack.pop()
        self.built = False
        self._build_if_declared()
        return layer

    def _build_if_declared(self):
        """Build as soon as the first layer declares its input shape, as Keras does."""
        if self.stack and self.stack[0].declared_input_shape is not None:
            self.build_for(self.stack[0].declared_input_shape)

    def build_layers(self, input_shape):
        shape = input_shape
        for layer in self.stack:
            shape = layer.build_for(shape)
        return shape

    def forward(self, x, training=False):
        for layer in self.stack:
            x = layer.call(x, training=training)
        return x

    def backward(self, grad, fused=False, ready=None):
        offsets = self.flat_state.layer_offsets
        first = next((i for i, la in enumerate(self.stack) if la.trainable_weights), len(self.stack))
        last = len(self.stack) - 1
        for i in range(last, first - 1, -1):
            layer, need = self.stack[i], i > first
            if i == last and fused:
                grad = layer.backward_preactivation(grad, need)
            else:
                grad = layer.backward(grad, need)
            if ready is not None and i in offsets:
                ready(offsets[i])

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
