"""Weight penalties (Keras's L1, L2, L1L2). The penalty joins the reported loss; its gradient is added to the
averaged data gradient once per step (it is not a per-sample term, so it is never summed across workers)."""
import numpy as np


class Regularizer:
    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = float(l1), float(l2)

    def penalty(self, w):
        out = 0.0
        if self.l1:
            out += self.l1 * float(np.sum(np.abs(w)))
        if self.l2:
            out += self.l2 * float(np.sum(np.square(w)))
        return out

    def add_gradient(self, w, grad):
        """grad += d penalty / d w, in place."""
        if self.l1:
            grad += grad.dtype.type(self.l1) * np.sign(w)
        if self.l2:
            grad += grad.dtype.type(2 * self.l2) * w

    __call__ = penalty

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    pass


l1, l2 = L1, L2          # Keras's lower-case spellings: keras.regularizers.l2(0.01)


def l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1=l1, l2=l2)


_BY_NAME = {"l1": L1, "l2": L2, "l1_l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2}


def get(identifier):
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, dict):
        return _BY_NAME[identifier["class_name"]](**identifier.get("config", {}))
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    raise ValueError(f"Unknown regularizer {identifier!r}; valid names: l1, l2, l1_l2")


def serialize(reg):
    return None if reg is None else {"class_name": type(reg).__name__, "config": reg.get_config()}
