"""Global pooling: the mean or max over every axis between the batch and the channels.

    GlobalAveragePooling1D / GlobalMaxPooling1D  (batch, steps, c)     -> (batch, c)   [(batch, 1, c) keepdims]
    GlobalAveragePooling2D / GlobalMaxPooling2D  (batch, h, w, c)      -> (batch, c)   [(batch, 1, 1, c)]
"""
import math

import numpy as np

from .base import Layer


class _GlobalPooling(Layer):
    per_sample = True
    rank = 2

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{type(self).__name__} layer '{self.name}' supports data_format='channels_last' "
                             f"only, received {data_format!r}")
        self.keepdims = bool(keepdims)
        self._axes = tuple(range(1, self.rank + 1))

    def validate_input_shape(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank {self.rank + 2}, "
                             f"received shape {(None,) + tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        return (1,) * self.rank + (input_shape[-1],) if self.keepdims else (input_shape[-1],)

    def _grad_per_position(self, grad):
        """grad: (batch, c) or keepdims -> (batch, 1, ..., 1, c), broadcastable against the input."""
        return grad.reshape((grad.shape[0],) + (1,) * self.rank + (grad.shape[-1],))

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


class _GlobalAveragePooling(_GlobalPooling):
    def call(self, x, training=False):
        return x.mean(axis=self._axes, keepdims=self.keepdims)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        g = self._grad_per_position(grad) * grad.dtype.type(1.0 / math.prod(self.input_shape[:-1]))
        dx = self.workspace("dx", (grad.shape[0],) + self.input_shape, grad.dtype)
        np.copyto(dx, g)
        return dx


class _GlobalMaxPooling(_GlobalPooling):
    """The gradient goes to the first maximum of each channel (row-major over the pooled positions)."""

    def call(self, x, training=False):
        positions = math.prod(self.input_shape[:-1])
        self._arg = x.reshape(x.shape[0], positions, x.shape[-1]).argmax(axis=1)    # (batch, c)
        return x.max(axis=self._axes, keepdims=self.keepdims)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        n, c = grad.shape[0], grad.shape[-1]
        dx = self.workspace("dx", (n, math.prod(self.input_shape[:-1]), c), grad.dtype)
        dx.fill(0)
        np.put_along_axis(dx, self._arg[:, None, :], grad.reshape(n, 1, c), axis=1)
        return dx.reshape((n,) + self.input_shape)


class GlobalAveragePooling1D(_GlobalAveragePooling):
    rank = 1


class GlobalAveragePooling2D(_GlobalAveragePooling):
    rank = 2


class GlobalMaxPooling1D(_GlobalMaxPooling):
    rank = 1


class GlobalMaxPooling2D(_GlobalMaxPooling):
    rank = 2


GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D
