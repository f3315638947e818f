"""Metrics with Keras's names. A metric maps a batch to per-sample values; the model accumulates weighted sums
(sum of w*value, sum of w) over the epoch and, under data parallelism, over all workers, so the number shown
is the exact mean over every sample seen, as if one process had seen them all."""
import math

import numpy as np

from . import losses as losses_mod


class Metric:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def values(self, y_true, y_pred):
        """Per-sample metric values: (batch,)."""
        return self.fn(y_true, y_pred)

    def __call__(self, y_true, y_pred):
        v = self.values(np.asarray(y_true), np.asarray(y_pred))
        return float(v.mean()) if v.size else 0.0

    def __repr__(self):
        return f"<Metric {self.name}>"


def binary_accuracy(y_true, y_pred, threshold=0.5):
    hit = (y_pred > threshold) == (y_true > 0.5)
    d = math.prod(hit.shape[1:])
    return hit.reshape(hit.shape[0]) if d == 1 else hit.reshape(hit.shape[0], d).mean(axis=1)


def categorical_accuracy(y_true, y_pred):
    return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float32)


def sparse_categorical_accuracy(y_true, y_pred):
    return (np.argmax(y_pred, axis=-1) == y_true.reshape(-1)).astype(np.float32)


def _loss_metric(loss_cls):
    loss = loss_cls()
    return lambda y_true, y_pred: loss.per_sample(y_true, y_pred)


_FNS = {
    "binary_accuracy": binary_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "mean_squared_error": _loss_metric(losses_mod.MeanSquaredError),
    "mean_absolute_error": _loss_metric(losses_mod.MeanAbsoluteError),
    "binary_crossentropy": _loss_metric(losses_mod.BinaryCrossentropy),
    "categorical_crossentropy": _loss_metric(losses_mod.CategoricalCrossentropy),
}
_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
_ACCURACY = ("accuracy", "acc")


def resolve_accuracy(loss, output_shape, sparse_labels):
    """Which accuracy 'accuracy' means, the way Keras decides: from the loss, else from the shapes."""
    if isinstance(loss, losses_mod.SparseCategoricalCrossentropy):
        return "sparse_categorical_accuracy"
    if isinstance(loss, losses_mod.CategoricalCrossentropy):
        return "categorical_accuracy"
    if isinstance(loss, losses_mod.BinaryCrossentropy) or output_shape[-1:] in ((1,), ()):
        return "binary_accuracy"
    return "sparse_categorical_accuracy" if sparse_labels else "categorical_accuracy"


def get(identifier, loss=None, output_shape=None, sparse_labels=False):
    """A Metric from a Keras name. 'accuracy'/'acc' is resolved against the loss and output shape; the history
    key is the name the user wrote, as in Keras."""
    if isinstance(identifier, Metric):
        return identifier
    if not isinstance(identifier, str):
        raise ValueError(f"Unknown metric {identifier!r}; pass a name or a distnet.metrics.Metric")
    if identifier in _ACCURACY:
        return Metric(identifier, _FNS[resolve_accuracy(loss, output_shape, sparse_labels)])
    key = _ALIASES.get(identifier, identifier)
    if key not in _FNS:
        valid = sorted(set(_FNS) | set(_ALIASES) | set(_ACCURACY))
        raise ValueError(f"Unknown metric {identifier!r}; valid names: {', '.join(valid)}")
    return Metric(identifier, _FNS[key])


def _metric_class(class_name, fn_name):
    def __init__(self, name=fn_name, dtype=None):
        Metric.__init__(self, name, _FNS[fn_name])
    return type(class_name, (Metric,), {"__init__": __init__, "__doc__": f"Keras's keras.metrics.{class_name}."})


CategoricalAccuracy = _metric_class("CategoricalAccuracy", "categorical_accuracy")
SparseCategoricalAccuracy = _metric_class("SparseCategoricalAccuracy", "sparse_categorical_accuracy")
MeanSquaredError = _metric_class("MeanSquaredError", "mean_squared_error")
MeanAbsoluteError = _metric_class("MeanAbsoluteError", "mean_absolute_error")


class BinaryAccuracy(Metric):
    """Keras's keras.metrics.BinaryAccuracy: the fraction of outputs on the same side of `threshold` as y."""

    def __init__(self, name="binary_accuracy", dtype=None, threshold=0.5):
        super().__init__(name, lambda y_true, y_pred: binary_accuracy(y_true, y_pred, threshold))
        self.threshold = threshold


def validate_names(identifiers):
    """Check metric names at compile time, before the shapes needed to resolve them are known."""
    for m in identifiers:
        if isinstance(m, str):
            get(m, losses_mod.MeanSquaredError(), (1,))
        elif not isinstance(m, Metric):
            raise ValueError(f"Unknown metric {m!r}; pass a name or a distnet.metrics.Metric")
