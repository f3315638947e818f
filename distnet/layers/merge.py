"""Merge layers: several inputs of one shape -> one output (Keras's Add, Subtract, Multiply, Average, Maximum,
Minimum), or inputs joined along an axis (Concatenate).

They are multi-input layers (`multi_input = True`): build_for takes a list of shapes, call a list of arrays
xs[i]: (batch, ...), and backward returns one gradient per input, in order. Every returned gradient is its own
array, so the layer that receives it may overwrite it.
"""
import numpy as np

from .base import Layer


class _Merge(Layer):
    per_sample = True
    multi_input = True
    output_reusable = True      # backward reads the inputs (Multiply) or masks, never the output
    min_inputs, max_inputs = 2, None

    def _where(self):
        return f"{type(self).__name__} layer '{self.name}'"

    def validate_input_shape(self, input_shape):
        k = len(input_shape)
        if k < self.min_inputs or (self.max_inputs is not None and k > self.max_inputs):
            want = f"exactly {self.max_inputs}" if self.max_inputs == self.min_inputs else \
                f"at least {self.min_inputs}"
            raise ValueError(f"{self._where()} expects a list of {want} inputs, received {k} "
                             f"(shapes {[(None,) + tuple(s) for s in input_shape]})")
        self._check_shapes(input_shape)

    def _check_shapes(self, shapes):
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{self._where()} expects inputs of the same shape, received shapes "
                             f"{[(None,) + tuple(s) for s in shapes]}")

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def _copy(self, i, a):
        """a in a buffer of this layer's own (the i-th input gradient)."""
        buf = self.workspace(f"dx{i}", a.shape, a.dtype)
        np.copyto(buf, a)
        return buf

    def call(self, xs, training=False):
        out = self.workspace("out", xs[0].shape, xs[0].dtype)
        self._merge(xs, out)
        return out

    def call_in_place(self, xs, training, owned):
        """For the element-wise merges that keep nothing of their inputs (`overwrites_input`: Add, Subtract,
        Average): the result written over the first owned input (each element is read before it is written)."""
        out = xs[owned[0]]
        if not (out.flags.c_contiguous and out.flags.writeable and all(x.dtype == out.dtype for x in xs)):
            return self.call(xs, training)
        self._merge(xs, out)
        return out

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        return self._split_grad(grad)

    def _fan_out(self, grad):
        """The same gradient for every input: grad itself for the first, copies for the others."""
        return [grad] + [self._copy(i, grad) for i in range(1, len(self.input_shape))]



def _sum_into(xs, out):
    np.add(xs[0], xs[1], out=out)
    for x in xs[2:]:
        out += x
    return out


class Add(_Merge):
    """out = sum of the inputs."""
    overwrites_input = True

    def _merge(self, xs, out):
        _sum_into(xs, out)

    def _split_grad(self, grad):
        return self._fan_out(grad)


class Subtract(_Merge):
    """out = xs[0] - xs[1] (exactly two inputs)."""
    overwrites_input = True
    max_inputs = 2

    def _merge(self, xs, out):
        np.subtract(xs[0], xs[1], out=out)

    def _split_grad(self, grad):
        return [self._copy(0, grad), np.negative(grad, out=grad)]


class Average(_Merge):
    """out = mean of the inputs."""
    overwrites_input = True

    def _merge(self, xs, out):
        _sum_into(xs, out)
        out *= out.dtype.type(1.0 / len(xs))

    def _split_grad(self, grad):
        grad *= grad.dtype.type(1.0 / len(self.input_shape))
        return self._fan_out(grad)


class Multiply(_Merge):
    """out = element-wise product of the inputs; d/dxs[i] = grad * product of the other inputs."""

    def _merge(self, xs, out):
        self._xs = xs
        np.multiply(xs[0], xs[1], out=out)
        for x in xs[2:]:
            out *= x

    def _split_grad(self, grad):
        grads = []
        for i in range(len(self._xs)):
            g = self._copy(i, grad)
            for j, x in enumerate(self._xs):
                if j != i:
                    g *= x
            grads.append(g)
        return grads


class _Extremum(_Merge):
    """The element-wise max (or min); the gradient of each element goes to the first input that holds it."""
    pick = None

    def _merge(self, xs, out):
        which = self.workspace("which", out.shape, np.uint8)
        better = self.workspace("better", out.shape, bool)
        which.fill(0)
        np.copyto(out, xs[0])
        for i, x in enumerate(xs[1:], 1):
            self.pick(x, out, out=better)         # strictly better: ties stay with the earlier input
            np.copyto(which, i, where=better)
            np.copyto(out, x, where=better)

    def _split_grad(self, grad):
        which, hit = self._ws["which"], self._ws["better"]
        grads = []
        for i in range(len(self.input_shape)):
            np.equal(which, i, out=hit)
            grads.append(np.multiply(grad, hit, out=self.workspace(f"dx{i}", grad.shape, grad.dtype)))
        return grads


class Maximum(_Extremum):
    pick = staticmethod(np.greater)


class Minimum(_Extremum):
    pick = staticmethod(np.less)


class Concatenate(_Merge):
    """Join the inputs along `axis` (counted with the batch axis, as Keras: -1 is the last, 1 the first after
    the batch); every other dimension must agree."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"{self._where()} expects axis to be an int, received {axis!r}")
        self.axis = int(axis)

    def _axis(self, shapes):
        rank = len(shapes[0]) + 1
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            raise ValueError(f"{self._where()} cannot join along axis {self.axis} (the batch axis or out of range) "
                             f"inputs of shapes {[(None,) + tuple(s) for s in shapes]}")
        return self.axis % rank

    def _check_shapes(self, shapes):
        if len({len(s) for s in shapes}) != 1:
            raise ValueError(f"{self._where()} expects inputs of the same rank, received shapes "
                             f"{[(None,) + tuple(s) for s in shapes]}")
        a = self._axis(shapes) - 1
        if any(s[:a] + s[a + 1:] != shapes[0][:a] + shapes[0][a + 1:] for s in shapes):
            raise ValueError(f"{self._where()} expects inputs that agree on every axis but axis {self.axis}, "
                             f"received shapes {[(None,) + tuple(s) for s in shapes]}")

    def compute_output_shape(self, input_shape):
        a = self._axis(input_shape) - 1
        return input_shape[0][:a] + (sum(s[a] for s in input_shape),) + input_shape[0][a + 1:]

    def call(self, xs, training=False):
        out = self.workspace("out", (xs[0].shape[0],) + self.output_shape, xs[0].dtype)
        return np.concatenate(xs, axis=self._axis(self.input_shape), out=out)

    def backward(self, grad, need_input_grad=True):
        if not need_input_grad:
            return None
        a = self._axis(self.input_shape)
        bounds = np.cumsum([s[a - 1] for s in self.input_shape])[:-1]
        return [self._copy(i, part) for i, part in enumerate(np.split(grad, bounds, axis=a))]

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
