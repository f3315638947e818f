"""Zero padding of sequences and images, channels-last.

    ZeroPadding1D  (batch, steps, c)  -> (batch, left + steps + right, c)
    ZeroPadding2D  (batch, h, w, c)   -> (batch, top + h + bottom, left + w + right, c)

Both run as the 2-D kernel on a (batch, 1, steps, c) / (batch, h, w, c) view.
"""
import numpy as np

from . import kernels
from .base import Layer


def _pair(value, arg, where):
    """An int or a pair of non-negative ints -> (before, after)."""
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 0 for v in pair):
        raise ValueError(f"{where} expects {arg} as a non-negative int or a tuple of 2 non-negative ints, "
                         f"received {value!r}")
    return tuple(int(v) for v in pair)


class _ZeroPadding(Layer):
    per_sample = True
    rank = 2

    def __init__(self, padding, data_format=None, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{type(self).__name__} layer '{self.name}' supports data_format='channels_last' "
                             f"only, received {data_format!r}")

    def validate_input_shape(self, input_shape):
        if len(input_shape) != self.rank + 1:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank {self.rank + 2}, "
                             f"received shape {(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        self._pads2 = ((0, 0),) * (2 - self.rank) + self._pads
        self._in_hwc = (1,) * (2 - self.rank) + tuple(input_shape)

    def compute_output_shape(self, input_shape):
        grown = tuple(d + sum(p) for d, p in zip(input_shape[:-1], self._pads))
        return grown + (input_shape[-1],)

    def call(self, x, training=False):
        x4 = x.reshape((x.shape[0],) + self._in_hwc)
        out = self.workspace("out", kernels.padded_shape(x4.shape, self._pads2), x.dtype)
        kernels.pad_hw(x4, self._pads2, out=out)
        return out.reshape((x.shape[0],) + self.output_shape)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        g4 = grad.reshape(kernels.padded_shape((grad.shape[0],) + self._in_hwc, self._pads2))
        return kernels.unpad_hw(g4, self._pads2).reshape((grad.shape[0],) + self.input_shape)


class ZeroPadding1D(_ZeroPadding):
    """padding: int (both sides) or (left, right)."""
    rank = 1

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)
        self.padding = _pair(padding, "padding", f"ZeroPadding1D layer '{self.name}'")
        self._pads = (self.padding,)

    def get_config(self):
        return {**super().get_config(), "padding": list(self.padding)}


class ZeroPadding2D(_ZeroPadding):
    """padding: int (all sides), (symmetric_height, symmetric_width) or ((top, bottom), (left, right))."""
    rank = 2

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(padding, data_format, **kwargs)
        where = f"ZeroPadding2D layer '{self.name}'"
        if isinstance(padding, (int, np.integer)):
            padding = (padding, padding)
        if not hasattr(padding, "__len__") or len(padding) != 2:
            raise ValueError(f"{where} expects padding as an int, a tuple of 2 ints or a tuple of 2 tuples of 2 "
                             f"ints, received {padding!r}")
        self.padding = (_pair(padding[0], "padding[0] (height)", where), _pair(padding[1], "padding[1] (width)",
                                                                                where))
        self._pads = self.padding

    def get_config(self):
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}
