"""Global numeric settings (Keras's `keras.config`): the default float type and the epsilon fuzz factor."""
import numpy as np

_FLOATX = "float32"
_EPSILON = 1e-7


def floatx():
    """The default float type of new weights and computations: 'float32' (default) or 'float64'."""
    return _FLOATX


def set_floatx(value):
    """Set the default float type; 'float64' exists for gradient checks."""
    global _FLOATX
    if value not in ("float32", "float64"):
        raise ValueError(f"set_floatx expects 'float32' or 'float64', received {value!r}")
    _FLOATX = value


def epsilon():
    return _EPSILON


def as_float(x, dtype=None):
    """`x` as a float array of the default dtype, copying only when the dtype differs."""
    return np.asarray(x, dtype=dtype or _FLOATX)
