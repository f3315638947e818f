"""Small user-facing helpers with Keras's names."""
import random

import numpy as np

_SEED = None


def set_random_seed(seed):
    """Seed Python, NumPy and distnet's own generators so runs repeat (Keras's `keras.utils.set_random_seed`)."""
    global _SEED
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"set_random_seed expects a non-negative int, received {seed!r}")
    _SEED = int(seed)
    random.seed(_SEED)
    np.random.seed(_SEED % 2**32)
    from . import initializers
    initializers.reset_generator(_SEED)


def get_seed():
    """The seed given to set_random_seed, or None."""
    return _SEED


def to_categorical(y, num_classes=None, dtype="float32"):
    """One-hot encode integer labels: y: (n,) -> (n, num_classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"to_categorical expects labels of shape (n,), received shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("to_categorical expects integer labels, received non-integer values")
        y = y.astype(np.int64)
    if num_classes is None:
        num_classes = int(y.max()) + 1 if y.size else 0
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"to_categorical: labels must lie in [0, {num_classes}), "
                         f"received values from {y.min()} to {y.max()}")
    out = np.zeros((y.shape[0], num_classes), dtype=dtype)
    out[np.arange(y.shape[0]), y] = 1
    return out
