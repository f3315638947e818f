"""Symbolic tensors: what calling a layer on `Input(...)` returns (Keras's KerasTensor), recording the graph.

    x = Input((28, 28, 1))             # a SymbolicTensor made by an InputLayer
    h = Conv2D(8, 3)(x)                # builds the layer for x's shape and records that it reads x
    y = Add()([h, Conv2D(8, 3, padding="same")(h)])

A symbolic tensor knows its shape (batch dimension None), the layer that makes it, and which of that layer's
outputs it is. Each layer is called once in a graph (distnet layers keep the activations of their one call for
backward); the functional Model (distnet.models.functional) walks `layer.inbound` from the outputs back.
"""


class SymbolicTensor:
    def __init__(self, shape, dtype, layer, index=0):
        self.shape = (None,) + tuple(shape)
        self.dtype, self.layer, self.index = dtype, layer, index

    @property
    def name(self):
        return self.layer.name if self.index == 0 else f"{self.layer.name}_{self.index}"

    def __repr__(self):
        return f"<SymbolicTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"


def is_symbolic(x):
    if isinstance(x, SymbolicTensor):
        return True
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, SymbolicTensor) for t in x)


def connect(layer, inputs):
    """Record that `layer` reads `inputs` (a SymbolicTensor, or a list for a multi-input layer), build it for
    their shapes, and return its output tensor(s)."""
    if layer.inbound is not None:
        raise ValueError(f"Layer '{layer.name}' is already called in a graph; distnet layers keep the activations "
                         "of one call for backward, so each layer instance is used once (create another layer "
                         "instead of sharing this one)")
    many = isinstance(inputs, (list, tuple))
    if many != layer.multi_input:
        want = "a list of tensors" if layer.multi_input else "one tensor"
        raise ValueError(f"{type(layer).__name__} layer '{layer.name}' takes {want}, received "
                         f"{len(inputs) if many else 1} tensor(s): {inputs!r}")
    shapes = [t.shape[1:] for t in inputs] if many else inputs.shape[1:]
    out = layer.build_for(shapes)
    layer.inbound = list(inputs) if many else inputs
    if layer.multi_output:
        return [SymbolicTensor(s, layer.dtype, layer, i) for i, s in enumerate(out)]
    return SymbolicTensor(out, layer.dtype, layer)
