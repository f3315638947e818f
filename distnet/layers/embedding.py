"""Embedding: integer ids -> rows of a trainable table. x: (batch, ...) ids in [0, input_dim) ->
(batch, ..., output_dim); embeddings: (input_dim, output_dim), Keras's layout and its 'uniform' default init.

Ids may arrive as floats (a model casts its inputs to float32): they are rounded to ints here; a float32 holds
every integer up to 2**24 exactly, so vocabularies up to 16.7 million ids are safe.
"""
import numpy as np

from .. import initializers, regularizers
from .base import Layer


class Embedding(Layer):
    per_sample = True
    integer_input = True
    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, weights=None, lora_rank=None, **kwargs):
        super().__init__(**kwargs)
        where = f"Embedding layer '{self.name}'"
        for arg, v in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"{where} expects {arg} to be a positive int, received {v!r}")
        if mask_zero:
            raise ValueError(f"{where}: mask_zero=True is not supported (distnet has no masking); received "
                             f"mask_zero={mask_zero!r}. Pad with an id the model can learn to ignore instead")
        for arg, v in (("embeddings_constraint", embeddings_constraint), ("lora_rank", lora_rank)):
            if v is not None:
                raise ValueError(f"{where} does not support {arg}, received {v!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.mask_zero = False
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = regularizers.get(embeddings_regularizer)
        self._initial_weights = weights

    def validate_input_shape(self, input_shape):
        if len(input_shape) < 1:
            raise ValueError(f"Embedding layer '{self.name}' expects input of rank >= 2 (batch, ...), received "
                             f"shape {(None,) + tuple(input_shape)}")

    def build(self, input_shape):
        self.embeddings = self.add_weight("embeddings", (self.input_dim, self.output_dim),
                                          self.embeddings_initializer, self.embeddings_regularizer)
        if self._initial_weights is not None:
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _ids(self, x):
        """x as an int array of ids, checked to lie in [0, input_dim)."""
        ids = x if x.dtype.kind in "iu" else np.rint(x)
        if ids.size:
            lo, hi = ids.min(), ids.max()
            if lo < 0 or hi >= self.input_dim or (x.dtype.kind == "f" and not np.array_equal(ids, x)):
                bad = x[(ids < 0) | (ids >= self.input_dim) | (ids != x)].reshape(-1)[0].item()
                raise ValueError(f"Embedding layer '{self.name}' expects integer ids in [0, {self.input_dim}), "
                                 f"received {bad!r} (inputs range from {x.min().item()!r} to {x.max().item()!r})")
        return ids.astype(np.intp, copy=False)

    def call(self, x, training=False):
        self._idx = self._ids(x).reshape(-1)
        out = self.workspace("out", x.shape + (self.output_dim,))
        np.take(self.embeddings.value, self._idx, axis=0, out=out.reshape(-1, self.output_dim))
        return out

    def backward(self, grad, need_input_grad=True):
        if self.embeddings.grad is not None:
            g = self.embeddings.grad
            g.fill(0)
            np.add.at(g, self._idx, grad.reshape(-1, self.output_dim))    # repeated ids add up
        if not need_input_grad:
            return None
        dx = self.workspace("dx", grad.shape[:-1])
        dx.fill(0)                    # ids are not differentiable: nothing flows further back
        return dx

    def get_config(self):
        return {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
                "embeddings_initializer": initializers.serialize(self.embeddings_initializer),
                "embeddings_regularizer": regularizers.serialize(self.embeddings_regularizer),
                "mask_zero": self.mask_zero}
