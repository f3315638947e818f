"""Embedding: lookup, scattered gradients (repeated ids add up), float-coded ids, empty batches, errors."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import check_empty_batch, check_gradients

rng = np.random.default_rng(13)


def test_lookup_returns_the_rows_of_the_table():
    layer = layers.Embedding(10, 4)
    ids = np.array([[1, 5, 5], [0, 9, 2]])
    out = layer(ids)
    assert out.shape == (2, 3, 4) and layer.output_shape == (3, 4)
    np.testing.assert_array_equal(out, layer.embeddings.value[ids])
    np.testing.assert_array_equal(layer(ids.astype(np.float32)), out)     # a model hands ids over as floats


def test_default_init_is_keras_uniform():
    layer = layers.Embedding(200, 50)
    layer.build_for((3,))
    w = layer.embeddings.value
    assert w.shape == (200, 50) and np.abs(w).max() <= 0.05 and w.std() > 0.02


def test_gradient_of_repeated_ids_adds_up(float64):
    layer = layers.Embedding(6, 2)
    ids = np.array([[1, 1, 4]], np.float64)
    layer(ids)
    g = np.array([[[1.0, 2.0], [10.0, 20.0], [5.0, 5.0]]])
    dx = layer.backward(g)
    expected = np.zeros((6, 2))
    expected[1] = [11, 22]
    expected[4] = [5, 5]
    np.testing.assert_array_equal(layer.embeddings.grad, expected)
    assert dx.shape == ids.shape and not dx.any()                         # ids are not differentiable


def test_weight_gradient_matches_finite_differences(float64):
    check_gradients(layers.Embedding(7, 3), rng.integers(0, 7, (4, 5)).astype(np.float64), check_inputs=False)


def test_empty_batch():
    check_empty_batch(layers.Embedding(7, 3), rng.integers(0, 7, (4, 5)).astype(np.float32))


@pytest.mark.parametrize("ids,message", [
    ([[1, 7]], r"ids in \[0, 7\), received 7"),
    ([[-1, 2]], r"received -1"),
    ([[1.5, 2]], r"received 1.5"),
])
def test_ids_out_of_range_or_fractional_are_refused(ids, message):
    layer = layers.Embedding(7, 3)
    with pytest.raises(ValueError, match=message):
        layer(np.array(ids))


@pytest.mark.parametrize("kwargs,message", [
    ({"mask_zero": True}, "mask_zero=True is not supported"),
    ({"input_dim": 0}, "input_dim to be a positive int, received 0"),
    ({"output_dim": 2.5}, "output_dim to be a positive int, received 2.5"),
])
def test_bad_arguments_echo_the_value(kwargs, message):
    args = {"input_dim": 5, "output_dim": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        layers.Embedding(**args)


def test_config_round_trip_and_initial_weights():
    table = rng.normal(size=(5, 2)).astype(np.float32)
    layer = layers.Embedding(5, 2, weights=[table], name="emb")
    np.testing.assert_array_equal(layer(np.array([[3]]))[0, 0], table[3])
    assert layers.Embedding.from_config(layer.get_config()).get_config() == layer.get_config()
