"""Conv2D as im2col + one GEMM. x: (batch, h, w, in_channels) -> (batch, out_h, out_w, filters);
kernel: (kh, kw, in_channels, filters), Keras's layout."""
import numpy as np

from .. import activations, initializers, regularizers
from . import kernels
from .base import ActivatedLayer, normalize_tuple, sum_rows


class Conv2D(ActivatedLayer):
    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        where = f"Conv2D layer '{self.name}'"
        if not isinstance(filters, (int, np.integer)) or filters <= 0:
            raise ValueError(f"{where} expects filters to be a positive int, received {filters!r}")
        if padding not in ("valid", "same"):
            raise ValueError(f"{where} expects padding 'valid' or 'same', received {padding!r}")
        if data_format not in (None, "channels_last"):
            raise ValueError(f"{where} supports data_format='channels_last' only, received {data_format!r}")
        if normalize_tuple(dilation_rate, 2, "dilation_rate", where) != (1, 1):
            raise ValueError(f"{where} supports dilation_rate=(1, 1) only, received {dilation_rate!r}")
        self.filters = int(filters)
        self.kernel_size = normalize_tuple(kernel_size, 2, "kernel_size", where)
        self.strides = normalize_tuple(strides, 2, "strides", where)
        self.padding = padding
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _geometry(self, input_shape):
        h, w, _ = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        oh, pad_h = kernels.conv_output_size(h, kh, sh, self.padding)
        ow, pad_w = kernels.conv_output_size(w, kw, sw, self.padding)
        return (oh, ow), (pad_h, pad_w)

    def validate_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D layer '{self.name}' expects input of rank 4 (batch, height, width, "
                             f"channels), received shape {(None,) + tuple(input_shape)}")
        (oh, ow), _ = self._geometry(input_shape)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"Conv2D layer '{self.name}' with kernel_size {self.kernel_size} does not fit input "
                             f"of shape {(None,) + tuple(input_shape)} with padding '{self.padding}'")

    def build(self, input_shape):
        kh, kw = self.kernel_size
        self.kernel = self.add_weight("kernel", (kh, kw, input_shape[-1], self.filters), self.kernel_initializer,
                                      self.kernel_regularizer)
        self.bias = self.add_weight("bias", (self.filters,), self.bias_initializer,
                                    self.bias_regularizer) if self.use_bias else None
        self._out_hw, self._pads = self._geometry(input_shape)

    def compute_output_shape(self, input_shape):
        (oh, ow), _ = self._geometry(input_shape)
        return (oh, ow, self.filters)

    def call(self, x, training=False):
        n = x.shape[0]
        kh, kw = self.kernel_size
        xp = kernels.pad_hw(x, self._pads, out=self.workspace("xp", kernels.padded_shape(x.shape, self._pads))
                            if any(map(any, self._pads)) else None)
        cols = kernels.im2col(xp, self.kernel_size, self.strides, self._out_hw,
                              self.workspace("cols", (n, *self._out_hw, kh, kw, x.shape[-1])))
        self._cols = cols
        k = self.kernel.value.reshape(-1, self.filters)
        z = self.workspace("z", (n, *self._out_hw, self.filters))
        np.matmul(cols.reshape(-1, k.shape[0]), k, out=z.reshape(-1, self.filters))
        if self.bias is not None:
            z += self.bias.value
        return self._activate(z)

    def backward_preactivation(self, grad_z, need_input_grad=True):
        k = self.kernel.value.reshape(-1, self.filters)
        cols2 = self._cols.reshape(-1, k.shape[0])
        g2 = grad_z.reshape(-1, self.filters)
        if self.kernel.grad is not None:
            np.matmul(cols2.T, g2, out=self.kernel.grad.reshape(-1, self.filters))
        if self.bias is not None and self.bias.grad is not None:
            sum_rows(g2, self.bias.grad, self)
        if not need_input_grad:
            return None
        # d(input): for each kernel offset, one GEMM with that offset's (in, filters) slice, added into the
        # window it touched. Measured 1.6x faster than one big GEMM + col2im: the adds run over contiguous
        # rows instead of channel-sized pieces, and no (rows x kh*kw*in) buffer is written.
        n = grad_z.shape[0]
        dxp = self.workspace("dxp", kernels.padded_shape((n,) + self.input_shape, self._pads))
        part = self.workspace("dx_part", (n, *self._out_hw, self.input_shape[-1]))
        dxp.fill(0)
        kh, kw = self.kernel_size
        for i in range(kh):
            for j in range(kw):
                np.matmul(g2, self.kernel.value[i, j].T, out=part.reshape(g2.shape[0], part.shape[-1]))
                kernels.window(dxp, i, j, self.strides, self._out_hw)[...] += part
        return kernels.unpad_hw(dxp, self._pads)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": list(self.kernel_size),
                "strides": list(self.strides), "padding": self.padding,
                "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}
