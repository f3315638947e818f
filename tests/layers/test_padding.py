"""ZeroPadding1D / ZeroPadding2D: values, gradients, empty batches, argument forms and errors."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import case_tests

rng = np.random.default_rng(9)
CASES = [
    ("zp1d", lambda: layers.ZeroPadding1D(), (2, 5, 3)),
    ("zp1d_asym", lambda: layers.ZeroPadding1D((0, 3)), (2, 4, 2)),
    ("zp2d", lambda: layers.ZeroPadding2D(), (2, 3, 4, 2)),
    ("zp2d_asym", lambda: layers.ZeroPadding2D(((2, 0), (1, 3))), (2, 3, 4, 2)),
]
test_backward_matches_finite_differences, test_empty_batch = case_tests(CASES)


def test_values_and_the_keras_argument_forms():
    x = np.ones((1, 2, 3, 1), np.float32)
    out = layers.ZeroPadding2D(((1, 0), (0, 2)))(x)
    assert out.shape == (1, 3, 5, 1) and out.sum() == 6
    np.testing.assert_array_equal(out[0, 1:, :3, 0], 1)
    assert layers.ZeroPadding2D(2).padding == ((2, 2), (2, 2))
    assert layers.ZeroPadding2D((1, 3)).padding == ((1, 1), (3, 3))
    seq = layers.ZeroPadding1D((2, 1))(np.ones((1, 3, 2), np.float32))
    np.testing.assert_array_equal(seq[0, :, 0], [0, 0, 1, 1, 1, 0])


@pytest.mark.parametrize("make,message", [
    (lambda: layers.ZeroPadding1D(-1), "non-negative int .*received -1"),
    (lambda: layers.ZeroPadding2D((1, 2, 3)), r"received \(1, 2, 3\)"),
    (lambda: layers.ZeroPadding2D(((1, 2), (1,))), r"padding\[1\] \(width\) .*received \(1,\)"),
])
def test_bad_padding_echoes_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_rank_and_config_round_trip():
    with pytest.raises(ValueError, match=r"rank 4, received shape \(None, 5, 3\)"):
        layers.ZeroPadding2D().build_for((5, 3))
    layer = layers.ZeroPadding2D(((1, 2), (3, 4)), name="zp")
    assert layers.ZeroPadding2D.from_config(layer.get_config()).get_config() == layer.get_config()
