"""Recurrent layers: the scan shared by SimpleRNN, LSTM (lstm.py) and GRU (gru.py), and SimpleRNN itself.

x: (batch, timesteps, features) -> (batch, units), or (batch, timesteps, units) with return_sequences; with
return_state the layer returns [output, *final_states] (LSTM: [output, h, c]; GRU, SimpleRNN: [output, h]).
Weights, in Keras's layout and order: kernel (features, gates*units), recurrent_kernel (units, gates*units),
bias. go_backwards reads the sequence from its last step to its first; the returned sequence stays in that
(reversed) order, as in Keras.

The work is arranged for BLAS: the input projection x_t @ kernel + bias of every step is ONE matrix product before
the scan (time-major, [x | 1] (timesteps * batch, features + 1) @ [kernel; bias]), so a step costs one small
h @ recurrent_kernel product plus element-wise gate arithmetic in buffers reused from step to step and from call
to call. Backward runs the scan in reverse (multiplying by a contiguous copy of recurrent_kernel.T) and leaves
d(pre-activations) of every step in one (timesteps, batch, gates*units) buffer, from which the kernel and bias
gradients are one product, and the recurrent kernel's another, over all steps. With Keras's default activations
LSTM and GRU take a fused path (`RNNBase.fused`): sigmoid through tanh with pre-scaled kernels, and the scan loops
written out, with fewer and larger NumPy operations per step.
"""
import numpy as np

from .. import activations, backend, initializers, regularizers
from .base import Layer, sum_rows


def activate(act, z, out=None):
    """out = act(z) (in place when out is z or None), without temporaries for sigmoid and tanh."""
    out = z if out is None else out
    if act.name == "tanh":
        np.tanh(z, out=out)
    elif act.name == "sigmoid":         # 1/(1+e^-z) = (1 + tanh(z/2)) / 2: stable, and in place
        np.multiply(z, 0.5, out=out)
        np.tanh(out, out=out)
        out *= 0.5
        out += 0.5
    elif out is not z or act.name != "linear":
        out[...] = act.forward(z)
    return out


def activation_grad(act, pre, a, g, scratch):
    """g *= act'(pre) in place, where a = act(pre); pre may be None for activations that need only a.
    scratch: a buffer of g's shape."""
    if act.name == "tanh":
        np.multiply(a, a, out=scratch)
        np.subtract(1, scratch, out=scratch)
        g *= scratch
    elif act.name == "sigmoid":
        np.subtract(1, a, out=scratch)
        scratch *= a
        g *= scratch
    elif act.name != "linear":
        g[...] = act.backward(pre, a, g)
    return g


class RNNBase(Layer):
    """The scan. A subclass sets `gates` (blocks of `units` columns in the kernels) and `state_names`, and
    implements `_start(n, T)`, `_step(t, rows)`, `_back_start(state_grads)` and
    `_back_step(t, rows, dh, need_prev)`: `_step` reads self._zx[t] (the step's input projection, input bias
    included) and self._h[t] (h_{t-1}) and writes self._h[t + 1]; `_back_step` receives dh = d/d(h_t), writes
    d(pre-activations) into self._dzx[t] and, when need_prev, d/d(h_{t-1}) into dh. Both touch only the batch
    rows `rows` of every buffer (the batch axis is axis 1 of per-step buffers (T, n, ...), axis 0 of scratch
    (n, ...)): with backend.set_num_threads(k) the scan runs on k slices of the batch at once."""
    per_sample = True
    gates = 1
    state_names = ("h",)

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, recurrent_activation=None, **kwargs):
        super().__init__(**kwargs)
        where = f"{type(self).__name__} layer '{self.name}'"
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{where} expects units to be a positive int, received {units!r}")
        unsupported = {"activity_regularizer": activity_regularizer, "kernel_constraint": kernel_constraint,
                       "recurrent_constraint": recurrent_constraint, "bias_constraint": bias_constraint}
        for arg, v in unsupported.items():
            if v is not None:
                raise ValueError(f"{where} does not support {arg}, received {v!r}")
        for arg, v in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if v != 0:
                raise ValueError(f"{where} does not support {arg} yet, received {arg}={v!r}; put a Dropout layer "
                                 f"before or after the recurrent layer instead")
        if stateful:
            raise ValueError(f"{where} does not support stateful=True (state carried across batches), received "
                             f"stateful={stateful!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.recurrent_activation = None if recurrent_activation is None else \
            activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.seed, self.unroll = seed, bool(unroll)
        self.return_sequences, self.return_state = bool(return_sequences), bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.multi_output = self.return_state
        acts = [a for a in (self.activation, self.recurrent_activation) if a is not None]
        self._keep_pre = not all(a.from_output for a in acts)    # backward needs pre-activations, not only outputs

    # -- shapes and weights -------------------------------------------------------------------------------
    def validate_input_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of rank 3 (batch, "
                             f"timesteps, features), received shape {(None,) + tuple(input_shape)}")

    def compute_output_shape(self, input_shape):
        out = (input_shape[0], self.units) if self.return_sequences else (self.units,)
        if self.return_state:
            return [out] + [(self.units,)] * len(self.state_names)
        return out

    def build(self, input_shape):
        gu = self.gates * self.units
        self.kernel = self.add_weight("kernel", (input_shape[-1], gu), self.kernel_initializer,
                                      self.kernel_regularizer)
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (self.units, gu), self.recurrent_initializer,
                                                self.recurrent_regularizer)
        self.bias = self.add_weight("bias", self._bias_shape(), self._bias_init(), self.bias_regularizer) \
            if self.use_bias else None

    def _bias_shape(self):
        return (self.gates * self.units,)

    def _bias_init(self):
        return self.bias_initializer

    def _input_bias_value(self):
        """The bias added to the input projection of every step (None without bias)."""
        return None if self.bias is None else self.bias.value

    # -- fused gates --------------------------------------------------------------------------------------
    sigmoid_gates = ()      # the gate blocks that take recurrent_activation (LSTM: i, f, o; GRU: z, r)

    @property
    def fused(self):
        """Keras's default activations (sigmoid gates, tanh): the gate nonlinearities of a step are then taken
        with tanh alone, as sigmoid(z) = 0.5 * tanh(0.5 * z) + 0.5, the 0.5 being folded into the kernels and
        biases once per call (scaled copies: exact, a power of two), so a step's results are bit for bit those of
        the gate-by-gate path with fewer, larger operations. Subclasses then run their own scan loops."""
        return (bool(self.sigmoid_gates) and self.recurrent_activation.name == "sigmoid"
                and self.activation.name == "tanh")

    def gate_scale(self):
        """(scale, shift) per kernel column on the fused path: 0.5 and 0.5 in the sigmoid gate blocks, 1 and 0
        elsewhere; tanh(z * scale) * scale + shift is then sigmoid or tanh by block."""
        consts = self.__dict__.get("_gate_consts")
        if consts is None or consts[0].dtype != self.dtype:
            u = self.units
            scale = np.ones(self.gates * u, self.dtype)
            for k in self.sigmoid_gates:
                scale[k * u:(k + 1) * u] = 0.5
            consts = self._gate_consts = (scale, np.where(scale == 1, 0, 0.5).astype(self.dtype))
        return consts

    def _scaled(self, name, value):
        """value * scale (per kernel column) in a workspace: the fused path's copy of a kernel or bias."""
        return np.multiply(value, self.gate_scale()[0], out=self.workspace(name, value.shape))

    def _projection(self, d):
        """The matrix of the input projection: [kernel; input bias] (d + 1, gates * units), or the kernel alone
        without bias; the scaled copy on the fused path."""
        k, b = self.kernel.value, self._input_bias_value()
        if b is None:
            return self._scaled("kernel_s", k) if self.fused else k
        w = self.workspace("projection", (d + 1, k.shape[1]))
        if self.fused:
            scale = self.gate_scale()[0]
            np.multiply(k, scale, out=w[:d])
            np.multiply(b, scale, out=w[d])
        else:
            w[:d], w[d] = k, b
        return w

    # -- forward ------------------------------------------------------------------------------------------
    def call(self, x, training=False):
        n, T, d = x.shape
        u, gu = self.units, self.gates * self.units
        # time-major, in the order the scan reads it; with a bias, a column of ones after the features, so that
        # the input bias is added by the projection's matrix product and its gradient comes out of the kernel's
        w = self._projection(d)
        xt = self.workspace("xt", (T, n, w.shape[0]))
        np.copyto(xt[..., :d], (x[:, ::-1] if self.go_backwards else x).transpose(1, 0, 2))
        if w.shape[0] > d:
            xt[..., d] = 1
        zx = self.workspace("zx", (T, n, gu))
        np.matmul(xt.reshape(T * n, w.shape[0]), w, out=zx.reshape(T * n, gu))
        h = self.workspace("h", (T + 1, n, u))
        h[0].fill(0)
        self._xt, self._zx, self._h = xt, zx, h
        self._start(n, T)
        backend.parallel_batches(n, lambda lo, hi, _: self._scan(slice(lo, hi), T))
        if self.return_sequences:
            out = self.workspace("out", (n, T, u))
            np.copyto(out, h[1:].transpose(1, 0, 2))
        else:
            out = h[T]
        return [out] + self._final_states() if self.return_state else out

    def _scan(self, rows, T):
        for t in range(T):
            self._step(t, rows)

    def _final_states(self):
        return [self._h[-1]]

    # -- backward -----------------------------------------------------------------------------------------
    def backward(self, grad, need_input_grad=True):
        """grad: d/d(output), or with return_state a list [d/d(output), d/d(h), (d/d(c))] with None entries
        for outputs that received no gradient."""
        g_out, g_states = (grad[0], list(grad[1:])) if self.return_state else (grad, [])
        xt, h = self._xt, self._h
        T, n, d = xt.shape[0], xt.shape[1], self.kernel.value.shape[0]
        u, gu = self.units, self.gates * self.units
        dh = self.workspace("dh", (n, u))
        dh.fill(0)
        if g_states and g_states[0] is not None:
            dh += g_states[0]
        seq = None
        if g_out is not None:
            if self.return_sequences:
                seq = g_out.transpose(1, 0, 2)                   # (T, n, u) view: step t's gradient is seq[t]
            else:
                dh += g_out
        self._dzx = self.workspace("dzx", (T, n, gu))
        # d/d(h_{t-1}) = dz_t @ recurrent_kernel.T: a contiguous copy of the transpose, as BLAS multiplies
        # by it faster than by the transposed view (about 40% on (32, 512) @ (512, 128)), T times per call
        self._rk_t = self.workspace("rk_t", (gu, u))
        np.copyto(self._rk_t, self.recurrent_kernel.value.T)
        self._back_start(g_states[1:])
        backend.parallel_batches(n, lambda lo, hi, _: self._back_scan(slice(lo, hi), T, dh[lo:hi], seq))
        dzx2 = self._dzx.reshape(T * n, gu)
        xt2 = xt.reshape(T * n, xt.shape[2])
        db = self._input_bias_grad() if self.bias is not None else None
        if self.kernel.grad is not None and db is not None:
            kb = self.workspace("projection_grad", (d + 1, gu))  # [kernel; input bias] in one product (ones column)
            np.matmul(xt2.T, dzx2, out=kb)
            np.copyto(self.kernel.grad, kb[:d])
            np.copyto(db, kb[d])
        elif self.kernel.grad is not None:
            np.matmul(xt2[:, :d].T, dzx2, out=self.kernel.grad)
        elif db is not None:
            sum_rows(dzx2, db, self)
        if self.recurrent_kernel.grad is not None:
            self._recurrent_kernel_grad(h[:T].reshape(T * n, u), self.recurrent_kernel.grad)
        if self.bias is not None and self.bias.grad is not None:
            self._recurrent_bias_grad(self.bias.grad)
        if not need_input_grad:
            return None
        dxt = self.workspace("dxt", (T, n, d))
        np.matmul(dzx2, self.kernel.value.T, out=dxt.reshape(T * n, d))
        dx = self.workspace("dx", (n, T, d))
        np.copyto(dx, (dxt[::-1] if self.go_backwards else dxt).transpose(1, 0, 2))
        return dx

    def _back_scan(self, rows, T, dh, seq):
        """dh: d/d(h_T) of the batch rows `rows`; seq: (T, n, units) gradients of the returned sequence or None."""
        for t in range(T - 1, -1, -1):
            if seq is not None:
                dh += seq[t, rows]
            self._back_step(t, rows, dh, t > 0)

    def _recurrent_kernel_grad(self, h_prev, out):
        """out = sum over steps of h_{t-1}^T @ d(pre-activations)_t. h_prev: (T * batch, units)."""
        np.matmul(h_prev.T, self._dzx.reshape(h_prev.shape[0], out.shape[1]), out=out)

    def _input_bias_grad(self):
        """Where the gradient of the input bias goes (all of the bias but GRU's recurrent row), or None."""
        return self.bias.grad

    def _recurrent_bias_grad(self, out):
        """The gradient of a bias that is not the input bias (GRU's recurrent row b'); none here."""

    # -- config -------------------------------------------------------------------------------------------
    def get_config(self):
        config = {**super().get_config(), "units": self.units,
                  "activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                  "kernel_initializer": initializers.serialize(self.kernel_initializer),
                  "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
                  "bias_initializer": initializers.serialize(self.bias_initializer),
                  "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                  "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
                  "bias_regularizer": regularizers.serialize(self.bias_regularizer),
                  "dropout": 0.0, "recurrent_dropout": 0.0, "seed": self.seed,
                  "return_sequences": self.return_sequences, "return_state": self.return_state,
                  "go_backwards": self.go_backwards, "stateful": False, "unroll": self.unroll}
        if self.recurrent_activation is not None:
            config["recurrent_activation"] = activations.serialize(self.recurrent_activation)
        return config


class SimpleRNN(RNNBase):
    """h_t = activation(x_t @ kernel + h_{t-1} @ recurrent_kernel + bias); bias: (units,)."""

    def _start(self, n, T):
        self._tmp = self.workspace("tmp", (n, self.units))
        self._pre = self.workspace("pre", (T, n, self.units)) if self._keep_pre else None

    def _step(self, t, rows):
        h_next, tmp = self._h[t + 1, rows], self._tmp[rows]
        np.matmul(self._h[t, rows], self.recurrent_kernel.value, out=tmp)
        np.add(self._zx[t, rows], tmp, out=h_next)
        if self._pre is not None:
            np.copyto(self._pre[t, rows], h_next)
        activate(self.activation, h_next)

    def _back_start(self, state_grads):
        pass

    def _back_step(self, t, rows, dh, need_prev):
        dz = self._dzx[t, rows]
        np.copyto(dz, dh)
        activation_grad(self.activation, None if self._pre is None else self._pre[t, rows], self._h[t + 1, rows],
                        dz, self._tmp[rows])
        if need_prev:
            np.matmul(dz, self._rk_t, out=dh)
