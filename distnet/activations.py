"""Activation functions with Keras's names and defaults.

An activation is a pair: `forward(z, out=None) -> a` and `backward(z, a, grad_a) -> grad_z`. Activations whose
derivative can be computed from the output alone (`from_output = True`: relu, sigmoid, tanh, softmax, linear,
elu) let a layer apply them in place over z's buffer and keep only a; their backward then receives z=None.
backward may overwrite and return `grad` (the layer owns it): no temporaries on the hot path.
"""
import math

import numpy as np


class Activation:
    name = None
    from_output = False

    def forward(self, z, out=None):
        raise NotImplementedError  # abstract

    def backward(self, z, a, grad):
        """grad_z from grad_a; may overwrite and return grad."""
        raise NotImplementedError  # abstract

    def __call__(self, z):
        return self.forward(np.asarray(z))

    def __repr__(self):
        return f"<activation {self.name}>"


class Linear(Activation):
    name = "linear"
    from_output = True

    def forward(self, z, out=None):
        if out is not None and out is not z:
            out[...] = z
            return out
        return z

    def backward(self, z, a, grad):
        return grad


class ReLU(Activation):
    name = "relu"
    from_output = True

    def forward(self, z, out=None):
        # contiguous: over the flat array with a scalar 0 (one long inner loop; on (32, 32, 32, 16) 0.14 ms
        # against 0.25 with a row of 16 zeros); else against a broadcast row of zeros, ~1.5x faster than a scalar
        if z.flags.c_contiguous and (out is None or out.flags.c_contiguous):
            flat = np.maximum(z.reshape(-1), z.dtype.type(0), out=None if out is None else out.reshape(-1))
            return flat.reshape(z.shape) if out is None else out
        return np.maximum(z, _zero_row(z), out=out)

    def backward(self, z, a, grad, mask=None):
        """a > 0 exactly where z > 0. mask: a boolean buffer like a for the comparison (the layer's own, so the
        step allocates nothing); without it a temporary is used. (np.sign would need no buffer but measured
        60x slower than greater + multiply.)"""
        return np.multiply(grad, np.greater(a, 0, out=mask), out=grad)


class Sigmoid(Activation):
    name = "sigmoid"
    from_output = True

    def forward(self, z, out=None):
        return _into(sigmoid(z), out)

    def backward(self, z, a, grad):
        grad *= a
        grad *= 1 - a
        return grad


class Tanh(Activation):
    name = "tanh"
    from_output = True

    def forward(self, z, out=None):
        return np.tanh(z, out=out)

    def backward(self, z, a, grad):
        grad *= 1 - a * a
        return grad


class Softmax(Activation):
    """Softmax over the last axis."""
    name = "softmax"
    from_output = True

    def forward(self, z, out=None):
        return _into(softmax(z), out)

    def backward(self, z, a, grad):
        return a * (grad - np.sum(grad * a, axis=-1, keepdims=True))


class LeakyReLU(Activation):
    name = "leaky_relu"

    def __init__(self, negative_slope=0.2):  # Keras 3's default slope
        self.negative_slope = negative_slope

    def forward(self, z, out=None):
        return _into(np.where(z > 0, z, z * z.dtype.type(self.negative_slope)), out)

    def backward(self, z, a, grad):
        return np.where(z > 0, grad, grad * grad.dtype.type(self.negative_slope))


class ELU(Activation):
    name = "elu"
    from_output = True

    def __init__(self, alpha=1.0):
        self.alpha = alpha

    def forward(self, z, out=None):
        return _into(np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0))).astype(z.dtype, copy=False), out)

    def backward(self, z, a, grad):     # a > 0 exactly where z > 0 (alpha > 0); elsewhere d/dz = a + alpha
        return np.where(a > 0, grad, grad * (a + a.dtype.type(self.alpha))).astype(grad.dtype, copy=False)


class SELU(Activation):
    name = "selu"
    alpha, scale = 1.6732632423543772, 1.0507009873554805

    def forward(self, z, out=None):
        return _into(self.scale * np.where(z > 0, z, self.alpha * np.expm1(np.minimum(z, 0))).astype(z.dtype), out)

    def backward(self, z, a, grad):
        return (grad * np.where(z > 0, self.scale, a + self.scale * self.alpha)).astype(grad.dtype)


class GELU(Activation):
    """x * Phi(x); exact (erf) by default as in Keras 3, or the tanh approximation."""
    name = "gelu"

    def __init__(self, approximate=False):
        self.approximate = approximate

    def forward(self, z, out=None):
        if self.approximate:
            return _into((0.5 * z * (1 + np.tanh(_SQRT_2_OVER_PI * (z + 0.044715 * z**3)))).astype(z.dtype), out)
        return _into((z * _normal_cdf(z)).astype(z.dtype, copy=False), out)

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

    def forward(self, z, out=None):
        return _into(np.logaddexp(z, 0).astype(z.dtype, copy=False), out)

    def backward(self, z, a, grad):
        return grad * sigmoid(z)


class Softsign(Activation):
    name = "softsign"

    def forward(self, z, out=None):
        return _into(z / (1 + np.abs(z)), out)

    def backward(self, z, a, grad):
        return grad / (1 + np.abs(z)) ** 2


class SiLU(Activation):
    name = "silu"

    def forward(self, z, out=None):
        return _into(z * sigmoid(z), out)

    def backward(self, z, a, grad):
        s = sigmoid(z)
        return grad * (s + z * s * (1 - s))


class Exponential(Activation):
    name = "exponential"

    def forward(self, z, out=None):
        return np.exp(z, out=out)

    def backward(self, z, a, grad):
        return grad * a


_ZERO_ROWS = {}


def _zero_row(z):
    key = (z.dtype, z.shape[-1] if z.ndim else 1)
    row = _ZERO_ROWS.get(key)
    if row is None:
        row = _ZERO_ROWS[key] = np.zeros(key[1], z.dtype)
    return row


def _into(value, out):
    if out is None:
        return value
    out[...] = value
    return out


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
    """erf with |error| < 1.2e-7 (Numerical Recipes' Chebyshev fit of erfc; NumPy has no erf), below float32's
    resolution; in float64, math.erf per element (exact to float64, ~50x slower): the fit's error would show as
    ~1e-6 in derivatives, which float64 gradient checks resolve."""
    x = np.asarray(x)
    if x.dtype == np.float64:
        return _erf64(x)
    t = 1.0 / (1.0 + 0.5 * np.abs(x))
    poly = -x * x - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    erfc = t * np.exp(poly)
    return np.where(x >= 0, 1 - erfc, erfc - 1)


_erf64 = np.vectorize(math.erf, otypes=[np.float64])


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


