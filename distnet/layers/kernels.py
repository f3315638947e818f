"""Array kernels behind convolution and pooling: padding arithmetic, im2col and window slices.

Images are channels-last, x: (batch, height, width, channels); sequences (batch, steps, channels) run through the
same kernels as (batch, 1, steps, channels). im2col turns every receptive field into a row
so that a convolution is ONE matrix product; `window` gives the strided slice one kernel offset touches, which
is how pooling and the convolution's input gradient loop over the kh*kw offsets (9 for 3x3), never over pixels.
"""
import functools
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
    (i, j) reads xp at (i * dilation[0], j * dilation[1]) from the field's corner: im2col_pooled with one phase."""
    im2col_pooled(xp, kernel, stride, (1, 1), out_hw, out[None, None], dilation)
    return out


def im2col_pooled(xp, kernel, stride, pool, pooled_hw, out, dilation=(1, 1)):
    """im2col of the output positions a disjoint (p, q) max pooling reads, in pooling-phase order: out:
    (p, q, n, ph, pw, kh, kw, c), row (py, px, n, y, x) the field of output position (p*y + py, q*x + px) of
    sample n. Each phase of the pooling windows is one contiguous block of rows (one GEMM); positions no window
    reads (the last row or column of an odd-sized output) are left out."""
    n, _, _, c = xp.shape
    (kh, kw), (sh, sw), (p, q), (ph, pw), (dh, dw) = kernel, stride, pool, pooled_hw, dilation
    s0, s1, s2, s3 = xp.strides
    shape = (p, q, n, ph, pw, kh)
    strides = (s1 * sh, s2 * sw, s0, s1 * sh * p, s2 * sw * q, s1 * dh)
    if dw == 1 and xp.dtype == out.dtype and xp.flags.c_contiguous and out.flags.c_contiguous:
        # a kernel row (kw pixels x c channels) is one contiguous run of the input: copied as ONE element of
        # that many bytes, 1.6x faster for a first layer's 3x3x3 (numpy's copy loop costs per element, and
        # its runs would otherwise be c * kw = 9 floats). The same dtype only: the bytes are copied as they
        # are, where copyto casts an input of another type (a float64 or float16 array given to a float32 layer)
        run = _void(kw * c * xp.itemsize)
        fields = np.ndarray(shape, run, buffer=xp, strides=strides)
        np.copyto(out.reshape(shape + (kw * c,)).view(run)[..., 0], fields)
        return out
    fields = as_strided(xp, shape + (kw, c), strides + (s2 * dw, s3), writeable=False)
    np.copyto(out, fields)
    return out


@functools.lru_cache(maxsize=None)
def _void(nbytes):
    return np.dtype((np.void, nbytes))


def columns_times(cols, g, out, tmp, chunk=1024):
    """out = cols.T @ g (cols: (rows, k), g: (rows, f)): the kernel gradient of an im2col convolution. With
    few columns (k < 64: a first layer's 3x3x3 = 27) as a sum over blocks of `chunk` rows, which OpenBLAS runs
    ~1.35x faster than one long reduction (28800 rows: 0.56 against 0.75 ms); tmp: like out."""
    rows = cols.shape[0]
    if cols.shape[1] >= 64 or rows <= 2 * chunk:
        return np.matmul(cols.T, g, out=out)
    np.matmul(cols[:chunk].T, g[:chunk], out=out)
    for lo in range(chunk, rows, chunk):
        np.add(out, np.matmul(cols[lo:lo + chunk].T, g[lo:lo + chunk], out=tmp), out=out)
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
    (top, bottom), (left, right) = pads
    h, w = out.shape[1:3]
    rows = out[:, top:h - bottom]
    for border in (out[:, :top], out[:, h - bottom:], rows[:, :, :left], rows[:, :, w - right:]):
        border.fill(value)                    # only the border: the inside is overwritten next
    unpad_hw(out, pads)[...] = x
    return out


def unpad_hw(x, pads):
    (top, bottom), (left, right) = pads
    return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]


# -- stride-1 convolution on the flattened padded grid (no im2col) ---------------------------------------------
def grid_chunk(grid_hw, channels, budget=40000):
    """Samples per chunk of the grid kernels, so that a chunk's input, sum and product buffers (~budget floats
    each) stay in the L2 cache across the kh*kw products."""
    return max(1, budget // (grid_hw[0] * grid_hw[1] * channels))


def _grid_shift(grid_w, kernel, dilation):
    """How far (in grid rows of the flattened (n*hp*wp, c) view) the last kernel offset reads past the first."""
    return (kernel[0] - 1) * dilation[0] * grid_w + (kernel[1] - 1) * dilation[1]


def conv_grid(xp, k4, dilation, out, acc, tmp, chunk):
    """Stride-1 convolution out[n, y, x] = sum_ij xp[n, y + i*dh, x + j*dw] @ k4[i, j] without im2col.

    xp: (n, hp, wp, c) padded input; k4: (kh, kw, c, f); out: (n, oh, ow, f) with oh = hp - (kh-1)*dh. Seen as
    (n*hp*wp, c) rows, the input that kernel offset (i, j) multiplies is ONE contiguous slice of rows, shifted by
    i*dh*wp + j*dw, for every output position of the padded grid at once: kh*kw GEMMs with K = c, summed in acc,
    then each sample's valid (oh, ow) corner is copied out (the grid's other positions mix rows of the next
    image row or sample and are dropped). acc, tmp: (chunk*hp*wp, f) buffers; chunk samples at a time."""
    n, hp, wp, c = xp.shape
    kh, kw = k4.shape[:2]
    oh, ow = out.shape[1:3]
    shift = _grid_shift(wp, (kh, kw), dilation)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        rows_in = xp[lo:hi].reshape(-1, c)
        rows = rows_in.shape[0] - shift       # grid positions whose receptive field lies inside this chunk
        a, t = acc[:rows], tmp[:rows]
        for i in range(kh):
            for j in range(kw):
                o = i * dilation[0] * wp + j * dilation[1]
                if o == 0:
                    np.matmul(rows_in[:rows], k4[i, j], out=a)
                else:
                    np.matmul(rows_in[o:o + rows], k4[i, j], out=t)
                    np.add(a, t, out=a)
        out[lo:hi] = acc[:(hi - lo) * hp * wp].reshape(hi - lo, hp, wp, -1)[:, :oh, :ow]
    return out


def conv_grid_kernel_grad(xp, g_grid, kernel, dilation, out, tmp, chunk, offset=0):
    """The kernel gradient of `conv_grid`: out[i, j] = sum over samples and positions of
    xp[n, y + i*dh, x + j*dw]^T g[n, y, x], with g_grid: (n, hp, wp, f) the output gradient on xp's grid, zero
    elsewhere: g[n, y, x] at flattened row offset + (y*wp + x) of each sample (offset 0: the top-left corner;
    the rows a shift reaches past a sample's end are the next one's zero border). out: (kh, kw, c, f);
    tmp: (c, f)."""
    n, hp, wp, c = xp.shape
    f = g_grid.shape[-1]
    shift = _grid_shift(wp, kernel, dilation)
    out.fill(0)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        rows_in, rows_g = xp[lo:hi].reshape(-1, c), g_grid[lo:hi].reshape(-1, f)[offset:]
        rows = rows_in.shape[0] - shift
        for i in range(kernel[0]):
            for j in range(kernel[1]):
                o = i * dilation[0] * wp + j * dilation[1]
                np.matmul(rows_in[o:o + rows].T, rows_g[:rows], out=tmp)
                np.add(out[i, j], tmp, out=out[i, j])
    return out


def to_grid(g, grid_hw, out):
    """g: (n, oh, ow, f) placed in the top-left corner of out: (n, hp, wp, f), zeros elsewhere."""
    return pad_hw(g, ((0, grid_hw[0] - g.shape[1]), (0, grid_hw[1] - g.shape[2])), out=out)
