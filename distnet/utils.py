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


def normalize(x, axis=-1, order=2):
    """x divided by its `order`-norm along `axis` (Keras's `keras.utils.normalize`); zero vectors stay zero."""
    x = np.asarray(x)
    norm = np.atleast_1d(np.linalg.norm(x, order, axis))
    norm[norm == 0] = 1
    return x / np.expand_dims(norm, axis)


def pad_sequences(sequences, maxlen=None, dtype="int32", padding="pre", truncating="pre", value=0.0):
    """Lists of token ids -> one (n, maxlen) array, padded with `value` and cut to `maxlen` (Keras's
    `keras.utils.pad_sequences`): padding/truncating 'pre' work at the start of a sequence, 'post' at its end."""
    for arg, v in (("padding", padding), ("truncating", truncating)):
        if v not in ("pre", "post"):
            raise ValueError(f"pad_sequences expects {arg} 'pre' or 'post', received {v!r}")
    sequences = [np.asarray(s) for s in sequences]
    if maxlen is None:
        maxlen = max((len(s) for s in sequences), default=0)
    out = np.full((len(sequences), maxlen), value, dtype=dtype)
    for i, s in enumerate(sequences):
        s = s[-maxlen:] if truncating == "pre" else s[:maxlen]
        if maxlen and len(s):
            if padding == "post":
                out[i, :len(s)] = s
            else:
                out[i, -len(s):] = s
    return out


def register_keras_serializable(package="Custom", name=None):
    """Keras's decorator for custom classes: a distnet Layer subclass becomes loadable by `load_model` under its
    class name (distnet's registry has no packages, so `package` and `name` are accepted and not used)."""
    def register(cls):
        from .layers import Layer, register as register_layer
        return register_layer(cls) if isinstance(cls, type) and issubclass(cls, Layer) else cls
    return register
