"""LayerNormalization: gradients, normalised statistics, Keras's weights and axis forms, errors."""
import numpy as np
import pytest

from distnet import layers
from tests.layers.gradcheck import case_tests

rng = np.random.default_rng(17)
RANDOM = {"gamma_initializer": "random_normal", "beta_initializer": "random_normal"}   # not the trivial 1 and 0
CASES = [
    ("last_axis", lambda: layers.LayerNormalization(**RANDOM), (4, 6)),
    ("sequence", lambda: layers.LayerNormalization(epsilon=1e-5, **RANDOM), (3, 4, 5)),
    ("two_axes", lambda: layers.LayerNormalization(axis=[1, 2], **RANDOM), (3, 4, 5)),
    ("middle_axis", lambda: layers.LayerNormalization(axis=1, **RANDOM), (3, 4, 5)),
    ("no_center", lambda: layers.LayerNormalization(center=False, **RANDOM), (3, 5)),
    ("no_scale", lambda: layers.LayerNormalization(scale=False, **RANDOM), (3, 5)),
]
test_backward_matches_finite_differences, test_empty_batch = case_tests(CASES)


def test_each_sample_is_normalised_over_its_last_axis():
    x = rng.normal(3.0, 5.0, size=(8, 3, 16)).astype(np.float32)
    layer = layers.LayerNormalization()
    out = layer(x)
    assert [w.name.split("/")[-1] for w in layer.weights] == ["gamma", "beta"]    # Keras's order
    assert layer.gamma.shape == layer.beta.shape == (16,)
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(-1), x.var(-1) / (x.var(-1) + 1e-3), rtol=1e-4)


def test_several_axes_give_weights_of_their_shape():
    layer = layers.LayerNormalization(axis=[-1, -2])
    layer.build_for((4, 5))
    assert layer.gamma.shape == (4, 5)


@pytest.mark.parametrize("axis,shown", [(0, "0"), (3, "3"), ([1, -2], r"\[1, -2\]")])
def test_bad_axis_echoes_the_value_and_shape(axis, shown):
    with pytest.raises(ValueError, match=r"input of shape \(None, 4, 5\), received axis=" + shown):
        layers.LayerNormalization(axis=axis).build_for((4, 5))


def test_bad_arguments_and_config_round_trip():
    with pytest.raises(TypeError, match="received 'last'"):
        layers.LayerNormalization(axis="last")
    layer = layers.LayerNormalization(axis=[1, 2], epsilon=1e-5, center=False, name="ln")
    assert layers.LayerNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
