"""Optimizers with Keras 3's update rules and defaults, applied to ONE flat parameter buffer.

`apply(params, grads)` is a handful of in-place NumPy operations over the whole model; slots (momenta, second
moments) are flat buffers of the same length, allocated once in `build`.
"""
import math
import types

import numpy as np

from .layers.base import page_aligned_empty, page_aligned_zeros


# -- learning-rate schedules --------------------------------------------------------------------------------
class LearningRateSchedule:
    def __call__(self, step):
        raise NotImplementedError  # abstract

    def get_config(self):
        return dict(self.__dict__)


class ExponentialDecay(LearningRateSchedule):
    """lr = initial * decay_rate ** (step / decay_steps), with integer division when staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name=None):
        if decay_steps <= 0:
            raise ValueError(f"ExponentialDecay expects decay_steps > 0, received {decay_steps!r}")
        self.initial_learning_rate, self.decay_steps = float(initial_learning_rate), decay_steps
        self.decay_rate, self.staircase = float(decay_rate), staircase

    def __call__(self, step):
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)


class CosineDecay(LearningRateSchedule):
    """Optional linear warm-up to warmup_target, then cosine decay to alpha * peak over decay_steps."""

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name=None, warmup_target=None,
                 warmup_steps=0):
        if decay_steps <= 0:
            raise ValueError(f"CosineDecay expects decay_steps > 0, received {decay_steps!r}")
        self.initial_learning_rate, self.decay_steps, self.alpha = float(initial_learning_rate), decay_steps, alpha
        self.warmup_target, self.warmup_steps = warmup_target, warmup_steps

    def __call__(self, step):
        if self.warmup_target is not None and step < self.warmup_steps:
            return self.initial_learning_rate + (self.warmup_target - self.initial_learning_rate) * (
                step / self.warmup_steps)
        peak = self.initial_learning_rate if self.warmup_target is None else self.warmup_target
        s = min(step - (self.warmup_steps if self.warmup_target is not None else 0), self.decay_steps)
        cos = 0.5 * (1 + math.cos(math.pi * s / self.decay_steps))
        return peak * ((1 - self.alpha) * cos + self.alpha)


class PiecewiseConstantDecay(LearningRateSchedule):
    def __init__(self, boundaries, values, name=None):
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstantDecay needs len(values) == len(boundaries) + 1, received "
                             f"{len(boundaries)} boundaries and {len(values)} values")
        self.boundaries, self.values = list(boundaries), [float(v) for v in values]

    def __call__(self, step):
        for b, v in zip(self.boundaries, self.values):
            if step <= b:
                return v
        return self.values[-1]


_SCHEDULES = {c.__name__: c for c in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)}


# -- optimizers ---------------------------------------------------------------------------------------------
class Optimizer:
    slot_names = ()

    def __init__(self, learning_rate=0.001, weight_decay=None, clipnorm=None, clipvalue=None,
                 global_clipnorm=None, name=None):
        self._learning_rate = None
        if sum(c is not None for c in (clipnorm, clipvalue, global_clipnorm)) > 1:
            raise ValueError("Only one of clipnorm, clipvalue and global_clipnorm can be set, received "
                             f"clipnorm={clipnorm}, clipvalue={clipvalue}, global_clipnorm={global_clipnorm}")
        for arg, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
            if v is not None and not v > 0:
                raise ValueError(f"{type(self).__name__} expects {arg} > 0, received {v!r}")
        self.learning_rate = learning_rate
        self.weight_decay, self.clipnorm, self.clipvalue = weight_decay, clipnorm, clipvalue
        self.global_clipnorm = global_clipnorm
        self.name = name or type(self).__name__.lower()
        self.iterations = 0
        self.slots = {}
        self._segments = None

    @property
    def learning_rate(self):
        """The learning rate of the next update, as Keras 3 gives it: the schedule's value at `iterations` when
        the optimizer was created with a LearningRateSchedule (see `schedule`)."""
        return self.current_learning_rate()

    @property
    def schedule(self):
        """The LearningRateSchedule this optimizer was created with, or None for a constant learning rate."""
        lr = self._learning_rate
        return lr if isinstance(lr, LearningRateSchedule) else None

    @learning_rate.setter
    def learning_rate(self, value):
        if not isinstance(value, LearningRateSchedule) and self.schedule is not None:
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its `learning_rate` "
                            "constructor argument, hence its learning rate is not settable. If you need the "
                            "learning rate to be settable, you should instantiate the optimizer with a float "
                            f"`learning_rate` argument (received {value!r}).")
        if not isinstance(value, LearningRateSchedule):
            if not isinstance(value, (int, float, np.floating, np.integer)) or not value >= 0:
                raise ValueError(f"{type(self).__name__} expects learning_rate to be a float >= 0 or a "
                                 f"LearningRateSchedule, received {value!r}")
            value = float(value)
        self._learning_rate = value

    def current_learning_rate(self):
        lr = self._learning_rate
        return lr(self.iterations) if isinstance(lr, LearningRateSchedule) else lr

    def build(self, params, segments=None):
        """Allocate slots like `params` (flat); segments [(offset, size)] mark variables for per-variable clipnorm."""
        self.slots = {name: page_aligned_zeros(params.size, params.dtype).reshape(params.shape)
                      for name in self.slot_names}
        self._tmp = page_aligned_empty(params.size, params.dtype).reshape(params.shape)
        self._segments = segments or [(0, params.size)]
        self._init_slots()

    def _init_slots(self):
        pass

    def apply(self, params, grads):
        """One update of params (flat, in place) from the averaged grads (flat; clipped in place)."""
        self._clip(grads)
        lr = self.current_learning_rate()
        if self.weight_decay:
            params -= params * params.dtype.type(self.weight_decay * lr)
        self._update(params, grads, params.dtype.type(lr))
        self.iterations += 1

    def _clip(self, g):
        if self.clipvalue is not None:
            np.clip(g, -self.clipvalue, self.clipvalue, out=g)
        elif self.global_clipnorm is not None:
            norm = math.sqrt(float(np.dot(g, g)))
            if norm > self.global_clipnorm:
                g *= g.dtype.type(self.global_clipnorm / norm)
        elif self.clipnorm is not None:
            for offset, size in self._segments:
                seg = g[offset:offset + size]
                norm = math.sqrt(float(np.dot(seg, seg)))
                if norm > self.clipnorm:
                    seg *= g.dtype.type(self.clipnorm / norm)

    def _update(self, params, grads, lr):
        raise NotImplementedError  # abstract

    # -- state, for checkpoints -----------------------------------------------------------------------------
    def get_state(self):
        return {"iterations": self.iterations, "slots": {k: v.copy() for k, v in self.slots.items()}}

    def set_state(self, state):
        self.iterations = int(state["iterations"])
        for k, v in state["slots"].items():
            if k not in self.slots or self.slots[k].shape != np.shape(v):
                raise ValueError(f"Optimizer state slot {k!r} of shape {np.shape(v)} does not fit this model's "
                                 f"optimizer (slots {({n: s.shape for n, s in self.slots.items()})})")
            self.slots[k][...] = v

    def get_config(self):
        lr = self._learning_rate
        lr = {"class_name": type(lr).__name__, "config": lr.get_config()} \
            if isinstance(lr, LearningRateSchedule) else lr
        config = {"learning_rate": lr, "weight_decay": self.weight_decay, "clipnorm": self.clipnorm,
                  "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm, "name": self.name}
        config.update(self._hyper())
        return config

    def _hyper(self):
        return {}


class SGD(Optimizer):
    """m = momentum*m - lr*g; w += m (or w += momentum*m - lr*g with Nesterov); plain w -= lr*g without momentum."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        if not 0 <= momentum <= 1:
            raise ValueError(f"SGD expects momentum in [0, 1], received {momentum!r}")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.slot_names = ("momentum",) if self.momentum else ()

    def _update(self, w, g, lr):
        if not self.momentum:
            np.multiply(g, lr, out=self._tmp)
            w -= self._tmp
            return
        m, mu = self.slots["momentum"], w.dtype.type(self.momentum)
        m *= mu
        np.multiply(g, lr, out=self._tmp)
        m -= self._tmp
        if self.nesterov:
            w += m * mu
            w -= self._tmp
        else:
            w += m

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Keras 3's Adam: alpha = lr*sqrt(1-b2^t)/(1-b1^t); m += (g-m)(1-b1); v += (g^2-v)(1-b2);
    w -= alpha*m/(sqrt(v)+eps)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, amsgrad
        self.slot_names = ("m", "v", "v_hat") if amsgrad else ("m", "v")

    def _update(self, w, g, lr):
        t = self.iterations + 1
        alpha = w.dtype.type(lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t))
        m, v, tmp = self.slots["m"], self.slots["v"], self._tmp
        np.subtract(g, m, out=tmp)
        tmp *= w.dtype.type(1 - self.beta_1)
        m += tmp
        np.square(g, out=tmp)
        tmp -= v
        tmp *= w.dtype.type(1 - self.beta_2)
        v += tmp
        if self.amsgrad:
            v = np.maximum(self.slots["v_hat"], v, out=self.slots["v_hat"])
        np.sqrt(v, out=tmp)
        tmp += w.dtype.type(self.epsilon)
        np.divide(m, tmp, out=tmp)
        tmp *= alpha
        w -= tmp

    def _hyper(self):
        return {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (w -= w * weight_decay * lr before the Adam step); Keras default 0.004."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, **kwargs):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **kwargs)


class RMSprop(Optimizer):
    """v = rho*v + (1-rho)*g^2; w -= lr*g/sqrt(v + eps) (centered: v - mean_g^2; optional momentum)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered
        self.slot_names = ("velocity",) + (("average_gradient",) if centered else ()) + \
            (("momentum",) if momentum else ())

    def _update(self, w, g, lr):
        dt = w.dtype.type
        vel, tmp = self.slots["velocity"], self._tmp
        vel *= dt(self.rho)
        np.square(g, out=tmp)
        tmp *= dt(1 - self.rho)
        vel += tmp
        if self.centered:
            avg = self.slots["average_gradient"]
            avg *= dt(self.rho)
            avg += g * dt(1 - self.rho)
            np.square(avg, out=tmp)
            np.subtract(vel, tmp, out=tmp)
        else:
            tmp[...] = vel
        tmp += dt(self.epsilon)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        if self.momentum:
            mom = self.slots["momentum"]
            mom *= dt(self.momentum)
            mom += tmp
            w -= mom
        else:
            w -= tmp

    def _hyper(self):
        return {"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon, "centered": self.centered}


class Adagrad(Optimizer):
    """acc += g^2; w -= lr*g/sqrt(acc + eps); acc starts at initial_accumulator_value."""
    slot_names = ("accumulator",)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon

    def _init_slots(self):
        self.slots["accumulator"][...] = self.initial_accumulator_value

    def _update(self, w, g, lr):
        acc, tmp = self.slots["accumulator"], self._tmp
        np.square(g, out=tmp)
        acc += tmp
        np.add(acc, w.dtype.type(self.epsilon), out=tmp)
        np.sqrt(tmp, out=tmp)
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        w -= tmp

    def _hyper(self):
        return {"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad}
_CLASSES = {c.__name__: c for c in _BY_NAME.values()}


def get(identifier):
    """An optimizer from a Keras name ('adam'), an instance, or a serialized dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        config = dict(identifier.get("config", {}))
        lr = config.get("learning_rate")
        if isinstance(lr, dict):
            config["learning_rate"] = _SCHEDULES[lr["class_name"]](**lr["config"])
        return _CLASSES[identifier["class_name"]](**config)
    if isinstance(identifier, str) and identifier.lower() in _BY_NAME:
        return _BY_NAME[identifier.lower()]()
    raise ValueError(f"Unknown optimizer {identifier!r}; valid names: {', '.join(sorted(_BY_NAME))}")


def serialize(opt):
    return {"class_name": type(opt).__name__, "config": opt.get_config()}


schedules = types.SimpleNamespace(**_SCHEDULES)  # keras.optimizers.schedules.X
