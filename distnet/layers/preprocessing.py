"""Keras preprocessing layers: Rescaling, RandomFlip, RandomTranslation. Images are (batch, height, width,
channels); none of these layers has weights.

The random layers are on in training and the identity at inference (training=False), as in Keras. Their draws
are a pure function of (layer seed, epoch, GLOBAL sample index), computed by a counter-based hash, vectorised
over the batch: a sample is augmented the same way whichever worker holds it and however the global batch is
split, so the augmented stream does not depend on the number of workers. The trainer tells each layer with
`uses_sample_ids` which samples the next batch holds:

    for layer in model.layers:
        if getattr(layer, "uses_sample_ids", False):
            layer.set_batch_context(epoch, sample_ids)      # sample_ids: (batch,) int64 global indices

Without a context (a direct call) a layer numbers the samples it sees itself, so successive calls differ.
"""
import numpy as np

from .. import initializers
from .base import Layer

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix64(z):
    """SplitMix64's finaliser: a bijection of uint64 that scrambles every input bit into every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def sample_uniforms(seed, epoch, sample_ids, draws):
    """(n, draws) float64 uniforms in [0, 1), a pure function of (seed, epoch, sample id, draw number)."""
    ids = np.asarray(sample_ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        key = _mix64(np.array([seed % 2**64], np.uint64) + _GOLDEN)
        key = _mix64(key ^ (np.array([epoch % 2**64], np.uint64) * _GOLDEN))
        per_sample = _mix64(key ^ _mix64(ids + _GOLDEN))
        counters = per_sample[:, None] + (np.arange(1, draws + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        bits = _mix64(counters) >> np.uint64(11)
    return bits.astype(np.float64) * 2.0 ** -53


class RandomLayer(Layer):
    """Base of the random preprocessing layers: seeds, the batch context, and image-shape checks."""
    uses_sample_ids = True

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects seed to be an int or None, "
                             f"received {seed!r}")
        self.seed = None if seed is None else int(seed)
        # Unseeded: drawn from distnet's global generator, like Dropout; every rank builds the same model in the
        # same order, so after utils.set_random_seed every rank draws the same key.
        self._key = self.seed if seed is not None else int(initializers.generator().integers(2**63))
        self._context, self._seen = None, 0

    def set_batch_context(self, epoch, sample_ids):
        """Before a training forward: the epoch and the global indices (batch,) of the next call's samples."""
        ids = np.asarray(sample_ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise ValueError(f"{type(self).__name__} layer '{self.name}': set_batch_context expects a 1-D array "
                             f"of integer sample ids, received shape {ids.shape} dtype {ids.dtype}")
        self._context = (int(epoch), ids.astype(np.int64))

    def validate_input_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects images of shape (batch, height, "
                             f"width, channels), received shape {(None,) + tuple(input_shape)}")

    def _uniforms(self, n, draws):
        context, self._context = self._context, None
        if context is None:
            epoch, ids = -1, np.arange(self._seen, self._seen + n, dtype=np.int64)
            self._seen += n
        else:
            epoch, ids = context
            if len(ids) != n:
                raise ValueError(f"{type(self).__name__} layer '{self.name}': set_batch_context gave {len(ids)} "
                                 f"sample ids, but the batch has {n} samples")
        return sample_uniforms(self._key, epoch, ids, draws)

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


class Rescaling(Layer):
    """y = x * scale + offset (scale, offset: scalars or per-channel arrays), at training and inference.
    E.g. Rescaling(1 / 255) maps uint8 pixels to [0, 1], Rescaling(1 / 127.5, offset=-1) to [-1, 1]."""
    per_sample = True

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset
        self._scale, self._offset = _as_float(scale, "scale", self), _as_float(offset, "offset", self)

    def call(self, x, training=False):
        out = self.workspace("out", x.shape)
        np.multiply(x, self._scale, out=out, casting="unsafe")
        out += self._offset
        return out

    def backward(self, grad, need_input_grad=True):
        return np.multiply(grad, self._scale, out=grad, casting="unsafe") if need_input_grad else None

    def get_config(self):
        return {**super().get_config(), "scale": _plain(self.scale), "offset": _plain(self.offset)}


class RandomFlip(RandomLayer):
    """Flips each image left-right ("horizontal") and/or upside down ("vertical"), each with probability 1/2."""
    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode="horizontal_and_vertical", seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if mode not in self.MODES:
            raise ValueError(f"RandomFlip layer '{self.name}' expects mode to be one of {self.MODES}, "
                             f"received {mode!r}")
        self.mode = mode
        self._flips = None

    def call(self, x, training=False):
        if not training:
            self._context, self._flips = None, None
            return x
        u = self._uniforms(x.shape[0], 2)
        self._flips = (u[:, 0] < 0.5 if self.mode != "vertical" else None,
                       u[:, 1] < 0.5 if self.mode != "horizontal" else None)
        return self._flip(x, np.array(x))

    def _flip(self, x, out):
        """out: a copy of x; flip the chosen rows of it (flips are their own inverse)."""
        h, v = self._flips
        if h is not None:
            out[h] = x[h][:, :, ::-1]
        if v is not None:
            out[v] = out[v][:, ::-1]
        return out

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        return grad if self._flips is None else self._flip(grad, np.array(grad))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


class RandomTranslation(RandomLayer):
    """Shifts each image by a random fraction of its size: height_factor=(-0.2, 0.3) shifts by -20% (up) to
    +30% (down) of the height, height_factor=0.2 by -20% to +20%; width_factor likewise (negative: left).

    fill_mode: how the uncovered border is filled: "reflect" (d c b a | a b c d | d c b a), "wrap"
    (a b c d | a b c d), "nearest" (a a a a | a b c d | d d d d) or "constant" (fill_value).
    interpolation: "bilinear" (fractional shifts) or "nearest" (whole pixels)."""
    FILL_MODES = ("reflect", "wrap", "nearest", "constant")
    INTERPOLATIONS = ("bilinear", "nearest")

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self._height = _factor_range(height_factor, "height_factor", self)
        self._width = _factor_range(width_factor, "width_factor", self)
        for value, allowed, arg in ((fill_mode, self.FILL_MODES, "fill_mode"),
                                    (interpolation, self.INTERPOLATIONS, "interpolation")):
            if value not in allowed:
                raise ValueError(f"RandomTranslation layer '{self.name}' expects {arg} to be one of {allowed}, "
                                 f"received {value!r}")
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, float(fill_value)

    def call(self, x, training=False):
        if not training:
            self._context = None
            return x
        n, h, w, _ = x.shape
        u = self._uniforms(n, 2)
        dy = (self._height[0] + (self._height[1] - self._height[0]) * u[:, 0]) * h
        dx = (self._width[0] + (self._width[1] - self._width[0]) * u[:, 1]) * w
        x = x if x.dtype.kind == "f" else x.astype(self.dtype)
        return self._shift(self._shift(x, dy, axis=1), dx, axis=2)

    def _shift(self, x, shift, axis):
        """out[:, i] = x[:, i - shift] along axis 1 (rows) or 2 (columns), per sample, interpolated."""
        if self.interpolation == "nearest":
            return self._gather(x, np.round(shift).astype(np.int64), axis)
        whole = np.floor(shift).astype(np.int64)
        frac = (shift - whole).astype(x.dtype).reshape((-1, 1, 1, 1))
        return self._gather(x, whole, axis) * (1 - frac) + self._gather(x, whole + 1, axis) * frac

    def _gather(self, x, shift, axis):
        length = x.shape[axis]
        p = np.arange(length)[None, :] - shift[:, None]                  # (n, length) source positions
        if self.fill_mode == "reflect":
            q = np.mod(p, 2 * length)
            idx = np.where(q < length, q, 2 * length - 1 - q)
        elif self.fill_mode == "wrap":
            idx = np.mod(p, length)
        else:
            idx = np.clip(p, 0, length - 1)
        rows = np.arange(x.shape[0])[:, None]
        out = x[rows, idx] if axis == 1 else x[rows, :, idx].transpose(0, 2, 1, 3)
        if self.fill_mode == "constant":
            outside = (p < 0) | (p >= length)
            mask = outside[:, :, None, None] if axis == 1 else outside[:, None, :, None]
            out = np.where(mask, x.dtype.type(self.fill_value), out)
        return out

    def backward(self, grad, need_input_grad=True):
        if need_input_grad:
            raise ValueError(f"RandomTranslation layer '{self.name}' has no input gradient: put it first in the "
                             "model, where Keras's preprocessing layers go")

    def get_config(self):
        return {**super().get_config(), "height_factor": _plain(self.height_factor),
                "width_factor": _plain(self.width_factor), "fill_mode": self.fill_mode,
                "interpolation": self.interpolation, "fill_value": self.fill_value}


def _factor_range(factor, arg, layer):
    """Keras's factor argument: a float f means (-f, f); a pair (lower, upper); values in [-1, 1]."""
    try:
        pair = isinstance(factor, (tuple, list)) and len(factor) == 2
        lower, upper = (float(factor[0]), float(factor[1])) if pair else (-float(factor), float(factor))
    except (TypeError, ValueError):
        raise ValueError(f"{type(layer).__name__} layer '{layer.name}' expects {arg} to be a float or a "
                         f"(lower, upper) pair, received {factor!r}") from None
    if not (-1 <= lower <= 1 and -1 <= upper <= 1):
        raise ValueError(f"{type(layer).__name__} layer '{layer.name}' expects {arg} with values in [-1, 1], "
                         f"received {factor!r}")
    if lower > upper:
        raise ValueError(f"{type(layer).__name__} layer '{layer.name}' expects {arg} with lower <= upper, "
                         f"received {factor!r}")
    return lower, upper


def _as_float(value, arg, layer):
    try:
        v = np.asarray(value, dtype=layer.dtype)
    except (TypeError, ValueError):
        raise ValueError(f"{type(layer).__name__} layer '{layer.name}' expects {arg} to be a number or an array "
                         f"of numbers, received {value!r}") from None
    return v if v.ndim else v[()]


def _plain(value):
    """A JSON-friendly copy of a config value (numbers, lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return list(value) if isinstance(value, tuple) else value


__all__ = ["RandomFlip", "RandomTranslation", "Rescaling", "sample_uniforms"]
