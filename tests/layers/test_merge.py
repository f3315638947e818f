"""Merge layers (multi-input): values, one gradient per input, shape checks, empty batches, configs."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import check_empty_batch, check_gradients

rng = np.random.default_rng(19)
REFERENCE = {
    "Add": lambda xs: sum(xs),
    "Subtract": lambda xs: xs[0] - xs[1],
    "Multiply": lambda xs: np.prod(xs, axis=0),
    "Average": lambda xs: np.mean(xs, axis=0),
    "Maximum": lambda xs: np.max(xs, axis=0),
    "Minimum": lambda xs: np.min(xs, axis=0),
}


def inputs(name, shape=(2, 3, 4), dtype=np.float64):
    return [rng.normal(size=shape).astype(dtype) for _ in range(2 if name == "Subtract" else 3)]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_elementwise_values(name):
    xs = inputs(name, dtype=np.float32)
    layer = getattr(layers, name)()
    assert layer.multi_input and not layer.multi_output
    np.testing.assert_allclose(layer(xs), REFERENCE[name](xs), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_backward_matches_finite_differences(float64, name):
    check_gradients(getattr(layers, name)(), inputs(name))


@pytest.mark.parametrize("axis,shapes", [(-1, [(2, 3, 4), (2, 3, 1), (2, 3, 2)]), (1, [(2, 1, 4), (2, 3, 4)])])
def test_concatenate_values_and_gradients(float64, axis, shapes):
    xs = [rng.normal(size=s) for s in shapes]
    layer = layers.Concatenate(axis=axis)
    np.testing.assert_array_equal(layer(xs), np.concatenate(xs, axis=axis))
    check_gradients(layer, xs)


def test_each_input_gets_its_own_gradient_array():
    """The layer that receives a gradient may overwrite it: no two inputs may share one."""
    layer = layers.Add()
    xs = inputs("Add", dtype=np.float32)
    layer(xs)
    grads = layer.backward(np.ones((2, 3, 4), np.float32))
    grads[0] *= 5
    assert len({id(g) for g in grads}) == 3 and np.all(grads[1] == 1)


@pytest.mark.parametrize("make", [layers.Add, layers.Subtract, layers.Maximum, lambda: layers.Concatenate(axis=1)],
                         ids=["add", "subtract", "maximum", "concatenate"])
def test_empty_batch(make):
    check_empty_batch(make(), [rng.normal(size=(2, 3, 4)).astype(np.float32) for _ in range(2)])


@pytest.mark.parametrize("make,shapes,message", [
    (layers.Add, [(3,), (4,)], r"same shape, received shapes \[\(None, 3\), \(None, 4\)\]"),
    (layers.Multiply, [(3,)], r"at least 2 inputs, received 1"),
    (layers.Subtract, [(3,)] * 3, r"exactly 2 inputs, received 3"),
    (layers.Concatenate, [(3, 2), (4, 2)], r"agree on every axis but axis -1, received shapes"),
    (layers.Concatenate, [(3, 2), (3,)], r"same rank, received shapes"),
    (lambda: layers.Concatenate(axis=0), [(3,), (3,)], r"axis 0 \(the batch axis or out of range\)"),
])
def test_bad_shapes_are_refused_with_the_shapes(make, shapes, message):
    with pytest.raises(ValueError, match=message):
        make().build_for(shapes)


def test_built_layer_refuses_other_shapes_and_round_trips_its_config():
    layer = layers.Concatenate(axis=1, name="cat")
    layer([np.ones((2, 3)), np.ones((2, 2))])
    expected = r"shapes \[\(None, 3\), \(None, 2\)\], received shapes \[\(2, 3\), \(2, 3\)\]"
    with pytest.raises(ValueError, match=expected):
        layer([np.ones((2, 3)), np.ones((2, 3))])
    assert layers.Concatenate.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.output_shape == (5,)
