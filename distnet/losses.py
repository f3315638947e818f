"""Losses with Keras's names. Each gives per-sample losses and d(loss_i)/d(y_pred_i) per sample, NOT divided by
the batch size: workers sum these, the reducer divides by the global sample count (global-batch semantics).

Cross-entropies also offer `from_logits_pair(y, z)`: loss and gradient with respect to the logits z. The model
uses it when the last layer ends in softmax/sigmoid, which is both exact (p - y) and immune to saturation.
"""
import math

import numpy as np

from . import backend
from .activations import log_softmax, softmax


class Loss:
    name = None
    fuses_with = None   # the output activation whose logits this loss can take directly

    def __init__(self, name=None):
        self.name = name or self.name

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The weighted mean loss, as `keras.losses.X()(y_true, y_pred)` returns it."""
        y_pred = np.asarray(y_pred)
        y_true = self.prepare_targets(np.asarray(y_true), y_pred.shape[1:])
        losses = self.per_sample(y_true, y_pred)
        if sample_weight is not None:
            losses = losses * np.asarray(sample_weight).reshape(-1)
        return float(losses.mean()) if losses.size else 0.0

    def prepare_targets(self, y, output_shape):
        """Check once, before training, that labels fit this loss and the model's output; return them in the
        form per_sample/grad expect. output_shape excludes the batch dimension."""
        return _dense_targets(self.name, y, output_shape)

    def per_sample(self, y_true, y_pred):
        raise NotImplementedError  # abstract

    def grad(self, y_true, y_pred):
        raise NotImplementedError  # abstract

    def get_config(self):
        return {"name": self.name}


def _dense_targets(name, y, output_shape):
    """Labels shaped like the model's output, in the model's float type (float64 labels must not upcast the
    float32 gradient computation)."""
    output_shape = tuple(output_shape)
    y = y.astype(backend.floatx(), copy=False)
    if y.shape[1:] == output_shape:
        return y
    if y.shape[1:] in ((), (1,)) and output_shape in ((), (1,)):
        return y.reshape((y.shape[0],) + output_shape)
    raise ValueError(f"Loss '{name}' expects labels of shape {(None,) + output_shape} to match the model's output, "
                     f"received labels of shape {y.shape}")


def _per_sample_mean(v):
    if v.ndim == 1:
        return v
    d = _features(v)
    return v.reshape(v.shape[0]) if d == 1 else v.reshape(v.shape[0], d).mean(axis=1)


def _features(y):
    return math.prod(y.shape[1:])


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def per_sample(self, y_true, y_pred):
        return _per_sample_mean(np.square(y_pred - y_true))

    def grad(self, y_true, y_pred):
        return (y_pred - y_true) * y_pred.dtype.type(2.0 / _features(y_pred))


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def per_sample(self, y_true, y_pred):
        return _per_sample_mean(np.abs(y_pred - y_true))

    def grad(self, y_true, y_pred):
        return np.sign(y_pred - y_true).astype(y_pred.dtype) * y_pred.dtype.type(1.0 / _features(y_pred))


class Huber(Loss):
    name = "huber_loss"

    def __init__(self, delta=1.0, name=None):
        super().__init__(name)
        self.delta = float(delta)

    def per_sample(self, y_true, y_pred):
        e = np.abs(y_pred - y_true)
        d = self.delta
        return _per_sample_mean(np.where(e <= d, 0.5 * e * e, d * e - 0.5 * d * d))

    def grad(self, y_true, y_pred):
        e = y_pred - y_true
        return (np.clip(e, -self.delta, self.delta) / _features(y_pred)).astype(y_pred.dtype)

    def get_config(self):
        return {"name": self.name, "delta": self.delta}


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    fuses_with = "sigmoid"

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None):
        super().__init__(name)
        self.from_logits, self.label_smoothing = from_logits, float(label_smoothing)

    def prepare_targets(self, y, output_shape):
        y = _dense_targets(self.name, y, output_shape).astype(backend.floatx(), copy=False)
        if y.size and (np.nanmin(y) < 0 or np.nanmax(y) > 1):
            raise ValueError(f"Loss '{self.name}' expects labels in [0, 1], received values from {np.nanmin(y)} "
                             f"to {np.nanmax(y)}")
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return y

    def per_sample(self, y_true, y_pred):
        if self.from_logits:
            return self.from_logits_pair(y_true, y_pred)[0]
        eps = backend.epsilon()
        p = np.clip(y_pred, eps, 1 - eps)
        return _per_sample_mean(-(y_true * np.log(p + eps) + (1 - y_true) * np.log(1 - p + eps)))

    def grad(self, y_true, y_pred):
        if self.from_logits:
            return self.from_logits_pair(y_true, y_pred)[1]
        eps = backend.epsilon()
        inside = (y_pred > eps) & (y_pred < 1 - eps)
        p = np.clip(y_pred, eps, 1 - eps)
        g = (-(y_true / (p + eps)) + (1 - y_true) / (1 - p + eps)) * inside
        return (g / _features(y_pred)).astype(y_pred.dtype)

    def from_logits_pair(self, y_true, z):
        """Per-sample loss and d/dz for logits z: max(z,0) - z*y + log(1 + exp(-|z|)); d/dz = sigmoid(z) - y."""
        e = np.exp(-np.abs(z))                       # shared by the loss and the sigmoid
        losses = _per_sample_mean(np.maximum(z, 0) - z * y_true + np.log1p(e))
        p = np.where(z >= 0, 1, e) / (1 + e)
        p -= y_true
        d = _features(z)
        if d != 1:
            p /= d
        return losses, p.astype(z.dtype, copy=False)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"
    fuses_with = "softmax"

    def __init__(self, from_logits=False, label_smoothing=0.0, name=None):
        super().__init__(name)
        self.from_logits, self.label_smoothing = from_logits, float(label_smoothing)

    def prepare_targets(self, y, output_shape):
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and output_shape[-1] > 1):
            raise ValueError(f"Loss '{self.name}' expects one-hot labels of shape {(None,) + tuple(output_shape)}, "
                             f"received integer-like labels of shape {y.shape}; use "
                             "'sparse_categorical_crossentropy' or distnet.utils.to_categorical")
        y = _dense_targets(self.name, y, output_shape).astype(backend.floatx(), copy=False)
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + self.label_smoothing / y.shape[-1]
        return y

    def _onehot(self, y_true, like):
        return y_true

    def per_sample(self, y_true, y_pred):
        if self.from_logits:
            return self.from_logits_pair(y_true, y_pred)[0]
        y = self._onehot(y_true, y_pred)
        eps = backend.epsilon()
        q = np.clip(y_pred / y_pred.sum(axis=-1, keepdims=True), eps, 1 - eps)
        return -np.sum(y * np.log(q), axis=-1)

    def grad(self, y_true, y_pred):
        if self.from_logits:
            return self.from_logits_pair(y_true, y_pred)[1]
        y = self._onehot(y_true, y_pred)
        eps = backend.epsilon()
        s = y_pred.sum(axis=-1, keepdims=True)
        q = y_pred / s
        inside = (q > eps) & (q < 1 - eps)
        dq = -y / np.clip(q, eps, 1 - eps) * inside           # dL/dq
        # q = p / sum(p): dL/dp_j = (dq_j - sum_k dq_k q_k) / s
        return ((dq - np.sum(dq * q, axis=-1, keepdims=True)) / s).astype(y_pred.dtype)

    def from_logits_pair(self, y_true, z):
        """Per-sample loss -sum(y * log_softmax(z)) and d/dz = softmax(z) * sum(y) - y."""
        y = self._onehot(y_true, z)
        losses = -np.sum(y * log_softmax(z), axis=-1)
        return losses, softmax(z) * y.sum(axis=-1, keepdims=True) - y

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Categorical cross-entropy with integer labels y: (batch,) in [0, classes)."""
    name = "sparse_categorical_crossentropy"

    def __init__(self, from_logits=False, name=None):
        super().__init__(from_logits=from_logits, name=name)

    def prepare_targets(self, y, output_shape):
        classes = output_shape[-1]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"Loss '{self.name}' expects integer labels of shape (None,) or (None, 1), received "
                             f"labels of shape {y.shape}; use 'categorical_crossentropy' for one-hot labels")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(np.mod(y, 1) == 0):
                raise ValueError(f"Loss '{self.name}' expects integer class labels, received non-integer values "
                                 f"(dtype {y.dtype})")
        y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= classes):
            raise ValueError(f"Loss '{self.name}' expects labels in [0, {classes}) for a model with {classes} "
                             f"outputs, received labels from {y.min()} to {y.max()}")
        return y

    def _onehot(self, y_true, like):
        onehot = np.zeros(like.shape, like.dtype)
        onehot[np.arange(like.shape[0]), y_true] = 1
        return onehot

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}


_BY_NAME = {
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
}
_CLASSES = {cls.__name__: cls for cls in set(_BY_NAME.values())}


def get(identifier):
    """A Loss from a Keras name, a Loss instance, or a serialized dict."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(f"Unknown loss {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def serialize(loss):
    return {"class_name": type(loss).__name__, "config": loss.get_config()}
