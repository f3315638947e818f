"""BatchNormalization over the last (channel) axis, with Keras's defaults (momentum 0.99, epsilon 1e-3).

Training normalises with the batch's own statistics (on each worker, its local shard, as Horovod and DDP do
without SyncBatchNorm) and updates the moving statistics; inference uses the moving statistics.
"""
import numpy as np

from .. import initializers, regularizers
from .base import Layer


class BatchNormalization(Layer):
    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 synchronized=False, **kwargs):
        super().__init__(**kwargs)
        # synchronized=True (Keras's name; SyncBatchNorm in PyTorch): the statistics of the GLOBAL batch, summed
        # over workers through `sum_across_workers(array)` (in place), which the trainer provides; then training
        # does not depend on the number of workers.
        self.synchronized = bool(synchronized)
        self.sum_across_workers = None
        if axis not in (-1,):
            raise ValueError(f"BatchNormalization layer '{self.name}' supports axis=-1 (channels last) only, "
                             f"received {axis!r}")
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = center, scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)

    def build(self, input_shape):
        c = (input_shape[-1],)
        self.gamma = self.add_weight("gamma", c, self.gamma_initializer, self.gamma_regularizer) \
            if self.scale else None
        self.beta = self.add_weight("beta", c, self.beta_initializer, self.beta_regularizer) \
            if self.center else None
        self.moving_mean = self.add_weight("moving_mean", c, self.moving_mean_initializer, trainable=False)
        self.moving_variance = self.add_weight("moving_variance", c, self.moving_variance_initializer,
                                               trainable=False)

    def call(self, x, training=False):
        axes = tuple(range(x.ndim - 1))
        # a worker with no samples in this step still takes part in a synchronized layer's sums
        self._training = training and (x.shape[0] > 0 or self.synchronized)
        if self._training and self.synchronized:
            mean, var = self._global_moments(x, axes)
        elif self._training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
        if self._training:
            m = self.momentum
            self.moving_mean.value[...] = self.moving_mean.value * m + mean * (1 - m)
            self.moving_variance.value[...] = self.moving_variance.value * m + var * (1 - m)
        else:
            mean, var = self.moving_mean.value, self.moving_variance.value
        self._inv_std = 1.0 / np.sqrt(var + self.dtype_type(self.epsilon))
        self._xhat = (x - mean) * self._inv_std
        out = self._xhat * self.gamma.value if self.gamma is not None else self._xhat.copy()
        if self.beta is not None:
            out += self.beta.value
        return out

    def _global_moments(self, x, axes):
        """Mean and (biased) variance over every worker's shard: one sum of [sum x, sum x^2, count]."""
        c = x.shape[-1]
        sums = np.empty(2 * c + 1, dtype=np.float64)
        sums[:c] = x.sum(axis=axes, dtype=np.float64)
        sums[c:2 * c] = np.square(x, dtype=np.float64).sum(axis=axes)
        sums[-1] = x.size // c
        self._sum(sums)
        self._count = sums[-1]
        mean = sums[:c] / max(sums[-1], 1)
        var = np.maximum(sums[c:2 * c] / max(sums[-1], 1) - mean * mean, 0.0)
        return mean.astype(x.dtype), var.astype(x.dtype)

    def _sum(self, array):
        if self.sum_across_workers is not None:
            self.sum_across_workers(array)

    @property
    def dtype_type(self):
        return np.dtype(self.dtype).type

    def backward(self, grad, need_input_grad=True):
        axes = tuple(range(grad.ndim - 1))
        xhat = self._xhat
        if self.gamma is not None and self.gamma.grad is not None:
            np.sum(grad * xhat, axis=axes, out=self.gamma.grad)
        if self.beta is not None and self.beta.grad is not None:
            np.sum(grad, axis=axes, out=self.beta.grad)
        if not need_input_grad:
            return None
        dxhat = grad * self.gamma.value if self.gamma is not None else grad
        if not self._training:
            return dxhat * self._inv_std
        if self.synchronized:             # the sums run over the global batch, as the statistics did
            c = grad.shape[-1]
            sums = np.empty(2 * c, dtype=np.float64)
            sums[:c] = dxhat.sum(axis=axes, dtype=np.float64)
            sums[c:] = (dxhat * xhat).sum(axis=axes, dtype=np.float64)
            self._sum(sums)
            m = self._count
            return ((self._inv_std / m) * (m * dxhat - sums[:c].astype(grad.dtype)
                                           - xhat * sums[c:].astype(grad.dtype))).astype(grad.dtype, copy=False)
        m = grad.size // grad.shape[-1]
        return (self._inv_std / m) * (m * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale, "synchronized": self.synchronized,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer)}
