"""Core layers: Input, Dense, Activation, Dropout, Flatten, Reshape."""
import math

import numpy as np

from .. import activations, initializers
from .base import ActivatedLayer, Layer, sum_rows
from .symbolic import SymbolicTensor


class InputLayer(Layer):
    """Where data enters a model: declares its shape (without the batch dimension). `Input(...)` makes one and
    returns its symbolic output tensor."""
    per_sample = True

    def __init__(self, shape=None, name=None, input_shape=None, batch_size=None, **kwargs):
        shape = shape if shape is not None else input_shape
        if shape is None:
            raise ValueError("Input needs shape=(...) without the batch dimension, received None")
        super().__init__(name=name, input_shape=shape, **kwargs)
        self.batch_size = batch_size

    def call(self, x, training=False):
        return x

    def backward(self, grad, need_input_grad=True):
        return grad

    def get_config(self):
        config = super().get_config()
        config["shape"] = config.pop("input_shape")
        return config


def Input(shape=None, batch_size=None, name=None, dtype=None):
    """`distnet.Input(shape=(8,))`: the symbolic tensor a functional model starts from (Keras 3's `keras.Input`);
    also accepted as the first entry of a Sequential."""
    layer = InputLayer(shape=shape, batch_size=batch_size, name=name, dtype=dtype)
    layer.output_shape = layer.input_shape = layer.declared_input_shape
    layer.built = True
    return SymbolicTensor(layer.declared_input_shape, layer.dtype, layer)


class Dense(ActivatedLayer):
    """y = activation(x @ kernel + bias). x: (batch, ..., in) -> (batch, ..., units); kernel: (in, units)."""
    per_sample = True

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or units <= 0:
            raise ValueError(f"Dense layer '{self.name}' expects units to be a positive int, received {units!r}")
        self.units = int(units)
        self._kernel_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                             bias_regularizer)

    def validate_input_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Dense layer '{self.name}' expects input of rank >= 2, received shape "
                             f"{(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        in_dim = input_shape[-1]
        self.kernel = self.add_weight("kernel", (in_dim, self.units), self.kernel_initializer,
                                      self.kernel_regularizer)
        self.bias = self.add_weight("bias", (self.units,), self.bias_initializer,
                                    self.bias_regularizer) if self.use_bias else None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def check_input(self, x):
        if x.ndim >= 2 and x.shape[-1] != self.input_shape[-1]:
            raise ValueError(f"Dense layer '{self.name}' expects input with last dimension "
                             f"{self.input_shape[-1]}, received shape {x.shape}")
        if x.shape[1:] != self.input_shape:
            self._shape_error(x.shape[1:], x.shape)

    def call(self, x, training=False):
        self._x = x
        z = self.workspace("z", x.shape[:-1] + (self.units,))
        np.matmul(x.reshape(-1, x.shape[-1]), self.kernel.value, out=z.reshape(-1, self.units))
        if self.bias is not None:
            z += self.bias.value
        return self._activate(z)

    def backward_preactivation(self, grad_z, need_input_grad=True):
        g2 = grad_z.reshape(-1, self.units)
        x2 = self._x.reshape(-1, self._x.shape[-1])
        if self.kernel.grad is not None:
            np.matmul(x2.T, g2, out=self.kernel.grad)
        if self.bias is not None and self.bias.grad is not None:
            sum_rows(g2, self.bias.grad, self)
        if need_input_grad:
            dx = self.workspace("dx", self._x.shape)
            np.matmul(g2, self.kernel.value.T, out=dx.reshape(-1, x2.shape[1]))
            return dx
        return None

    def get_config(self):
        return {**super().get_config(), "units": self.units, **self._kernel_config()}


class Activation(ActivatedLayer):
    per_sample = True
    overwrites_input = True

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)

    def call(self, x, training=False):
        return self._activate(x, owned=False)    # x belongs to the previous layer: never overwrite it

    def call_in_place(self, x, training, owned):
        """The activation over x's own buffer (a ReLU after BatchNormalization or Add in a ResNet): no
        buffer of this layer's written cold."""
        return self._activate(x, owned=True)

    def backward_preactivation(self, grad_z, need_input_grad=True):
        return grad_z

    def get_config(self):
        return {**super().get_config(), "activation": activations.serialize(self.activation)}


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability `rate` and scale the rest by 1/(1-rate)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout layer '{self.name}' expects 0 <= rate < 1, received {rate!r}")
        self.rate, self.noise_shape, self.seed = float(rate), noise_shape, seed
        self.generator = np.random.default_rng(seed if seed is not None else initializers.generator().integers(2**63))
        self._mask = None

    @property
    def per_sample(self):
        """A batch cut in blocks draws the same numbers as the whole batch (one generator, drawn in row-major
        order, batch first), unless noise_shape gives the batch a mask of its own size (e.g. one for all)."""
        return self.noise_shape is None or self.noise_shape[0] is None

    def call(self, x, training=False):
        if not training or self.rate == 0:
            self._mask = None
            return x
        shape = x.shape if self.noise_shape is None else tuple(
            x.shape[i] if d is None else d for i, d in enumerate(self.noise_shape))
        keep = self.generator.random(shape, dtype=np.float32) >= self.rate
        self._mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.rate))
        return np.multiply(x, self._mask, out=self.workspace("out", x.shape))

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        return grad if self._mask is None else np.multiply(grad, self._mask, out=grad)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "noise_shape": self.noise_shape, "seed": self.seed}


class Flatten(Layer):
    per_sample = True

    def compute_output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def call(self, x, training=False):
        return x.reshape((x.shape[0],) + self.output_shape)   # explicit: a worker's batch may be empty

    def backward(self, grad, need_input_grad=True):
        return grad.reshape((grad.shape[0],) + self.input_shape) if need_input_grad else None


class Reshape(Layer):
    per_sample = True

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        target_shape = tuple(target_shape)
        if sum(d == -1 for d in target_shape) > 1 or any(d == 0 or d < -1 for d in target_shape):
            raise ValueError(f"Reshape layer '{self.name}' expects a target_shape of positive ints and at most "
                             f"one -1, received {target_shape!r}")
        self.target_shape = target_shape

    def validate_input_shape(self, input_shape):
        n, known = math.prod(input_shape), math.prod(d for d in self.target_shape if d != -1)
        ok = n % known == 0 if -1 in self.target_shape else n == known
        if not ok:
            raise ValueError(f"Reshape layer '{self.name}' cannot reshape input of shape "
                             f"{(None,) + tuple(input_shape)} ({n} values per sample) to {self.target_shape}")

    def compute_output_shape(self, input_shape):
        n, known = math.prod(input_shape), math.prod(d for d in self.target_shape if d != -1)
        return tuple(n // known if d == -1 else d for d in self.target_shape)

    def call(self, x, training=False):
        return x.reshape((x.shape[0],) + self.output_shape)

    def backward(self, grad, need_input_grad=True):
        return grad.reshape((grad.shape[0],) + self.input_shape) if need_input_grad else None

    def get_config(self):
        return {**super().get_config(), "target_shape": list(self.target_shape)}


__all__ = ["InputLayer", "Input", "Dense", "Activation", "Dropout", "Flatten", "Reshape"]
