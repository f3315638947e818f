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
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None, **kwargs):
        super().__init__(**kwargs)
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
        self._training = training and x.shape[0] > 0
        if self._training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
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
        m = grad.size // grad.shape[-1]
        return (self._inv_std / m) * (m * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))

    def get_config(self):
        return {**super().get_config(), "axis": self.axis, "momentum": self.momentum, "epsilon": self.epsilon,
                "center": self.center, "scale": self.scale,
                "beta_initializer": initializers.serialize(self.beta_initializer),
                "gamma_initializer": initializers.serialize(self.gamma_initializer),
                "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
                "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
                "beta_regularizer": regularizers.serialize(self.beta_regularizer),
                "gamma_regularizer": regularizers.serialize(self.gamma_regularizer)}
