import numpy as np
import pytest

from distnet import activations
from tests.conftest import assert_grad_close

NAMES = ["relu", "sigmoid", "tanh", "softmax", "linear", "leaky_relu", "elu", "gelu", "softplus", "selu", "silu",
         "softsign", "exponential"]


@pytest.mark.parametrize("name", NAMES)
def test_activation_backward_matches_finite_differences(float64, name):
    act = activations.get(name)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4, 6))
    z[np.abs(z) < 1e-3] = 0.5     # keep relu-like kinks away from the finite-difference step
    r = rng.normal(size=z.shape)
    a = act.forward(z)
    rtol = 1e-4 if name == "gelu" else 1e-6   # gelu uses an erf approximation good to 1.2e-7
    analytic = act.backward(None if act.from_output else z, a, r.copy())   # from_output: z is not kept
    assert_grad_close(analytic, z, lambda: float(np.sum(act.forward(z) * r)), rtol=rtol)


def test_saturated_sigmoid_and_softmax_stay_finite():
    z = np.array([[-1000.0, 0.0, 1000.0]], dtype=np.float32)
    assert np.all(np.isfinite(activations.sigmoid(z)))
    s = activations.softmax(z)
    assert np.all(np.isfinite(s)) and np.isclose(s.sum(), 1)


def test_keras_defaults():
    assert activations.get("leaky_relu").negative_slope == 0.2
    assert activations.get("elu").alpha == 1.0
    assert activations.get("gelu").approximate is False
    np.testing.assert_allclose(activations.get("gelu").forward(np.array([1.0])), [0.8413447], rtol=1e-6)


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown activation 'relux'.*valid names:.*relu"):
        activations.get("relux")
