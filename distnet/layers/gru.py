"""GRU with Keras 3's gate order and defaults. The kernels' three blocks of `units` columns are [z | r | h]:

    z = recurrent_activation(x_z + h_{t-1} @ U_z + b_z)              (update gate, sigmoid)
    r = recurrent_activation(x_r + h_{t-1} @ U_r + b_r)              (reset gate)
    reset_after=True (default):  hh = activation(x_h + r * (h_{t-1} @ U_h + b'_h))
    reset_after=False:           hh = activation(x_h + (r * h_{t-1}) @ U_h)
    h_t = z * h_{t-1} + (1 - z) * hh

where x_* are the blocks of x_t @ kernel + input bias. Bias: (2, 3 * units) with reset_after (row 0 the input
bias, row 1 the recurrent bias b'), else (3 * units,). The scan itself is recurrent.RNNBase's.
"""
import numpy as np

from .base import sum_rows
from .recurrent import RNNBase, activate, activation_grad


class GRU(RNNBase):
    gates = 3

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 reset_after=True, use_cudnn="auto", **kwargs):
        super().__init__(units, activation=activation, recurrent_activation=recurrent_activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer, **kwargs)
        self.reset_after = bool(reset_after)
        self.use_cudnn = use_cudnn              # accepted for Keras compatibility; there is no GPU path

    def _bias_shape(self):
        return (2, 3 * self.units) if self.reset_after else (3 * self.units,)

    def _input_bias_value(self):
        if self.bias is None:
            return None
        return self.bias.value[0] if self.reset_after else self.bias.value

    sigmoid_gates = (0, 1)          # z, r

    @property
    def fused(self):
        """RNNBase.fused, for reset_after=True (Keras's default; the other variant takes the general path)."""
        return self.reset_after and super().fused

    # -- forward ------------------------------------------------------------------------------------------
    def _start(self, n, T):
        u = self.units
        # reset_after: h_{t-1} @ U + b' of every step; else r * h_{t-1} of every step (the input of U_h)
        self._rec = self.workspace("rec", (T, n, 3 * u) if self.reset_after else (T, n, u))
        self._tmp = self.workspace("tmp", (n, 3 * u))
        self._pre = self.workspace("pre", (T, n, 3 * u)) if self._keep_pre else None
        self._dzh = self.workspace("dzh", (T, n, 3 * u)) if self.reset_after else None
        if self.fused:              # h_{t-1} @ U + b' with the z and r blocks halved (the sigmoid's 0.5)
            self._rk_s = self._scaled("rk_s", self.recurrent_kernel.value)
            self._rb_s = None if self.bias is None else self._scaled("rec_bias_s", self.bias.value[1])

    def _scan(self, rows, T):
        if not self.fused:
            return super()._scan(rows, T)
        u = self.units
        zx, h, rec = self._zx[:, rows], self._h[:, rows], self._rec[:, rows]
        zr, r, hh, zg = zx[..., :2 * u], zx[..., u:2 * u], zx[..., 2 * u:], zx[..., :u]
        rec_zr, rec_h = rec[..., :2 * u], rec[..., 2 * u:]
        inner, rk_s, rb_s = self._tmp[rows, :u], self._rk_s, self._rb_s
        for t in range(T):
            if t:
                np.matmul(h[t], rk_s, out=rec[t])
                if rb_s is not None:
                    rec[t] += rb_s
            elif rb_s is not None:                                # h_0 = 0: the recurrent term is the bias
                np.copyto(rec[0], rb_s)
            else:
                rec[0].fill(0)
            g = zr[t]                                             # 0.5 * [z | r] pre-activations
            g += rec_zr[t]
            np.tanh(g, out=g)
            g *= 0.5
            g += 0.5                                              # [z | r]
            np.multiply(r[t], rec_h[t], out=inner)
            a = hh[t]
            a += inner
            np.tanh(a, out=a)                                     # hh
            h_t = h[t + 1]
            np.subtract(h[t], a, out=h_t)                         # h_t = hh + z * (h_{t-1} - hh)
            h_t *= zg[t]
            h_t += a

    def _step(self, t, rows):
        u, rk, tmp, rec = self.units, self.recurrent_kernel.value, self._tmp[rows], self._rec[t, rows]
        h_prev, h = self._h[t, rows], self._h[t + 1, rows]
        pre = None if self._pre is None else self._pre[t, rows]
        z = self._zx[t, rows]                                     # becomes [z | r | hh] in place
        if self.reset_after:
            np.matmul(h_prev, rk, out=rec)
            if self.bias is not None:
                rec += self.bias.value[1]
            z[:, :2 * u] += rec[:, :2 * u]
        else:
            np.matmul(h_prev, rk[:, :2 * u], out=tmp[:, :2 * u])
            z[:, :2 * u] += tmp[:, :2 * u]
        if pre is not None:
            np.copyto(pre[:, :2 * u], z[:, :2 * u])
        activate(self.recurrent_activation, z[:, :2 * u])
        r, inner = z[:, u:2 * u], tmp[:, :u]
        if self.reset_after:
            np.multiply(r, rec[:, 2 * u:], out=inner)
        else:
            np.multiply(r, h_prev, out=rec)
            np.matmul(rec, rk[:, 2 * u:], out=inner)
        z[:, 2 * u:] += inner
        if pre is not None:
            np.copyto(pre[:, 2 * u:], z[:, 2 * u:])
        hh = activate(self.activation, z[:, 2 * u:])
        np.subtract(h_prev, hh, out=h)                             # h_t = hh + z * (h_{t-1} - hh)
        h *= z[:, :u]
        h += hh

    # -- backward -----------------------------------------------------------------------------------------
    def _back_start(self, state_grads):
        pass

    def _back_scan(self, rows, T, dh, seq):
        """The fused path's backward: _back_step's arithmetic with sigmoid' = s * (1 - s), tanh' = 1 - tanh^2
        written out, and the views of every step taken once."""
        if not self.fused:
            return super()._back_scan(rows, T, dh, seq)
        u = self.units
        zx, dzx, dzh, h = self._zx[:, rows], self._dzx[:, rows], self._dzh[:, rows], self._h[:, rows]
        zg, r, zr, hh = zx[..., :u], zx[..., u:2 * u], zx[..., :2 * u], zx[..., 2 * u:]
        dzg, dr, dzr, dhh = dzx[..., :u], dzx[..., u:2 * u], dzx[..., :2 * u], dzx[..., 2 * u:]
        dzh_zr, dzh_h = dzh[..., :2 * u], dzh[..., 2 * u:]
        rec_h = self._rec[:, rows, 2 * u:]
        tmp = self._tmp[rows]
        t_u, t_2u = tmp[:, :u], tmp[:, u:]
        rk_t = self._rk_t
        for t in range(T - 1, -1, -1):
            if seq is not None:
                dh += seq[t, rows]
            a, d = hh[t], dhh[t]
            np.subtract(1, zg[t], out=d)
            d *= dh                                               # d/d(hh) = dh * (1 - z)
            np.multiply(a, a, out=t_u)
            np.subtract(1, t_u, out=t_u)
            d *= t_u                                              # d/d(hh pre-activation)
            np.subtract(h[t], a, out=dzg[t])
            dzg[t] *= dh                                          # d/dz = dh * (h_{t-1} - hh)
            np.multiply(d, rec_h[t], out=dr[t])                   # d/dr = d(hh pre) * (h_{t-1} @ U_h + b'_h)
            g = zr[t]
            np.subtract(1, g, out=t_2u)
            t_2u *= g
            np.multiply(dzr[t], t_2u, out=dzh_zr[t])              # d/d[z | r] pre-activations: for U's side
            np.copyto(dzr[t], dzh_zr[t])                          # and for the kernel's
            np.multiply(d, r[t], out=dzh_h[t])
            if t:
                np.multiply(dh, zg[t], out=t_u)                   # through h_t = z * h_{t-1} + ...
                np.matmul(dzh[t], rk_t, out=dh)
                dh += t_u

    def _back_step(self, t, rows, dh, need_prev):
        u, tmp, rec = self.units, self._tmp[rows], self._rec[t, rows]
        h_prev = self._h[t, rows]
        a, dz = self._zx[t, rows], self._dzx[t, rows]
        zg, r, hh = a[:, :u], a[:, u:2 * u], a[:, 2 * u:]
        dzg, dr, dhh = dz[:, :u], dz[:, u:2 * u], dz[:, 2 * u:]
        pre = self._pre[t, rows] if self._pre is not None else None
        np.subtract(h_prev, hh, out=dzg)
        dzg *= dh
        np.subtract(1, zg, out=dhh)
        dhh *= dh
        activation_grad(self.activation, None if pre is None else pre[:, 2 * u:], hh, dhh, tmp[:, :u])
        if self.reset_after:
            np.multiply(dhh, rec[:, 2 * u:], out=dr)               # d/dr = d(hh pre) * (h_{t-1} @ U_h + b'_h)
        else:
            d_rh = tmp[:, 2 * u:]                                  # d/d(r * h_{t-1})
            np.matmul(dhh, self._rk_t[2 * u:], out=d_rh)
            np.multiply(d_rh, h_prev, out=dr)
        activation_grad(self.recurrent_activation, None if pre is None else pre[:, :2 * u], a[:, :2 * u],
                        dz[:, :2 * u], tmp[:, :2 * u])
        if self.reset_after:                 # the recurrent side sees [dz | dr | dhh * r]
            dzh = self._dzh[t, rows]
            np.copyto(dzh[:, :2 * u], dz[:, :2 * u])
            np.multiply(dhh, r, out=dzh[:, 2 * u:])
        if not need_prev:
            return
        direct = tmp[:, :u]
        np.multiply(dh, zg, out=direct)                            # through h_t = z * h_{t-1} + ...
        if self.reset_after:
            np.matmul(dzh, self._rk_t, out=dh)
        else:
            np.multiply(d_rh, r, out=tmp[:, u:2 * u])
            direct += tmp[:, u:2 * u]
            np.matmul(dz[:, :2 * u], self._rk_t[:2 * u], out=dh)
        dh += direct

    def _recurrent_kernel_grad(self, h_prev, out):
        u, rows = self.units, h_prev.shape[0]
        if self.reset_after:
            np.matmul(h_prev.T, self._dzh.reshape(rows, 3 * u), out=out)
            return
        dz2 = self._dzx.reshape(rows, 3 * u)
        out[:, :2 * u] = h_prev.T @ dz2[:, :2 * u]
        out[:, 2 * u:] = self._rec.reshape(rows, u).T @ dz2[:, 2 * u:]

    def _input_bias_grad(self):
        g = self.bias.grad
        return g[0] if self.reset_after and g is not None else g

    def _recurrent_bias_grad(self, out):
        if self.reset_after:
            sum_rows(self._dzh.reshape(-1, 3 * self.units), out[1], self, slot=0)

    def get_config(self):
        return {**super().get_config(), "reset_after": self.reset_after}
