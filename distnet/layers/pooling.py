"""Pooling over height and width of channels-last images: (batch, h, w, c) -> (batch, out_h, out_w, c).

Both poolings loop over the kh*kw offsets of the window (4 for 2x2) and work on whole strided slices, so any
pool size, stride and padding runs at NumPy speed without a loop over pixels.
"""
import numpy as np

from .. import backend
from . import kernels
from .base import Layer, normalize_tuple


class _Pooling2D(Layer):
    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} layer '{self.name}'"
        if padding not in ("valid", "same"):
            raise ValueError(f"{where} expects padding 'valid' or 'same', received {padding!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{where} supports data_format='channels_last' only, received {data_format!r}")
        self.pool_size = normalize_tuple(pool_size, 2, "pool_size", where)
        self.strides = normalize_tuple(strides if strides is not None else self.pool_size, 2, "strides", where)
        self.padding = padding

    def validate_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank 4 (batch, height, "
                             f"width, channels), received shape {(None,) + tuple(input_shape)}")
        if min(self.compute_output_shape(input_shape)[:2]) <= 0:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' with pool_size {self.pool_size} does not "
                             f"fit input of shape {(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        h, w, _ = input_shape
        oh, pad_h = kernels.conv_output_size(h, self.pool_size[0], self.strides[0], self.padding)
        ow, pad_w = kernels.conv_output_size(w, self.pool_size[1], self.strides[1], self.padding)
        self._out_hw, self._pads = (oh, ow), (pad_h, pad_w)

    def compute_output_shape(self, input_shape):
        h, w, c = input_shape
        oh, _ = kernels.conv_output_size(h, self.pool_size[0], self.strides[0], self.padding)
        ow, _ = kernels.conv_output_size(w, self.pool_size[1], self.strides[1], self.padding)
        return (oh, ow, c)

    def _offsets(self):
        return [(i, j) for i in range(self.pool_size[0]) for j in range(self.pool_size[1])]

    def _padded_zeros(self, n):
        h, w, c = self.input_shape
        (pt, pb), (pl, pr) = self._pads
        return np.zeros((n, h + pt + pb, w + pl + pr, c), self.dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


class MaxPooling2D(_Pooling2D):
    """Max over each window; the gradient goes to the first maximum of each window (row-major), as in
    TensorFlow. The default 2x2/stride-2 pooling takes a fast path: two pairwise maxima over reshaped views
    (pairs of columns, then pairs of rows), remembering at each stage which half won."""

    def build(self, input_shape):
        super().build(input_shape)
        self._pairwise = self.pool_size == (2, 2) and self.strides == (2, 2) and self.padding == "valid"

    def call(self, x, training=False):
        if self._pairwise:
            return self._pairwise_forward(x)
        xp = kernels.pad_hw(x, self._pads, value=-np.inf)
        shape = (x.shape[0], *self._out_hw, x.shape[-1])
        out = self.workspace("out", shape)
        arg = self.workspace("arg", shape, np.uint8)
        better = self.workspace("better", shape, bool)
        arg.fill(0)
        for k, (i, j) in enumerate(self._offsets()):
            v = kernels.window(xp, i, j, self.strides, self._out_hw)
            if k == 0:
                np.copyto(out, v)
                continue
            np.greater(v, out, out=better)           # strictly greater: ties keep the first maximum
            np.copyto(arg, k, where=better)
            np.maximum(out, v, out=out)
        return out

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        if self._pairwise:
            return self._pairwise_backward(grad)
        n = grad.shape[0]
        dxp = self.workspace("dxp", kernels.padded_shape((n,) + self.input_shape, self._pads))
        hit = self.workspace("better", grad.shape, bool)
        arg = self.workspace("arg", grad.shape, np.uint8)
        disjoint = self.strides == self.pool_size and not any(map(any, self._pads))
        covered = disjoint and all(d == o * p for d, o, p in zip(self.input_shape, self._out_hw, self.pool_size))
        if not covered:           # windows overlap or leave a border: accumulate into zeros
            dxp.fill(0)
        for k, (i, j) in enumerate(self._offsets()):
            np.equal(arg, k, out=hit)
            dst = kernels.window(dxp, i, j, self.strides, self._out_hw)
            if disjoint:
                np.multiply(grad, hit, out=dst)
            else:
                dst += grad * hit
        return kernels.unpad_hw(dxp, self._pads)

    def _pairwise_forward(self, x):
        n, c = x.shape[0], x.shape[-1]
        oh, ow = self._out_hw
        per = 2 * oh * ow                                # rows of the column-pair view per sample
        right = self.workspace("right_wins", (n * per, c), bool)
        t = self.workspace("colmax", (n * per, c))
        lower = self.workspace("lower_wins", (n * oh, ow * c), bool)
        out = self.workspace("out", (n, oh, ow, c))
        odd = x.shape[1:3] != (2 * oh, 2 * ow)
        crop = self.workspace("crop", (n, 2 * oh, 2 * ow, c)) if odd else None

        def work(lo, hi, _):
            xc = x[lo:hi, :2 * oh, :2 * ow, :]
            if odd:                                      # odd height/width: the last row/column is never used
                np.copyto(crop[lo:hi], xc)
                xc = crop[lo:hi]
            cols = xc.reshape((hi - lo) * per, 2, c)     # [.., 0, :] left column of each pair, [.., 1, :] right
            r, tt = right[lo * per:hi * per], t[lo * per:hi * per]
            np.greater(cols[:, 1], cols[:, 0], out=r)
            np.maximum(cols[:, 0], cols[:, 1], out=tt)
            rows = tt.reshape((hi - lo) * oh, 2, ow * c)  # [.., 0, :] upper row of each pair, [.., 1, :] lower
            low = lower[lo * oh:hi * oh]
            np.greater(rows[:, 1], rows[:, 0], out=low)
            np.maximum(rows[:, 0], rows[:, 1], out=out[lo:hi].reshape((hi - lo) * oh, ow * c))
        backend.parallel_batches(n, work)
        return out

    def _pairwise_backward(self, grad):
        n, c = grad.shape[0], grad.shape[-1]
        oh, ow = self._out_hw
        per = 2 * oh * ow
        h, w, _ = self.input_shape
        dt = self.workspace("d_colmax", (n * oh, 2, ow * c))
        dx = self.workspace("dx", (n, h, w, c))
        cropped = (h, w) != (2 * oh, 2 * ow)
        dcols = self.workspace("dcrop", (n * per, 2, c)) if cropped else dx.reshape(-1, 2, c)
        lower, right = self._ws["lower_wins"], self._ws["right_wins"]

        def work(lo, hi, _):
            g = grad[lo:hi].reshape((hi - lo) * oh, ow * c)
            d = dt[lo * oh:hi * oh]
            np.multiply(g, lower[lo * oh:hi * oh], out=d[:, 1])
            np.subtract(g, d[:, 1], out=d[:, 0])         # g*(1-lower), exactly: g*lower is g or 0
            dflat = d.reshape((hi - lo) * per, c)
            dc = dcols[lo * per:hi * per]
            np.multiply(dflat, right[lo * per:hi * per], out=dc[:, 1])
            np.subtract(dflat, dc[:, 1], out=dc[:, 0])
            if cropped:
                dx[lo:hi].fill(0)
                dx[lo:hi, :2 * oh, :2 * ow, :] = dc.reshape(hi - lo, 2 * oh, 2 * ow, c)
        backend.parallel_batches(n, work)
        return dx


class AveragePooling2D(_Pooling2D):
    """Mean over each window; with padding='same' only the real (unpadded) values count, as in Keras."""

    def build(self, input_shape):
        super().build(input_shape)
        ones = kernels.pad_hw(np.ones((1,) + tuple(input_shape[:2]) + (1,), self.dtype), self._pads)
        count = sum(kernels.window(ones, i, j, self.strides, self._out_hw) for i, j in self._offsets())
        self._inv_count = (1.0 / count).astype(self.dtype)

    def call(self, x, training=False):
        xp = kernels.pad_hw(x, self._pads)
        out = np.zeros((x.shape[0], *self._out_hw, x.shape[-1]), self.dtype)
        for i, j in self._offsets():
            out += kernels.window(xp, i, j, self.strides, self._out_hw)
        out *= self._inv_count
        return out

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        dxp = self._padded_zeros(grad.shape[0])
        g = grad * self._inv_count
        for i, j in self._offsets():
            kernels.window(dxp, i, j, self.strides, self._out_hw)[...] += g
        return kernels.unpad_hw(dxp, self._pads)


class GlobalAveragePooling2D(Layer):
    """(batch, h, w, c) -> (batch, c): the mean over height and width."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"GlobalAveragePooling2D layer '{self.name}' supports data_format='channels_last' "
                             f"only, received {data_format!r}")
        self.keepdims = keepdims

    def validate_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"GlobalAveragePooling2D layer '{self.name}' expects input of rank 4, received "
                             f"shape {(None,) + tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        return (1, 1, input_shape[-1]) if self.keepdims else (input_shape[-1],)

    def call(self, x, training=False):
        return x.mean(axis=(1, 2), keepdims=self.keepdims)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        h, w, c = self.input_shape
        g = grad.reshape(grad.shape[0], 1, 1, c) * grad.dtype.type(1.0 / (h * w))
        return np.broadcast_to(g, (grad.shape[0], h, w, c)).copy()

    def get_config(self):
        return {**super().get_config(), "keepdims": self.keepdims}


MaxPool2D, AvgPool2D, GlobalAvgPool2D = MaxPooling2D, AveragePooling2D, GlobalAveragePooling2D
