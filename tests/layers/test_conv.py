"""Conv1D (valid/same/causal, strides, dilation) and dilated Conv2D: gradients, causality, shapes, errors."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import case_tests

rng = np.random.default_rng(3)
CASES = [
    ("conv1d_valid", lambda: layers.Conv1D(4, 3, activation="tanh"), (2, 9, 3)),
    ("conv1d_same_stride2", lambda: layers.Conv1D(3, 4, strides=2, padding="same"), (2, 9, 2)),
    ("conv1d_causal_dilated", lambda: layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (2, 10, 2)),
    ("conv1d_relu_nobias", lambda: layers.Conv1D(2, 2, activation="relu", use_bias=False), (3, 6, 2)),
    ("conv2d_dilated_same", lambda: layers.Conv2D(3, (3, 2), dilation_rate=(2, 1), padding="same"), (2, 7, 6, 2)),
    ("conv2d_dilated_valid", lambda: layers.Conv2D(2, 3, dilation_rate=2), (1, 8, 7, 2)),
]
test_backward_matches_finite_differences, test_empty_batch = case_tests(CASES, threads=True)


def test_conv1d_is_a_sliding_dot_product_with_keras_kernel_layout():
    layer = layers.Conv1D(2, 3, use_bias=False)
    x = rng.normal(size=(1, 5, 4)).astype(np.float32)
    out = layer(x)
    k = layer.kernel.value
    assert k.shape == (3, 4, 2) and out.shape == (1, 3, 2)
    for t in range(3):
        np.testing.assert_allclose(out[0, t], np.einsum("kc,kcf->f", x[0, t:t + 3], k), rtol=1e-5)


def test_causal_output_never_sees_the_future():
    layer = layers.Conv1D(2, 3, padding="causal", dilation_rate=2)
    x = rng.normal(size=(1, 8, 1)).astype(np.float32)
    base = layer(x)
    later = x.copy()
    later[:, 5:] += 1.0
    changed = np.abs(layer(later) - base).max(axis=-1)[0] > 0
    assert layer.output_shape == (8, 2)
    np.testing.assert_array_equal(changed, np.arange(8) >= 5)


@pytest.mark.parametrize("kwargs,shape", [({"padding": "same", "strides": 3}, (3, 2)),
                                          ({"padding": "valid", "dilation_rate": 3}, (3, 2)),
                                          ({"padding": "causal"}, (9, 2))])
def test_output_shapes(kwargs, shape):
    assert layers.Conv1D(2, 3, **kwargs).build_for((9, 4)) == shape


@pytest.mark.parametrize("make,message", [
    (lambda: layers.Conv1D(2, 3, padding="full"), "padding 'valid' or 'same' or 'causal', received 'full'"),
    (lambda: layers.Conv2D(2, 3, padding="causal"), "padding 'valid' or 'same', received 'causal'"),
    (lambda: layers.Conv1D(2, 3, strides=2, dilation_rate=2), r"strides=\(2,\) and dilation_rate=\(2,\)"),
    (lambda: layers.Conv1D(0, 3), "filters to be a positive int, received 0"),
    (lambda: layers.Conv1D(2, 3, groups=2), "groups=1 only, received 2"),
    (lambda: layers.Conv1D(2, (3, 3)), r"tuple of 1 positive ints, received \(3, 3\)"),
])
def test_bad_arguments_echo_the_received_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_input_shapes_are_refused_with_their_shape():
    with pytest.raises(ValueError, match=r"rank 3 \(batch, steps, channels\), received shape \(None, 4, 4, 1\)"):
        layers.Conv1D(2, 3).build_for((4, 4, 1))
    with pytest.raises(ValueError, match=r"does not fit input of shape \(None, 4, 1\)"):
        layers.Conv1D(2, 3, dilation_rate=2).build_for((4, 1))


def test_config_round_trip():
    layer = layers.Conv1D(3, 5, padding="causal", dilation_rate=2, activation="relu", name="c1")
    assert layers.Conv1D.from_config(layer.get_config()).get_config() == layer.get_config()
