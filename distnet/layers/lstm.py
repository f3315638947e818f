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
    sigmoid_gates = (0, 1, 3)       # i, f, o: on the fused path one tanh covers the four blocks of a step

    def _start(self, n, T):
        u = self.units
        self._c = self.workspace("c", (T + 1, n, u))
        self._c[0].fill(0)
        self._act_c = self.workspace("act_c", (T, n, u))        # activation(c_t)
        self._tmp = self.workspace("tmp", (n, 4 * u))
        self._pre = self.workspace("pre", (T, n, 4 * u)) if self._keep_pre else None
        if self.fused:
            self._rk_s = self._scaled("rk_s", self.recurrent_kernel.value)

    def _scan(self, rows, T):
        if not self.fused:
            return super()._scan(rows, T)
        u = self.units
        zx, h, c, act_c = self._zx[:, rows], self._h[:, rows], self._c[:, rows], self._act_c[:, rows]
        i, f, g, o = zx[..., :u], zx[..., u:2 * u], zx[..., 2 * u:3 * u], zx[..., 3 * u:]
        tmp, ig = self._tmp[rows], self.workspace("ig", self._c[0].shape)[rows]
        rk_s, (scale, shift) = self._rk_s, self.gate_scale()
        for t in range(T):
            z = zx[t]                                             # 0.5 * z_i, 0.5 * z_f, z_g, 0.5 * z_o
            if t:                                                 # h_0 = 0: no recurrent term at the first step
                np.matmul(h[t], rk_s, out=tmp)
                z += tmp
            np.tanh(z, out=z)
            z *= scale
            z += shift                                            # the gates [i | f | g | o]
            np.multiply(f[t], c[t], out=c[t + 1])
            np.multiply(i[t], g[t], out=ig)
            c[t + 1] += ig
            np.tanh(c[t + 1], out=act_c[t])
            np.multiply(o[t], act_c[t], out=h[t + 1])

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
        if self.fused:
            self._fused_factors()

    def _fused_factors(self):
        """The step-independent factors of backward on the fused path, over all steps at once (a few large
        operations instead of a dozen small ones per step). With s' = s * (1 - s) (sigmoid), tanh' = 1 - tanh^2
        and a = tanh(c_t):
            d/dz_o = dh * [a * o']                   (P)
            dc    += dh * [o * (1 - a^2)]            (Q)
            d/d[z_i | z_f | z_g] = dc * [g * i' | c_{t-1} * f' | i * (1 - g^2)]   (W)
        P, Q: (T, n, units); W: (T, 3, n, units)."""
        T, n, u = self._act_c.shape
        # the gates gate-major, (T, 4, n, units): one strided copy, then every operation below (and the scan's
        # dc *= f) runs on contiguous (n, units) blocks, which NumPy does 2-3x faster than column slices
        gates = self._gates = self.workspace("gates", (T, 4, n, u))
        np.copyto(gates, self._zx.reshape(T, n, 4, u).transpose(0, 2, 1, 3))
        i, f, g, o = gates[:, 0], gates[:, 1], gates[:, 2], gates[:, 3]
        a = self._act_c
        P, Q = self.workspace("P", (T, n, u)), self.workspace("Q", (T, n, u))
        W = self.workspace("W", (T, 3, n, u))
        wi, wf, wg = W[:, 0], W[:, 1], W[:, 2]
        np.subtract(1, i, out=wi)
        wi *= i
        wi *= g
        np.subtract(1, f, out=wf)
        wf *= f
        wf *= self._c[:T]
        np.multiply(g, g, out=wg)
        np.subtract(1, wg, out=wg)
        wg *= i
        np.subtract(1, o, out=P)
        P *= o
        P *= a
        np.multiply(a, a, out=Q)
        np.subtract(1, Q, out=Q)
        Q *= o
        self._P, self._Q, self._W = P, Q, W

    def _back_scan(self, rows, T, dh, seq):
        if not self.fused:
            return super()._back_scan(rows, T, dh, seq)
        n, u = self._dc.shape
        P, Q, W = self._P[:, rows], self._Q[:, rows], self._W[:, :, rows]
        f = self._gates[:, 1, rows]
        dz = self._dzx[:, rows]
        dz4 = self._dzx.reshape(T, n, 4, u)[:, rows].transpose(0, 2, 1, 3)     # (T, 4, rows, u) view
        dz_o, dz_ifg = dz4[:, 3], dz4[:, :3]
        dc = self._dc[rows]
        dc3 = dc[None]
        tmp, rk_t = self.workspace("ig", (n, u))[rows], self._rk_t
        for t in range(T - 1, -1, -1):
            if seq is not None:
                dh += seq[t, rows]
            np.multiply(dh, P[t], out=dz_o[t])
            np.multiply(dh, Q[t], out=tmp)
            dc += tmp                                             # d/dc_t
            np.multiply(dc3, W[t], out=dz_ifg[t])
            if t:
                dc *= f[t]                                        # d/dc_{t-1}
                np.matmul(dz[t], rk_t, out=dh)

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
            np.matmul(dz, self._rk_t, out=dh)

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}
