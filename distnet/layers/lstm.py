"""LSTM with Keras 3's gate order and defaults. Per step, with z = x_t @ kernel + h_{t-1} @ recurrent_kernel + bias
split into four blocks of `units` columns [i | f | c | o]:

    i, f, o = recurrent_activation(z_i, z_f, z_o)      (sigmoid)
    g       = activation(z_c)                          (tanh)
    c_t     = f * c_{t-1} + i * g
    h_t     = o * activation(c_t)

kernel: (features, 4 * units), recurrent_kernel: (units, 4 * units), bias: (4 * units,), whose forget block starts
at one (unit_forget_bias=True). The scan itself is recurrent.RNNBase's.
"""
import numpy as np

from .recurrent import RNNBase, activate, activation_grad


class LSTM(RNNBase):
    gates = 4
    state_names = ("h", "c")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.use_cudnn = use_cudnn              # accepted for Keras compatibility; there is no GPU path

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        u, init = self.units, self.bias_initializer

        def forget_gate_ones(shape, dtype):     # Keras: [init(u), ones(u), init(2u)]
            return np.concatenate([init((u,), dtype), np.ones(u, dtype), init((2 * u,), dtype)])
        return forget_gate_ones

    # -- forward ------------------------------------------------------------------------------------------
    def _start(self, n, T):
        u = self.units
        self._c = self.workspace("c", (T + 1, n, u))
        self._c[0].fill(0)
        self._act_c = self.workspace("act_c", (T, n, u))        # activation(c_t)
        self._tmp = self.workspace("tmp", (n, 4 * u))
        self._pre = self.workspace("pre", (T, n, 4 * u)) if self._keep_pre else None

    def _step(self, t, rows):
        u, tmp, act_c = self.units, self._tmp[rows], self._act_c[t, rows]
        c_prev, c = self._c[t, rows], self._c[t + 1, rows]
        z = self._zx[t, rows]                                     # becomes the gates [i | f | g | o] in place
        np.matmul(self._h[t, rows], self.recurrent_kernel.value, out=tmp)
        z += tmp
        if self._pre is not None:
            np.copyto(self._pre[t, rows], z)
        activate(self.recurrent_activation, z[:, :2 * u])
        activate(self.activation, z[:, 2 * u:3 * u])
        activate(self.recurrent_activation, z[:, 3 * u:])
        i, f, g, o = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
        ig = tmp[:, :u]
        np.multiply(f, c_prev, out=c)
        np.multiply(i, g, out=ig)
        c += ig
        activate(self.activation, c, out=act_c)
        np.multiply(o, act_c, out=self._h[t + 1, rows])

    def _final_states(self):
        return [self._h[-1], self._c[-1]]

    # -- backward -----------------------------------------------------------------------------------------
    def _back_start(self, state_grads):
        self._dc = self.workspace("dc", self._c[0].shape)
        self._dc.fill(0)
        if state_grads and state_grads[0] is not None:
            self._dc += state_grads[0]

    def _back_step(self, t, rows, dh, need_prev):
        u, dc, tmp, act_c = self.units, self._dc[rows], self._tmp[rows], self._act_c[t, rows]
        a = self._zx[t, rows]
        i, f, g, o = a[:, :u], a[:, u:2 * u], a[:, 2 * u:3 * u], a[:, 3 * u:]
        dz = self._dzx[t, rows]
        di, df, dg, do = dz[:, :u], dz[:, u:2 * u], dz[:, 2 * u:3 * u], dz[:, 3 * u:]
        np.multiply(dh, act_c, out=do)
        dc_h = tmp[:, :u]                                         # d/dc_t through h_t = o * act(c_t)
        np.multiply(dh, o, out=dc_h)
        activation_grad(self.activation, self._c[t + 1, rows], act_c, dc_h, tmp[:, u:2 * u])
        dc += dc_h
        np.multiply(dc, g, out=di)
        np.multiply(dc, i, out=dg)
        np.multiply(dc, self._c[t, rows], out=df)
        dc *= f                                                   # d/dc_{t-1}
        pre = self._pre[t, rows] if self._pre is not None else None

        def part(lo, hi):
            return None if pre is None else pre[:, lo:hi]
        activation_grad(self.recurrent_activation, part(0, 2 * u), a[:, :2 * u], dz[:, :2 * u], tmp[:, :2 * u])
        activation_grad(self.activation, part(2 * u, 3 * u), g, dg, tmp[:, 2 * u:3 * u])
        activation_grad(self.recurrent_activation, part(3 * u, 4 * u), o, do, tmp[:, 3 * u:])
        if need_prev:
            np.matmul(dz, self.recurrent_kernel.value.T, out=dh)

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}
