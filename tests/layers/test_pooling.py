"""1-D pooling and global pooling: gradients, values, shapes, empty batches, errors."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import case_tests

rng = np.random.default_rng(5)
CASES = [
    ("maxpool1d", lambda: layers.MaxPooling1D(), (2, 9, 3)),
    ("maxpool1d_overlap_same", lambda: layers.MaxPooling1D(3, strides=2, padding="same"), (2, 8, 2)),
    ("avgpool1d", lambda: layers.AveragePooling1D(3), (2, 9, 2)),
    ("avgpool1d_same", lambda: layers.AveragePooling1D(2, strides=1, padding="same"), (2, 5, 2)),
    ("gmp1d", lambda: layers.GlobalMaxPooling1D(), (3, 7, 2)),
    ("gmp2d", lambda: layers.GlobalMaxPooling2D(), (3, 4, 5, 2)),
    ("gmp2d_keepdims", lambda: layers.GlobalMaxPooling2D(keepdims=True), (2, 3, 3, 2)),
    ("gap1d", lambda: layers.GlobalAveragePooling1D(), (3, 7, 2)),
    ("gap1d_keepdims", lambda: layers.GlobalAveragePooling1D(keepdims=True), (3, 7, 2)),
    ("gap2d", lambda: layers.GlobalAveragePooling2D(), (3, 4, 5, 2)),
]
test_backward_matches_finite_differences, test_empty_batch = case_tests(CASES)


def test_values_and_shapes():
    x = np.arange(12, dtype=np.float32).reshape(1, 6, 2)
    np.testing.assert_array_equal(layers.MaxPooling1D(2)(x)[0], [[2, 3], [6, 7], [10, 11]])
    np.testing.assert_array_equal(layers.AveragePooling1D(3)(x)[0], [[2, 3], [8, 9]])
    np.testing.assert_array_equal(layers.GlobalMaxPooling1D()(x), [[10, 11]])
    np.testing.assert_array_equal(layers.GlobalAveragePooling1D(keepdims=True)(x), [[[5, 6]]])
    assert layers.MaxPooling1D(3, strides=2, padding="same").build_for((7, 4)) == (4, 4)
    assert layers.GlobalMaxPooling2D(keepdims=True).build_for((5, 6, 3)) == (1, 1, 3)


def test_global_max_gradient_goes_to_one_maximum():
    layer = layers.GlobalMaxPooling1D()
    x = np.array([[[1.0], [3.0], [3.0], [0.0]]], np.float32)
    layer(x)
    np.testing.assert_array_equal(layer.backward(np.ones((1, 1), np.float32))[0, :, 0], [0, 1, 0, 0])


@pytest.mark.parametrize("make,shape,message", [
    (lambda: layers.MaxPooling1D(), (4, 4, 2), r"rank 3 \(batch, steps, channels\), received shape \(None, 4, 4, 2\)"),
    (lambda: layers.AveragePooling1D(5), (3, 2), r"pool_size \(5,\) does not fit input of shape \(None, 3, 2\)"),
    (lambda: layers.GlobalMaxPooling2D(), (4, 2), r"rank 4, received shape \(None, 4, 2\)"),
    (lambda: layers.GlobalAveragePooling1D(), (4, 4, 2), r"rank 3, received shape \(None, 4, 4, 2\)"),
])
def test_bad_input_shapes_echo_the_shape(make, shape, message):
    with pytest.raises(ValueError, match=message):
        make().build_for(shape)


def test_bad_arguments_echo_the_value():
    with pytest.raises(ValueError, match="padding 'valid' or 'same', received 'causal'"):
        layers.MaxPooling1D(padding="causal")
    with pytest.raises(ValueError, match="channels_last' only, received 'channels_first'"):
        layers.GlobalMaxPooling1D(data_format="channels_first")
