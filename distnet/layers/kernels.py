"""Array kernels behind convolution and pooling: padding arithmetic, im2col and window slices.

Images are channels-last, x: (batch, height, width, channels); sequences (batch, steps, channels) run through the
same kernels as (batch, 1, steps, channels). im2col turns every receptive field into a row
so that a convolution is ONE matrix product; `window` gives the strided slice one kernel offset touches, which
is how pooling and the convolution's input gradient loop over the kh*kw offsets (9 for 3x3), never over pixels.
"""
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided


def conv_output_size(size, kernel, stride, padding, dilation=1):
    """Output length and (before, after) padding along one axis, as TensorFlow/Keras define 'valid'/'same'
    ('causal': all padding before, so output t sees inputs <= t). A dilated kernel spans dilation*(kernel-1)+1."""
    kernel = dilation * (kernel - 1) + 1
    if padding == "causal":
        return (size - 1) // stride + 1, (kernel - 1, 0)
    if padding == "valid":
        return (size - kernel) // stride + 1, (0, 0)
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, (total // 2, total - total // 2)


def window(x, i, j, stride, out_hw):
    """The strided slice of x that kernel offset (i, j) touches: (batch, out_h, out_w, channels)."""
    (sh, sw), (oh, ow) = stride, out_hw
    return x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, :]


def im2col(xp, kernel, stride, out_hw, out, dilation=(1, 1)):
    """Copy the receptive fields of padded xp: (n, hp, wp, c) into out: (n, oh, ow, kh, kw, c); kernel offset
    (i, j) reads xp at (i * dilation[0], j * dilation[1]) from the field's corner."""
    n, _, _, c = xp.shape
    (kh, kw), (sh, sw), (oh, ow), (dh, dw) = kernel, stride, out_hw, dilation
    s0, s1, s2, s3 = xp.strides
    fields = as_strided(xp, (n, oh, ow, kh, kw, c), (s0, s1 * sh, s2 * sw, s1 * dh, s2 * dw, s3), writeable=False)
    np.copyto(out, fields)
    return out


def padded_shape(shape, pads):
    n, h, w, c = shape
    return (n, h + sum(pads[0]), w + sum(pads[1]), c)


def pad_hw(x, pads, value=0.0, out=None):
    """Pad height and width of x: (n, h, w, c) by pads ((top, bottom), (left, right)), into `out` if given."""
    if not any(pads[0]) and not any(pads[1]):
        return x
    if out is None:
        return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=value)
    out.fill(value)
    unpad_hw(out, pads)[...] = x
    return out


def unpad_hw(x, pads):
    (top, bottom), (left, right) = pads
    return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]
