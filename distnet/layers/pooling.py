"""Pooling over height and width of channels-last images: (batch, h, w, c) -> (batch, out_h, out_w, c), and
over the steps of sequences: (batch, steps, c) -> (batch, out_steps, c), computed as images of height 1.

Both poolings loop over the kh*kw offsets of the window (4 for 2x2) and work on whole strided slices, so any
pool size, stride and padding runs at NumPy speed without a loop over pixels.
"""
import numpy as np

from .. import backend
from . import kernels
from .base import Layer, normalize_tuple


class _Pooling(Layer):
    """Shared by the 1-D and 2-D poolings: subclasses implement `_forward4(x)` and `_backward4(grad)` on the
    (batch, h, w, c) view; `self._in_hwc` is the input shape in that view."""
    per_sample = True
    rank = 2

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} layer '{self.name}'"
        if padding not in ("valid", "same"):
            raise ValueError(f"{where} expects padding 'valid' or 'same', received {padding!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{where} supports data_format='channels_last' only, received {data_format!r}")
        self.pool_size = normalize_tuple(pool_size, self.rank, "pool_size", where)
        self.strides = normalize_tuple(strides if strides is not None else self.pool_size, self.rank, "strides",
                                       where)
        self.padding = padding
        # the (height, width) view every rank computes in: a 1-D pooling has height 1
        self._pool2, self._s2 = ((1,) * (2 - self.rank) + t for t in (self.pool_size, self.strides))

    def _geometry(self, input_shape):
        hw = (1,) * (2 - self.rank) + tuple(input_shape[:-1])
        geo = [kernels.conv_output_size(size, p, s, self.padding) for size, p, s in zip(hw, self._pool2, self._s2)]
        return tuple(g[0] for g in geo), tuple(g[1] for g in geo)

    def validate_input_shape(self, input_shape):
        if len(input_shape) != self.rank + 1:
            dims = "steps" if self.rank == 1 else "height, width"
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank {self.rank + 2} "
                             f"(batch, {dims}, channels), received shape {(None,) + tuple(input_shape)}")
        if min(self._geometry(input_shape)[0]) <= 0:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' with pool_size {self.pool_size} does not "
                             f"fit input of shape {(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        self._out_hw, self._pads = self._geometry(input_shape)
        self._in_hwc = (1,) * (2 - self.rank) + tuple(input_shape)

    def compute_output_shape(self, input_shape):
        return self._geometry(input_shape)[0][2 - self.rank:] + (input_shape[-1],)

    def call(self, x, training=False):
        out = self._forward4(x.reshape((x.shape[0],) + self._in_hwc))
        return out.reshape((x.shape[0],) + self.output_shape)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        dx = self._backward4(grad.reshape((grad.shape[0], *self._out_hw, grad.shape[-1])))
        return dx.reshape((grad.shape[0],) + self.input_shape)

    def _offsets(self):
        return [(i, j) for i in range(self._pool2[0]) for j in range(self._pool2[1])]

    def _padded_zeros(self, n):
        h, w, c = self._in_hwc
        (pt, pb), (pl, pr) = self._pads
        return np.zeros((n, h + pt + pb, w + pl + pr, c), self.dtype)

    def get_config(self):
        return {**super().get_config(), "pool_size": list(self.pool_size), "strides": list(self.strides),
                "padding": self.padding}


class _MaxPooling(_Pooling):
    """Max over each window; the gradient goes to the first maximum of each window (row-major), as in
    TensorFlow. The default 2x2/stride-2 pooling takes a fast path: two pairwise maxima over reshaped views
    (pairs of columns, then pairs of rows), remembering at each stage which half won."""
    takes_relu_gradient = True

    def call(self, x, training=False):
        self._out = super().call(x, training)
        return self._out

    def backward_relu_input(self, grad):
        """The gradient of the ReLU's INPUT, when this layer's input is a ReLU's output a = relu(z): grad
        masked by (output > 0) before it is routed to each window's first maximum. Exactly the ReLU's
        derivative at that maximum (its a > 0 iff the window's max is), at a quarter of the memory traffic of
        masking the routed gradient; the other positions get 0 either way. grad may be overwritten."""
        grad = grad.reshape(self._out.shape)
        np.multiply(grad, np.greater(self._out, 0, out=self.scratch("relu_mask", grad.shape, bool)), out=grad)
        return self.backward(grad)

    def build(self, input_shape):
        super().build(input_shape)
        self._pairwise = self._pool2 == (2, 2) and self._s2 == (2, 2) and self.padding == "valid"

    @property
    def pools_disjointly(self):
        """Windows that tile the input without overlap or padding: a convolution before this layer can then
        compute it in one pass with its own output (`_Conv.call_pooled`)."""
        return self._s2 == self._pool2 and self.padding == "valid"

    # -- over a convolution's output in pooling-phase order (_Conv.call_pooled) --------------------------
    def phase_buffers(self, n, phases, m):
        """Allocate (before the batch slices run in threads) what take_phase keeps for route_to_phases: for each
        phase after the first, where it beat the maximum of the phases before it (phases - 1 booleans per
        element, phase-major within each slice of samples)."""
        self._phase_wins = self.workspace("phase_wins", (n, (phases - 1) * m), bool)
        self._phases = phases

    def take_phase(self, phase, z, out, lo, hi):
        """The running maximum over phases: out (the maximum of phases < `phase` of samples lo:hi) = max(out, z),
        z that phase's values in the same order, remembering where z is strictly greater (a tie keeps the
        earlier phase: the first maximum, row-major in its window, as in forward)."""
        wins = self._phase_wins[lo:hi].reshape(self._phases - 1, -1)[phase - 1]
        np.greater(z.reshape(-1), out.reshape(-1), out=wins)
        np.maximum(out, z, out=out)

    def route_to_phases(self, g, d, lo, hi):
        """d (P, m*M): g (m*M,) of samples lo:hi sent to each window's first maximum, zero elsewhere: to the last
        phase that beat the ones before it (exact: g*b and g - g*b for a boolean b are g or 0)."""
        phases = d.shape[0]
        if phases == 1:
            np.copyto(d[0], g)
            return d
        wins = self._phase_wins[lo:hi].reshape(phases - 1, -1)
        np.multiply(g, wins[-1], out=d[-1])
        np.subtract(g, d[-1], out=d[0])           # what the later phases did not take
        for phase in range(phases - 2, 0, -1):
            np.multiply(d[0], wins[phase - 1], out=d[phase])
            np.subtract(d[0], d[phase], out=d[0])
        return d

    def _forward4(self, x):
        if self._pairwise:
            return self._pairwise_forward(x)
        xp = kernels.pad_hw(x, self._pads, value=-np.inf)
        shape = (x.shape[0], *self._out_hw, x.shape[-1])
        out = self.workspace("out", shape)
        arg = self.workspace("arg", shape, np.uint8)
        better = self.workspace("better", shape, bool)
        arg.fill(0)
        for k, (i, j) in enumerate(self._offsets()):
            v = kernels.window(xp, i, j, self._s2, self._out_hw)
            if k == 0:
                np.copyto(out, v)
                continue
            np.greater(v, out, out=better)           # strictly greater: ties keep the first maximum
            np.copyto(arg, k, where=better)
            np.maximum(out, v, out=out)
        return out

    def _backward4(self, grad):
        if self._pairwise:
            return self._pairwise_backward(grad)
        n = grad.shape[0]
        dxp = self.workspace("dxp", kernels.padded_shape((n,) + self._in_hwc, self._pads))
        hit = self.workspace("better", grad.shape, bool)
        arg = self.workspace("arg", grad.shape, np.uint8)
        disjoint = self._s2 == self._pool2 and not any(map(any, self._pads))
        covered = disjoint and all(d == o * p for d, o, p in zip(self._in_hwc, self._out_hw, self._pool2))
        if not covered:           # windows overlap or leave a border: accumulate into zeros
            dxp.fill(0)
        for k, (i, j) in enumerate(self._offsets()):
            np.equal(arg, k, out=hit)
            dst = kernels.window(dxp, i, j, self._s2, self._out_hw)
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
        h, w, _ = self._in_hwc
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


class _AveragePooling(_Pooling):
    """Mean over each window; with padding='same' only the real (unpadded) values count, as in Keras."""

    def build(self, input_shape):
        super().build(input_shape)
        ones = kernels.pad_hw(np.ones((1,) + self._in_hwc[:2] + (1,), self.dtype), self._pads)
        count = sum(kernels.window(ones, i, j, self._s2, self._out_hw) for i, j in self._offsets())
        self._inv_count = (1.0 / count).astype(self.dtype)

    def _forward4(self, x):
        xp = kernels.pad_hw(x, self._pads)
        out = np.zeros((x.shape[0], *self._out_hw, x.shape[-1]), self.dtype)
        for i, j in self._offsets():
            out += kernels.window(xp, i, j, self._s2, self._out_hw)
        out *= self._inv_count
        return out

    def _backward4(self, grad):
        dxp = self._padded_zeros(grad.shape[0])
        g = grad * self._inv_count
        for i, j in self._offsets():
            kernels.window(dxp, i, j, self._s2, self._out_hw)[...] += g
        return kernels.unpad_hw(dxp, self._pads)


class MaxPooling2D(_MaxPooling):
    """(batch, h, w, c) -> (batch, out_h, out_w, c); pool_size (2, 2) by default."""
    rank = 2


class MaxPooling1D(_MaxPooling):
    """(batch, steps, c) -> (batch, out_steps, c); pool_size 2 by default."""
    rank = 1


class AveragePooling2D(_AveragePooling):
    """(batch, h, w, c) -> (batch, out_h, out_w, c); pool_size (2, 2) by default."""
    rank = 2


class AveragePooling1D(_AveragePooling):
    """(batch, steps, c) -> (batch, out_steps, c); pool_size 2 by default."""
    rank = 1




MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D = MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D
