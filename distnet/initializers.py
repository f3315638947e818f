"""Weight initializers with Keras's names and defaults.

Each initializer is called as `init(shape, dtype)` and draws from distnet's generator, which
`distnet.utils.set_random_seed` reseeds, so the same seed gives the same initial weights.
"""
import math

import numpy as np

from . import backend

_rng = np.random.default_rng()


def reset_generator(seed):
    global _rng
    _rng = np.random.default_rng(seed)


def generator():
    """The generator behind initializers, dropout seeds and shuffling when no explicit seed is given."""
    return _rng


def compute_fans(shape):
    """(fan_in, fan_out) as Keras computes them: Dense (in, out); Conv (kh, kw, in, out)."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


class Initializer:
    def __call__(self, shape, dtype=None):
        return np.asarray(self.sample(tuple(shape)), dtype=dtype or backend.floatx())

    def get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}({self.get_config()})"


class Zeros(Initializer):
    def sample(self, shape):
        return np.zeros(shape)


class Ones(Initializer):
    def sample(self, shape):
        return np.ones(shape)


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = float(value)

    def sample(self, shape):
        return np.full(shape, self.value)

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def _gen(self):
        return np.random.default_rng(self.seed) if self.seed is not None else _rng

    def sample(self, shape):
        return self._gen().normal(self.mean, self.stddev, shape)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(RandomNormal):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def sample(self, shape):
        return self._gen().uniform(self.minval, self.maxval, shape)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


def _truncated_normal(gen, shape, stddev):
    """Normal(0, stddev) redrawn outside two standard deviations, as TensorFlow/Keras do."""
    out = gen.normal(0.0, stddev, shape)
    bad = np.abs(out) > 2 * stddev
    while bad.any():
        out[bad] = gen.normal(0.0, stddev, int(bad.sum()))
        bad = np.abs(out) > 2 * stddev
    return out


class TruncatedNormal(RandomNormal):
    def sample(self, shape):
        return self.mean + _truncated_normal(self._gen(), shape, self.stddev)


class VarianceScaling(RandomNormal):
    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None):
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling mode must be fan_in, fan_out or fan_avg, received {mode!r}")
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError("VarianceScaling distribution must be truncated_normal, untruncated_normal or "
                             f"uniform, received {distribution!r}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed

    def sample(self, shape):
        fan_in, fan_out = compute_fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        scale = self.scale / max(1.0, fan)
        gen = self._gen()
        if self.distribution == "uniform":
            limit = math.sqrt(3.0 * scale)
            return gen.uniform(-limit, limit, shape)
        if self.distribution == "untruncated_normal":
            return gen.normal(0.0, math.sqrt(scale), shape)
        # stddev of a unit normal truncated at +-2, so the truncated draw keeps the target variance
        return _truncated_normal(gen, shape, math.sqrt(scale) / 0.87962566103423978)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed}


def _variance_scaling(name, scale, mode, distribution):
    def __init__(self, seed=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed)

    def get_config(self):
        return {"seed": self.seed}
    return type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config})


GlorotUniform = _variance_scaling("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _variance_scaling("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _variance_scaling("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _variance_scaling("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _variance_scaling("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _variance_scaling("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(RandomNormal):
    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def sample(self, shape):
        rows = math.prod(shape[:-1]) if len(shape) > 1 else 1
        cols = shape[-1]
        a = self._gen().normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return self.gain * q[:rows, :cols].reshape(shape)

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant,
    "random_normal": RandomNormal, "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal,
    "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal,
    "he_uniform": HeUniform, "he_normal": HeNormal,
    "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal, "orthogonal": Orthogonal,
}
_CLASS_TO_NAME = {cls: name for name, cls in _BY_NAME.items()}
_ALIASES = {"uniform": "random_uniform", "normal": "random_normal"}    # Keras's short names (Embedding: 'uniform')


def get(identifier):
    """An initializer from a Keras name ('glorot_uniform'), a class name, an instance, or a callable."""
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, type)):
        return identifier
    if isinstance(identifier, dict):
        return _BY_NAME[identifier["class_name"]](**identifier.get("config", {}))
    if isinstance(identifier, str):
        key = _ALIASES.get(identifier, identifier)
        key = key if key in _BY_NAME else _camel_to_snake(key)
        if key in _BY_NAME:
            return _BY_NAME[key]()
    raise ValueError(f"Unknown initializer {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def serialize(init):
    name = _CLASS_TO_NAME.get(type(init))
    if name is None:
        raise ValueError(f"Cannot serialize custom initializer {init!r}")
    return {"class_name": name, "config": init.get_config()}


def _camel_to_snake(name):
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))
