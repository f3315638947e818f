"""Activation functions with Keras's names and defaults.

An activation is a pair: `forward(z) -> a` and `backward(z, a, grad_a) -> grad_z`. Layers keep both z and a
from the forward pass, so each backward uses whichever is cheaper (sigmoid from a, relu from z).
"""
import numpy as np


class Activation:
    name = None

    def forward(self, z):
        raise NotImplementedError  # abstract

    def backward(self, z, a, grad):
        raise NotImplementedError  # abstract

    def __call__(self, z):
        return self.forward(np.asarray(z))

    def __repr__(self):
        return f"<activation {self.name}>"


class Linear(Activation):
    name = "linear"

    def forward(self, z):
        return z

    def backward(self, z, a, grad):
        return grad


class ReLU(Activation):
    name = "relu"

    def forward(self, z):
        return np.maximum(z, 0, dtype=z.dtype)

    def backward(self, z, a, grad):
        return grad * (z > 0)


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, z):
        return sigmoid(z)

    def backward(self, z, a, grad):
        return grad * a * (1 - a)


class Tanh(Activation):
    name = "tanh"

    def forward(self, z):
        return np.tanh(z)

    def backward(self, z, a, grad):
        return grad * (1 - a * a)


class Softmax(Activation):
    """Softmax over the last axis."""
    name = "softmax"

    def forward(self, z):
        return softmax(z)

    def backward(self, z, a, grad):
        return a * (grad - np.sum(grad * a, axis=-1, keepdims=True))


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, negative_slope=0.2):  # Keras 3's default slope
        self.negative_slope = negative_slope

    def forward(self, z):
        return np.where(z > 0, z, z * z.dtype.type(self.negative_slope))

    def backward(self, z, a, grad):
        return np.where(z > 0, grad, grad * grad.dtype.type(self.negative_slope))


class ELU(Activation):
    name = "elu"

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def forward(self, z):
        return np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0))).astype(z.dtype, copy=False)

    def backward(self, z, a, grad):
        return np.where(z > 0, grad, grad * (a + self.alpha)).astype(grad.dtype, copy=False)


class SELU(Activation):
    name = "selu"
    alpha, scale = 1.6732632423543772, 1.0507009873554805

    def forward(self, z):
        return (self.scale * np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0)))).astype(z.dtype)

    def backward(self, z, a, grad):
        return (grad * np.where(z > 0, self.scale, a + self.scale * self.alpha)).astype(grad.dtype)


class GELU(Activation):
    """x * Phi(x); exact (erf) by default as in Keras 3, or the tanh approximation."""
    name = "gelu"

    def __init__(self, approximate=False):
        self.approximate = approximate

    def forward(self, z):
        if self.approximate:
            return (0.5 * z * (1 + np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3)))).astype(z.dtype)
        return (z * _normal_cdf(z)).astype(z.dtype, copy=False)

    def backward(self, z, a, grad):
        if self.approximate:
            u = _SQRT_2_OVER_PI * (z + 0.044715 * z**3)
            t = np.tanh(u)
            du = _SQRT_2_OVER_PI * (1 + 3 * 0.044715 * z**2)
            d = 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du
        else:
            d = _normal_cdf(z) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
        return (grad * d).astype(grad.dtype, copy=False)


class Softplus(Activation):
    name = "softplus"

    def forward(self, z):
        return np.logaddexp(z, 0).astype(z.dtype, copy=False)

    def backward(self, z, a, grad):
        return grad * sigmoid(z)


class Softsign(Activation):
    name = "softsign"

    def forward(self, z):
        return z / (1 + np.abs(z))

    def backward(self, z, a, grad):
        return grad / (1 + np.abs(z)) ** 2


class SiLU(Activation):
    name = "silu"

    def forward(self, z):
        return z * sigmoid(z)

    def backward(self, z, a, grad):
        s = sigmoid(z)
        return grad * (s + z * s * (1 - s))


class Exponential(Activation):
    name = "exponential"

    def forward(self, z):
        return np.exp(z)

    def backward(self, z, a, grad):
        return grad * a


def sigmoid(z):
    """Numerically stable logistic function: never overflows exp for large |z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype, copy=False)


def softmax(z):
    """Softmax over the last axis, shifted by the max so exp never overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


_SQRT_2_OVER_PI = float(np.sqrt(2 / np.pi))


def _erf(x):
    """erf with |error| < 1.2e-7 (Numerical Recipes' Chebyshev fit of erfc); NumPy has no erf."""
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    poly = -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1 - erfc, erfc - 1)


def _normal_cdf(x):
    return 0.5 * (1 + _erf(x / np.sqrt(2)))


_BY_NAME = {cls.name: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Softmax, LeakyReLU, ELU, SELU, GELU,
                                        Softplus, Softsign, SiLU, Exponential)}
_ALIASES = {"swish": "silu", None: "linear"}


def get(identifier):
    """An Activation from a Keras name ('relu'), None (linear), an Activation, or a plain callable."""
    if isinstance(identifier, Activation):
        return identifier
    name = _ALIASES.get(identifier, identifier)
    if isinstance(name, str) and name in _BY_NAME:
        return _BY_NAME[name]()
    if callable(identifier):
        raise ValueError(f"Activation {identifier!r} is a plain callable; distnet needs its derivative too. "
                         "Pass a name or a distnet.activations.Activation subclass with forward/backward.")
    raise ValueError(f"Unknown activation {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def serialize(act):
    return act.name


