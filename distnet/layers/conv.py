"""Convolutions as im2col + one GEMM, channels-last, Keras's kernel layouts:

    Conv2D  x: (batch, h, w, in_channels) -> (batch, out_h, out_w, filters); kernel: (kh, kw, in_channels, filters)
    Conv1D  x: (batch, steps, in_channels) -> (batch, out_steps, filters);   kernel: (k, in_channels, filters)

A Conv1D is computed as a Conv2D of height 1 on a (batch, 1, steps, channels) view (its kernel viewed as
(1, k, in, filters)), so both share one im2col, one GEMM and one input-gradient loop.
"""
import numpy as np

from .. import backend
from . import kernels
from .base import ActivatedLayer, normalize_tuple, sum_rows


# the input gradient of a batch slice with at most this many output positions runs as one GEMM for all kernel
# offsets (_backward_slices). Measured, one thread, 5 fresh processes each way alternating, median of 300 calls
# (ms, one GEMM against kh*kw GEMMs): 4x4x128 -> 6x6x64 over 16 samples (256 rows) 0.445 against 0.532, 32
# samples (512 rows) 0.878 against 0.924, 64 samples (1024 rows) 1.895 against 1.836; 12x12x64 -> 15x15x32
# over 16 samples (2304 rows) 1.535 against 1.358
ONE_GEMM_ROWS = 512

# the fused convolution + max pooling runs one GEMM per pooling phase when a phase of a batch slice has at least
# this many rows (output positions), else one GEMM for all phases. Measured, one thread, 16 samples, 2x2 pooling
# (ms, per phase against one): 3600 rows (30x30x32 from 3 channels) 0.43 against 0.53; 576 rows (13x13x64 from
# 32) 0.74 against 0.75; 64 rows (4x4x128 from 64) 0.34 against 0.29
PHASE_GEMM_ROWS = 256


class _Conv(ActivatedLayer):
    per_sample = True
    rank = 2
    paddings = ("valid", "same")

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        where, r = f"{type(self).__name__} layer '{self.name}'", self.rank
        if not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{where} expects filters to be a positive int, received {filters!r}")
        if padding not in self.paddings:
            raise ValueError(f"{where} expects padding {' or '.join(map(repr, self.paddings))}, "
                             f"received {padding!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{where} supports data_format='channels_last' only, received {data_format!r}")
        if groups != 1:
            raise ValueError(f"{where} supports groups=1 only, received {groups!r}")
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, r, "kernel_size", where)
        self.strides = normalize_tuple(strides, r, "strides", where)
        self.dilation_rate = normalize_tuple(dilation_rate, r, "dilation_rate", where)
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:      # as Keras 3
            raise ValueError(f"{where}: strides > 1 is not supported together with dilation_rate > 1, received "
                             f"strides={self.strides} and dilation_rate={self.dilation_rate}")
        self.padding = padding
        self._kernel_options(activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                             bias_regularizer)

    # -- the 2-D view every rank computes in: (batch, h, w, channels) --------------------------------------
    def _as_2d(self, t):
        """(kernel, strides, dilation) as (height, width) pairs; a 1-D layer has height 1."""
        return (1,) * (2 - self.rank) + tuple(t)

    def _geometry(self, input_shape):
        """((out_h, out_w), (pad_h, pad_w)) for input_shape without the batch dim."""
        hw = self._as_2d(input_shape[:-1])
        ks, ss, ds = (self._as_2d(t) for t in (self.kernel_size, self.strides, self.dilation_rate))
        geo = [kernels.conv_output_size(size, k, s, self.padding, d) for size, k, s, d in zip(hw, ks, ss, ds)]
        return tuple(g[0] for g in geo), tuple(g[1] for g in geo)

    def validate_input_shape(self, input_shape):
        if len(input_shape) != self.rank + 1:
            dims = "steps" if self.rank == 1 else "height, width"
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank {self.rank + 2} "
                             f"(batch, {dims}, channels), received shape {(None,) + tuple(input_shape)}")
        out, _ = self._geometry(input_shape)
        if min(out) <= 0:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' with kernel_size {self.kernel_size} does "
                             f"not fit input of shape {(None,) + tuple(input_shape)} with padding '{self.padding}'")

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", self.kernel_size + (input_shape[-1], self.filters),
                                      self.kernel_initializer, self.kernel_regularizer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer,
                                    self.bias_regularizer) if self.use_bias else None
        self._out_hw, self._pads = self._geometry(input_shape)
        self._in_hwc = self._as_2d(input_shape[:-1]) + (input_shape[-1],)
        self._k2, self._s2, self._d2 = (self._as_2d(t) for t in (self.kernel_size, self.strides,
                                                                 self.dilation_rate))
        (kh, kw), (dh, dw) = self._k2, self._d2
        (pt, pb), (pl, pr) = self._pads
        # the input gradient is a stride-1 convolution of the output gradient padded by these
        self._grad_pads = (((kh - 1) * dh - pt, (kh - 1) * dh - pb), ((kw - 1) * dw - pl, (kw - 1) * dw - pr))
        self._grid_forward = self._use_grid(input_shape[-1], kernels.padded_shape((1,) + self._in_hwc, self._pads),
                                            self._out_hw)
        self._grid_input_grad = self._use_grid(
            self.filters, kernels.padded_shape((1, *self._out_hw, 1), self._grad_pads), self._in_hwc[:2])

    def _use_grid(self, channels, grid_shape, out_hw):
        """Whether a stride-1 convolution (the forward one, reducing `channels`, or the input gradient's) runs on
        the padded grid (kernels.conv_grid: kh*kw GEMMs with K = channels, no im2col) rather than im2col and one
        GEMM. Measured (cold caches, ResNet-20 shapes) 40% faster at 16 and 32 channels, where im2col's copy
        (kh*kw times the input) costs more than the products, and slower at 64; never with fewer than 8
        channels (the first layer's 3: K too small) or where over 30% of the grid's positions are dropped."""
        waste = grid_shape[1] * grid_shape[2] / (out_hw[0] * out_hw[1])
        return self._s2 == (1, 1) and 8 <= channels <= 32 and waste <= 1.3

    def compute_output_shape(self, input_shape):
        out, _ = self._geometry(input_shape)
        return out[2 - self.rank:] + (self.filters,)

    def _out_view(self, y):
        """A (n, oh, ow, f) array seen in the layer's own output shape."""
        return y.reshape((y.shape[0],) + self.output_shape)

    @property
    def preactivation(self):
        return None if self._z is None else self._out_view(self._z)

    @property
    def output_reusable(self):
        """Without an activation the backward reads only the output's shape, not its values."""
        return self.activation.name == "linear" and not self.keep_preactivation

    # -- forward / backward -------------------------------------------------------------------------------
    def call(self, x, training=False):
        x = x.reshape((x.shape[0],) + self._in_hwc)
        n, c = x.shape[0], x.shape[-1]
        (kh, kw), pads = self._k2, self._pads
        padded = any(map(any, pads))
        grid = self._grid_forward
        if grid and not padded:
            x = np.ascontiguousarray(x)
        # the grid path (and im2col when its columns are made again in backward) pads into shared scratch and
        # pads again in backward (_padded_input), from x, which the layers keep intact until then: two copies
        # into a buffer in cache cost less than one into a buffer of the layer's own, untouched since the last
        # step (and the kernel gradient then reads it from cache)
        xp_all = self._pad_buffer(x.shape) if padded else x
        keep = not grid and self._keep_columns()
        cols = None if grid else (self.workspace if keep else self.scratch)("cols", (n, *self._out_hw, kh, kw, c))
        z = self.workspace("z", (n, *self._out_hw, self.filters))
        k = self.kernel.value.reshape(-1, self.filters)
        act = self.activation
        inplace = act.from_output and not self.keep_preactivation

        def work(lo, hi, t):              # one slice of the batch: pad, im2col, GEMM, bias, activation
            xp = kernels.pad_hw(x[lo:hi], pads, out=xp_all[lo:hi] if padded else None)
            zc = z[lo:hi]
            if grid:
                self._conv_grid(xp, k.reshape(kh, kw, c, self.filters), zc, t)
            else:
                kernels.im2col(xp, self._k2, self._s2, self._out_hw, cols[lo:hi], self._d2)
                np.matmul(cols[lo:hi].reshape(-1, k.shape[0]), k, out=zc.reshape(-1, self.filters))
            if self.bias is not None:
                self.add_channels(zc, self.bias.value, f"bias{t}")
            if inplace:
                act.forward(zc, out=zc)
        backend.parallel_batches(n, work)
        self._cols, self._xp, self._x, self._cols_kept = cols, None if padded and not keep else xp_all, x, keep
        if inplace:
            self._z, self._a = None, z
            return self._out_view(z)
        return self._out_view(self._activate(z))

    def _keep_columns(self):
        """Whether backward keeps the im2col columns of forward (in a buffer of the layer's own) rather than
        making them again from the kept input in shared scratch. Again: 3x3 kernels over >= 32 channels, whose
        copies run over rows of >= 128 bytes (ResNet-20's 64-channel layers, profiled: forward 2.4 -> 1.6-2.0 ms,
        backward unchanged). Kept: fewer channels (the first layer's 3, the stride-2 16-channel layer: backward
        +0.8 and +1.2 ms made again) and 1x1 kernels (a strided copy; +0.1 ms)."""
        return self._in_hwc[-1] < 32 or self._k2 == (1, 1)

    def _pad_buffer(self, shape):
        """The padded input's buffer for an input of `shape`: shared scratch on the grid path and for im2col
        columns made again in backward (padded again there from the kept input), else the layer's own."""
        padded_shape = kernels.padded_shape(shape, self._pads)
        if self._grid_forward:
            return self.scratch("xp_grid", padded_shape)
        return self.workspace("xp", padded_shape) if self._keep_columns() else self.scratch("xp_cols", padded_shape)

    def _columns(self, lo, hi, xp_all, cols):
        """Slice [lo, hi) of the im2col columns of the last call: kept (call_pooled), or made again."""
        if self._cols_kept:
            return self._cols[lo:hi]
        return kernels.im2col(self._padded_input(lo, hi, xp_all), self._k2, self._s2, self._out_hw, cols[lo:hi],
                              self._d2)

    def _padded_input(self, lo, hi, out):
        """Slice [lo, hi) of the padded input of the last call, in `out` (from _pad_buffer) unless kept."""
        if self._xp is not None:
            return self._xp[lo:hi]
        return kernels.pad_hw(self._x[lo:hi], self._pads, out=out[lo:hi])

    def backward(self, grad, need_input_grad=True):
        grad = grad.reshape(self._a.shape)
        if self.activation.name == "relu" and self._z is None:      # fuse relu's backward into the slices
            return self._backward_slices(grad, need_input_grad, relu=True)
        return super().backward(grad, need_input_grad)

    def backward_preactivation(self, grad_z, need_input_grad=True):
        return self._backward_slices(grad_z.reshape(self._a.shape), need_input_grad, relu=False)

    def _conv_grid(self, xp, k4, out, t):
        """kernels.conv_grid with this thread's (t) buffers."""
        chunk = kernels.grid_chunk(xp.shape[1:3], max(xp.shape[-1], k4.shape[-1]))
        rows = (chunk * xp.shape[1] * xp.shape[2], k4.shape[-1])
        return kernels.conv_grid(xp, k4, self._d2, out, self.scratch(f"grid_sum{t}", rows),
                                 self.scratch(f"grid_part{t}", rows), chunk)

    def _transposed_input_grad(self):
        """Whether the input gradient is computed as a convolution of the (padded) output gradient with the
        flipped, transposed kernel: one im2col and one GEMM with K = kh*kw*filters, instead of kh*kw GEMMs with
        K = filters and as many window sums. Stride 1 only; chosen when filters <= in_channels (a ResNet's
        equal-width layers, where the grid path does not take them: 64 channels, measured 1.1-1.4x faster),
        where the gradient's im2col is no larger than the input's; with more filters than channels (the seed
        CNN) the per-offset GEMMs win."""
        return self._s2 == (1, 1) and self.filters <= self._in_hwc[-1]

    def _flipped_kernel(self):
        """(kh, kw, filters, in_channels): the kernel rotated by 180 degrees with in/out swapped."""
        kh, kw = self._k2
        k4 = self.kernel.value.reshape(kh, kw, -1, self.filters)
        kt = self.workspace("kernel_t", (kh, kw, self.filters, k4.shape[2]))
        np.copyto(kt, k4[::-1, ::-1].transpose(0, 1, 3, 2))
        return kt

    def _one_gemm_input_grad(self, n, out_hw):
        """Whether the per-offset input gradient of n samples (their outputs' out_hw positions) runs as one GEMM
        for all kernel offsets: few rows per slice (a late layer's 4x4 output in a block of 16 samples: 256),
        where it packs the kernel once and runs with N = kh*kw*in_channels, 1.1-1.2x faster than kh*kw GEMMs;
        with more rows its strided slices make the window sums slower than that gains."""
        return -(-n // backend.num_threads()) * out_hw[0] * out_hw[1] <= ONE_GEMM_ROWS

    def _backward_slices(self, grad, need_input_grad, relu, weight_grads=True, out_hw=None, rows_first=False):
        """out_hw: the (top-left) part of the output grad covers, when smaller than the output (the rest has no
        gradient); rows_first: grad's rows lo:hi hold the slice's gradient as (out_h, hi - lo, out_w, filters)
        (see `_input_grad_by_rows`); both for the per-offset input gradient alone."""
        out_hw = out_hw or self._out_hw
        assert not (rows_first and weight_grads)
        n = grad.shape[0]
        kdim = self.kernel.value.size // self.filters
        grid_dx = need_input_grad and self._grid_input_grad
        transposed = need_input_grad and not grid_dx and self._transposed_input_grad()
        (kh, kw), (dh, dw), c = self._k2, self._d2, self._in_hwc[-1]
        grid_k = self._cols is None               # the forward ran on the grid: no im2col to reuse
        gpads = self._grad_pads
        if transposed or grid_dx:
            gp_all = self.scratch("grad_padded", kernels.padded_shape(grad.shape, gpads)) \
                if any(map(any, gpads)) else None
            gcols = None if grid_dx else self.scratch("grad_cols", (n, *self._in_hwc[:2], kh, kw, self.filters))
            kt = self._flipped_kernel()
            dx = self._input_grad_buffer(grad, gp_all is not None)
        elif need_input_grad:
            dxp = self.workspace("dxp", kernels.padded_shape((n,) + self._in_hwc, self._pads))
            one_gemm = self._one_gemm_input_grad(n, out_hw)
            part = self.scratch("dx_part", (n, *out_hw, kh, kw, c)) if one_gemm else None
        want_k = weight_grads and self.kernel.grad is not None
        want_b = weight_grads and self.bias is not None and self.bias.grad is not None
        k4 = self.kernel.value.reshape(kh, kw, -1, self.filters)
        mask = self.scratch("relu_mask", self._a.shape, bool) if relu else None
        xp_all = None if self._xp is not None else self._pad_buffer(self._x.shape)
        cols = None if grid_k or self._cols_kept else self.scratch("cols", self._cols.shape)
        if grid_k:
            grid_hw = kernels.padded_shape(self._x.shape, self._pads)[1:3]
            chunk = kernels.grid_chunk(grid_hw, max(c, self.filters))
            # 'same' padding: the padded output gradient lies on the input's grid, shifted by (top, left) of its
            # padding, with zeros around it, which is what the kernel gradient needs: no second copy of it
            share = grid_dx and gp_all is not None and gp_all.shape[1:3] == grid_hw
            g_grid = None if share else self.scratch("grad_grid", (n, *grid_hw, self.filters))

        def work(lo, hi, t):
            g = grad[lo:hi]
            if relu:
                self.activation.backward(None, self._a[lo:hi], g, mask=mask[lo:hi])
            g2 = g.reshape(-1, self.filters)
            dk = db = None
            if transposed or grid_dx:
                gp = kernels.pad_hw(g, gpads, out=gp_all[lo:hi] if gp_all is not None else None)
            if want_k and grid_k:
                dk = self.kernel.grad.reshape(kh, kw, c, self.filters) if t == 0 else \
                    self.workspace(f"dk{t}", (kh, kw, c, self.filters))
                g_on_grid, offset = (gp, gpads[0][0] * grid_hw[1] + gpads[1][0]) if share else \
                    (kernels.to_grid(g, grid_hw, g_grid[lo:hi]), 0)
                kernels.conv_grid_kernel_grad(self._padded_input(lo, hi, xp_all), g_on_grid, self._k2, self._d2, dk,
                                              self.scratch(f"dk_part{t}", (c, self.filters)), chunk, offset)
            elif want_k:        # partial kernel gradient of this slice (summed below)
                dk = self.kernel.grad.reshape(kdim, self.filters) if t == 0 else \
                    self.workspace(f"dk{t}", (kdim, self.filters))
                kernels.columns_times(self._columns(lo, hi, xp_all, cols).reshape(-1, kdim), g2, dk,
                                      self.workspace(f"dk_cols{t}", dk.shape))
            if want_b:
                db = self.bias.grad if t == 0 else self.workspace(f"db{t}", (self.filters,))
                sum_rows(g2, db, self, slot=t)
            if transposed or grid_dx:
                if grid_dx:
                    self._conv_grid(np.ascontiguousarray(gp), kt, dx[lo:hi], t)
                else:
                    kernels.im2col(gp, self._k2, (1, 1), self._in_hwc[:2], gcols[lo:hi], self._d2)
                    np.matmul(gcols[lo:hi].reshape(-1, kh * kw * self.filters), kt.reshape(-1, c),
                              out=dx[lo:hi].reshape(-1, c))
            elif need_input_grad and one_gemm:
                # one GEMM for every kernel offset, each offset's part added into the window it touched
                d, p = dxp[lo:hi], part[lo:hi]
                d.fill(0)
                np.matmul(g2, k4.reshape(-1, self.filters).T, out=p.reshape(g2.shape[0], kh * kw * c))
                for i in range(kh):
                    for j in range(kw):
                        w = kernels.window(d, i * dh, j * dw, self._s2, out_hw)
                        np.add(w, p[:, :, :, i, j], out=w)
            elif need_input_grad:
                # per kernel offset: one GEMM with that offset's (in, filters) slice (on large slices measured
                # 1.6x faster than one big GEMM followed by a col2im scatter)
                if rows_first:
                    gy = g.reshape(out_hw[0], hi - lo, out_hw[1], self.filters)
                else:
                    gy = self.scratch("grad_rows_first", (out_hw[0], hi - lo, out_hw[1], self.filters))
                    np.copyto(gy, g.transpose(1, 0, 2, 3))
                self._input_grad_by_rows(gy, dxp[lo:hi], k4)
            return dk, db

        self._add_slices(backend.parallel_batches(n, work))
        if not need_input_grad:
            return None
        if transposed or grid_dx:
            return dx.reshape((n,) + self.input_shape)
        return kernels.unpad_hw(dxp, self._pads).reshape((n,) + self.input_shape)

    def _input_grad_by_rows(self, gy, d, k4):
        """The per-offset input gradient of one batch slice into d: (m, hp, wp, c), the padded input's, from gy:
        (oh, m, ow, f), the output gradient with image rows outermost. For each kernel column j, the products
        of its kh offsets are summed in `acc` (hp, m, ow, c), also rows outermost, where kernel row i shifts by
        whole image rows: contiguous adds (with stride 1 the first product is written in place); then acc goes
        into the columns of d that j reaches, transposed: kw strided adds instead of kh*kw (NumPy's adds over
        strided windows run at a third of the contiguous speed)."""
        (kh, kw), (dh, dw), (sh, sw) = self._k2, self._d2, self._s2
        oh, m, ow, f = gy.shape
        hp, c = d.shape[1], d.shape[-1]
        rows = gy.reshape(-1, f)
        acc = self.scratch("dx_rows", (hp, m, ow, c))
        part = self.scratch("dx_part_rows", (oh, m, ow, c))
        span_h, span_w = sh * (oh - 1) + 1, sw * (ow - 1) + 1
        for j in range(kw):
            for i in range(kh):
                dst = acc[i * dh:i * dh + span_h:sh]
                if i == 0 and sh == 1:
                    np.matmul(rows, k4[0, j].T, out=dst.reshape(-1, c))
                    acc[oh:].fill(0)
                    continue
                if i == 0:
                    acc.fill(0)
                np.matmul(rows, k4[i, j].T, out=part.reshape(-1, c))
                np.add(dst, part, out=dst)
            w = d[:, :, j * dw:j * dw + span_w:sw]
            if j == 0 and sw == 1:
                np.copyto(w, acc.transpose(1, 0, 2, 3))
                d[:, :, span_w:].fill(0)
                continue
            if j == 0:
                d.fill(0)
            np.add(w, acc.transpose(1, 0, 2, 3), out=w)
        return d

    def _input_grad_buffer(self, grad, copied):
        """Where the transposed or grid input gradient goes: grad's own buffer when the layer copies grad into
        its padded buffer first (copied) and the shapes agree (stride 1, filters == in_channels: a ResNet's
        equal-width layers), as grad is not read after that copy; it was read just before, so the writes hit
        the cache, where a buffer of the layer's own is written cold. Otherwise a workspace."""
        shape = (grad.shape[0],) + self._in_hwc
        if copied and grad.shape == shape and grad.flags.c_contiguous and grad.flags.writeable \
                and grad.dtype == self.kernel.value.dtype:
            return grad
        return self.workspace("dx", shape)

    def _add_slices(self, parts):
        """Add the kernel and bias gradients of the batch slices other threads computed ((dk, db) per slice;
        the first slice wrote the layer's own gradients)."""
        for dk, db in parts[1:]:
            if dk is not None:
                self.kernel.grad += dk.reshape(self.kernel.grad.shape)
            if db is not None:
                self.bias.grad += db

    # -- fused with the disjoint max pooling that reads this layer's output ---------------------------------
    def pools_with(self, pool):
        """Whether this layer and `pool`, a max pooling reading its output alone, can run as one
        (`call_pooled`/`backward_pooled`): disjoint 'valid' windows, an activation that commutes with the max
        (relu or none), and the im2col forward."""
        return (getattr(pool, "pools_disjointly", False) and pool.rank == self.rank and not self.keep_preactivation
                and self.activation.name in ("relu", "linear") and not self._grid_forward)

    def call_pooled(self, x, pool, training=False):
        """pool(activation(conv(x))) without the full-size activation: im2col writes the fields of the output
        positions in pooling-phase order (kernels.im2col_pooled), so that each phase of every window is one
        GEMM of its own (but for few rows: PHASE_GEMM_ROWS), whose output the running maximum over the phases takes at
        once, in cache, keeping which phase first reached it for backward; the bias and the activation then run on the
        p*q times smaller pooled output (max(z + b) = max(z) + b exactly, as rounding is monotonic: the values are the
        two layers'; the gradient goes to the first maximum of z, which can differ from that of z + b only where two
        different values round to the same sum; relu(max z) = max relu(z); positions no window reads are not computed).
        A slice of samples [lo, hi) keeps its columns phase-major in its own rows of the buffers (`_phase_major`), as
        backward reads them."""
        x = x.reshape((x.shape[0],) + self._in_hwc)
        n, c = x.shape[0], x.shape[-1]
        (kh, kw), pads, f = self._k2, self._pads, self.filters
        (p, q), (ph, pw) = pool._pool2, pool._out_hw
        phases, m = p * q, ph * pw * f
        padded = any(map(any, pads))
        xp_all = self.workspace("xp", kernels.padded_shape(x.shape, pads)) if padded else x
        cols = self.workspace("cols", (n, phases * ph * pw * kh * kw * c))
        out = pool.workspace("out", (n, ph, pw, f))
        pool.phase_buffers(n, phases, m)
        k = self.kernel.value.reshape(-1, f)
        relu = self.activation.name == "relu"

        def work(lo, hi, t):
            xp = kernels.pad_hw(x[lo:hi], pads, out=xp_all[lo:hi] if padded else None)
            cc = _phase_major(cols, lo, hi, (p, q), (ph, pw, kh, kw, c))
            kernels.im2col_pooled(xp, self._k2, self._s2, (p, q), (ph, pw), cc, self._d2)
            rows = cc.reshape(phases, -1, k.shape[0])
            o = out[lo:hi].reshape(-1, f)
            if rows.shape[1] >= PHASE_GEMM_ROWS:
                np.matmul(rows[0], k, out=o)
                zp = self.scratch(f"z_phase{t}", o.shape)       # one phase at a time: read back from cache
                for phase in range(1, phases):
                    pool.take_phase(phase, np.matmul(rows[phase], k, out=zp), o, lo, hi)
            else:
                z = self.scratch(f"z_phases{t}", (phases,) + o.shape)
                np.matmul(rows.reshape(-1, k.shape[0]), k, out=z.reshape(-1, f))
                np.copyto(o, z[0])
                for phase in range(1, phases):
                    pool.take_phase(phase, z[phase], o, lo, hi)
            if self.bias is not None:       # max(z + b) = max(z) + b: added to the p*q times smaller output
                self.add_channels(o, self.bias.value, f"bias{t}")
            if relu:
                np.maximum(o, 0, out=o)
        backend.parallel_batches(n, work)
        self._cols, self._xp, self._z, self._a, self._cols_kept = cols, xp_all, None, None, True
        pool._out = out
        return out.reshape((n,) + pool.output_shape)

    def backward_pooled(self, grad, pool, need_input_grad=True):
        """Backward of `call_pooled`: grad (of the pooled output; may be overwritten) masked by the activation's
        derivative at each window's maximum and routed to that maximum's phase, then the kernel and bias
        gradients from the phase-ordered columns, and the input gradient as `backward_preactivation` computes
        it from the gradient laid out as the convolution's output (zero where no window reads)."""
        n, f = grad.shape[0], self.filters
        (p, q), (ph, pw) = pool._pool2, pool._out_hw
        phases, m = p * q, ph * pw * f
        kdim = self.kernel.value.size // f
        dz = self.scratch("dz_phases", (n, phases * m))
        out = pool._out.reshape(n, m)
        hit = self.scratch("relu_mask", (n, m), bool)
        relu = self.activation.name == "relu"
        want_k = self.kernel.grad is not None
        want_b = self.bias is not None and self.bias.grad is not None
        if need_input_grad:
            # the gradient laid out as the output; the per-offset input gradient takes only the part the windows
            # cover, the others the whole output with zeros where no window reads
            covered = (p * ph, q * pw)
            part_only = not (self._grid_input_grad or self._transposed_input_grad())
            g_hw = covered if part_only else self._out_hw
            g_out = self.workspace("grad_out", (n, *g_hw, f))
            if g_hw != covered:
                g_out.fill(0)
            # the per-offset input gradient by rows (not one GEMM) takes each slice's gradient rows first
            rows_first = part_only and not self._one_gemm_input_grad(n, covered)

        def work(lo, hi, t):
            g = grad[lo:hi].reshape(-1)
            if relu:
                np.multiply(g, np.greater(out[lo:hi].reshape(-1), 0, out=hit[lo:hi].reshape(-1)), out=g)
            db = None
            if want_b:      # each window's gradient goes to one phase: the sum over phases is the pooled one's
                db = self.bias.grad if t == 0 else self.workspace(f"db{t}", (f,))
                sum_rows(g.reshape(-1, f), db, self, slot=t)
            d = _phase_major(dz, lo, hi, (phases,), (m,))
            pool.route_to_phases(g, d.reshape(phases, -1), lo, hi)
            dk = None
            if want_k:
                dk = self.kernel.grad.reshape(kdim, f) if t == 0 else self.workspace(f"dk{t}", (kdim, f))
                kernels.columns_times(self._cols[lo:hi].reshape(-1, kdim), d.reshape(-1, f), dk,
                                      self.workspace(f"dk_cols{t}", dk.shape))
            if need_input_grad and rows_first:      # (p, q, m, ph, pw, f) -> (ph*p, m, pw*q, f)
                g_out[lo:hi].reshape(ph, p, hi - lo, pw, q, f)[...] = \
                    d.reshape(p, q, hi - lo, ph, pw, f).transpose(3, 0, 2, 4, 1, 5)
            elif need_input_grad:                   # (p, q, m, ph, pw, f) -> (m, ph*p, pw*q, f)
                g_out[lo:hi, :p * ph, :q * pw].reshape(hi - lo, ph, p, pw, q, f)[...] = \
                    d.reshape(p, q, hi - lo, ph, pw, f).transpose(2, 3, 0, 4, 1, 5)
            return dk, db

        self._add_slices(backend.parallel_batches(n, work))
        if not need_input_grad:
            return None
        return self._backward_slices(g_out, True, relu=False, weight_grads=False, out_hw=g_hw, rows_first=rows_first)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "dilation_rate": list(self.dilation_rate), **self._kernel_config()}


def _phase_major(buf, lo, hi, lead, rest):
    """Rows lo:hi of buf (n, ...), C-contiguous, seen as (*lead, hi - lo, *rest): the samples of a batch slice
    with the pooling phases (`lead`) outermost, so that each phase of the slice is one contiguous block."""
    return buf[lo:hi].reshape(*lead, hi - lo, *rest)


class Conv2D(_Conv):
    """2-D convolution over height and width (padding 'valid' or 'same')."""
    rank = 2


class Conv1D(_Conv):
    """1-D convolution over steps (padding 'valid', 'same' or 'causal': output t sees inputs up to t)."""
    rank = 1
    paddings = ("valid", "same", "causal")


Convolution1D, Convolution2D = Conv1D, Conv2D
