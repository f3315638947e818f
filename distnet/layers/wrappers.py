"""Wrappers: layers that run other layers.

Bidirectional(rnn): a forward copy and a go_backwards copy of `rnn` over the same sequence, merged
(concat | sum | mul | ave | None). With return_sequences the backward copy's output is flipped back to forward
time order before merging, as in Keras. Weights: the forward layer's, then the backward layer's.

TimeDistributed(layer): `layer` applied to every step of x: (batch, timesteps, ...), as one call on the
(batch * timesteps, ...) view. Weights: the inner layer's.

Both expose their inner layers' Weight objects through `weights`, so a model flattens them like any other.
"""
import numpy as np

from .base import Layer

MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def _serialize(layer):
    return {"class_name": type(layer).__name__, "config": layer.get_config()}


def _deserialize(spec):
    from . import get_layer_class  # the registry imports this module
    return get_layer_class(spec["class_name"]).from_config(dict(spec["config"]))


class _Wrapper(Layer):
    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(layer, Layer):
            raise TypeError(f"{type(self).__name__} layer '{self.name}' expects a distnet Layer instance to "
                             f"wrap, received {layer!r}")

    def _inner(self):
        raise NotImplementedError  # abstract

    def inner_layers(self):
        try:
            return self._inner()
        except AttributeError:                  # in __init__, before the wrapped layers are set
            return []

    @property
    def weights(self):
        return [w for la in self._inner() for w in la.weights]

    @property
    def per_sample(self):
        return all(la.per_sample for la in self._inner())

    def build(self, input_shape):
        if not self.trainable:          # a wrapper made frozen freezes what it wraps, which exists from now on
            self.trainable = False


class Bidirectional(_Wrapper):
    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        super().__init__(layer, **kwargs)
        where = f"Bidirectional layer '{self.name}'"
        if merge_mode not in MERGE_MODES:
            raise ValueError(f"{where} expects merge_mode in {MERGE_MODES}, received {merge_mode!r}")
        if not hasattr(layer, "go_backwards"):
            raise ValueError(f"{where} expects a recurrent layer (SimpleRNN, LSTM, GRU), received "
                             f"{type(layer).__name__} '{layer.name}'")
        spec = _serialize(layer)
        spec["config"]["name"] = "forward_" + layer.name.removeprefix("forward_")
        self.forward_layer = _deserialize(spec)
        if backward_layer is None:
            spec = _serialize(layer)
            spec["config"].update(name="backward_" + layer.name.removeprefix("backward_"),
                                  go_backwards=not layer.go_backwards)
            backward_layer = _deserialize(spec)
        elif not isinstance(backward_layer, Layer):
            raise TypeError(f"{where} expects backward_layer to be a Layer, received {backward_layer!r}")
        self.backward_layer = backward_layer
        f, b = self.forward_layer, self.backward_layer
        if f.go_backwards == b.go_backwards:
            raise ValueError(f"{where}: the forward and backward layers need different go_backwards, received "
                             f"{f.go_backwards} for both")
        for attr in ("return_sequences", "return_state"):
            if getattr(f, attr) != getattr(b, attr):
                raise ValueError(f"{where}: the forward and backward layers need the same {attr}, received "
                                 f"{getattr(f, attr)} and {getattr(b, attr)}")
        self.merge_mode = merge_mode
        self.return_sequences, self.return_state = f.return_sequences, f.return_state
        self.multi_output = self.return_state or merge_mode is None
        self._initial_weights = weights

    def _inner(self):
        return [self.forward_layer, self.backward_layer]

    def validate_input_shape(self, input_shape):
        self.forward_layer.validate_input_shape(input_shape)

    def build(self, input_shape):
        self.forward_layer.build_for(input_shape)
        self.backward_layer.build_for(input_shape)
        super().build(input_shape)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def compute_output_shape(self, input_shape):
        f = self.forward_layer.compute_output_shape(input_shape)
        out, states = (f[0], list(f[1:])) if self.return_state else (f, [])
        if self.merge_mode == "concat":
            out = [out[:-1] + (2 * out[-1],)]
        elif self.merge_mode is None:
            out = [out, out]
        else:
            out = [out]
        return out + states + states if self.multi_output else out[0]

    def call(self, x, training=False):
        y, yb = self.forward_layer.call(x, training), self.backward_layer.call(x, training)
        states = []
        if self.return_state:
            states = list(y[1:]) + list(yb[1:])
            y, yb = y[0], yb[0]
        if self.return_sequences:
            yb = yb[:, ::-1]                                   # back to forward time order
        self._y, self._yb = y, yb
        mode = self.merge_mode
        if mode is None:
            out = [y, yb]
        else:
            shape = y.shape[:-1] + (2 * y.shape[-1],) if mode == "concat" else y.shape
            merged = self.workspace("out", shape, y.dtype)
            if mode == "concat":
                np.concatenate([y, yb], axis=-1, out=merged)
            elif mode == "mul":
                np.multiply(y, yb, out=merged)
            else:
                np.add(y, yb, out=merged)
                if mode == "ave":
                    merged *= merged.dtype.type(0.5)
            out = [merged]
        return out + states if self.multi_output else out[0]

    def backward(self, grad, need_input_grad=True):
        grads = list(grad) if self.multi_output else [grad]
        k = 2 if self.merge_mode is None else 1
        g_outs, g_states = grads[:k], grads[k:]
        gf, gb = self._split(g_outs)
        if gb is not None and self.return_sequences:
            gb = gb[:, ::-1]                                   # into the backward layer's own time order
        n_states = len(g_states) // 2
        if self.return_state:
            gf, gb = [gf] + g_states[:n_states], [gb] + g_states[n_states:]
        dx = self.forward_layer.backward(gf, need_input_grad)
        dxb = self.backward_layer.backward(gb, need_input_grad)
        if not need_input_grad:
            return None
        out = self.workspace("dx", dx.shape, dx.dtype)
        return np.add(dx, dxb, out=out)

    def _split(self, g_outs):
        """d/d(merged output) -> (d/dy, d/dyb); computed before either inner layer runs backward (their
        outputs y, yb live in their workspaces)."""
        mode = self.merge_mode
        if mode is None:
            return g_outs[0], g_outs[1]
        g = g_outs[0]
        if g is None:
            return None, None
        if mode == "concat":
            u = g.shape[-1] // 2
            return g[..., :u], g[..., u:]
        if mode == "mul":
            gf = np.multiply(g, self._yb, out=self.workspace("gf", g.shape, g.dtype))
            return gf, np.multiply(g, self._y, out=self.workspace("gb", g.shape, g.dtype))
        if mode == "ave":
            g = np.multiply(g, g.dtype.type(0.5), out=self.workspace("gf", g.shape, g.dtype))
        return g, g

    def get_config(self):
        config = {**super().get_config(), "layer": _serialize(self.forward_layer), "merge_mode": self.merge_mode}
        config["layer"]["config"]["name"] = self.forward_layer.name.removeprefix("forward_")
        config["backward_layer"] = _serialize(self.backward_layer)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layer = _deserialize(config.pop("layer"))
        backward = config.pop("backward_layer", None)
        return cls(layer, backward_layer=None if backward is None else _deserialize(backward), **config)


class TimeDistributed(_Wrapper):
    def __init__(self, layer, **kwargs):
        super().__init__(layer, **kwargs)
        if layer.multi_input or layer.multi_output:
            raise ValueError(f"TimeDistributed layer '{self.name}' wraps single-input, single-output layers, "
                             f"received {type(layer).__name__} '{layer.name}'")
        self.layer = layer

    def _inner(self):
        return [self.layer]

    def validate_input_shape(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(f"TimeDistributed layer '{self.name}' expects input of rank >= 3 (batch, timesteps, "
                             f"...), received shape {(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        self.layer.build_for(input_shape[1:])
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(self.layer.compute_output_shape(input_shape[1:]))

    def call(self, x, training=False):
        n, T = x.shape[:2]
        y = self.layer.call(x.reshape((n * T,) + x.shape[2:]), training)
        return y.reshape((n, T) + y.shape[1:])

    def backward(self, grad, need_input_grad=True):
        n, T = grad.shape[:2]
        dx = self.layer.backward(grad.reshape((n * T,) + grad.shape[2:]), need_input_grad)
        return None if dx is None else dx.reshape((n, T) + self.input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "layer": _serialize(self.layer)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(_deserialize(config.pop("layer")), **config)
