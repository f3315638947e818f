import numpy as np
import pytest

from distnet import initializers, layers, utils


def test_variance_scaling_families_have_keras_statistics():
    shape = (400, 300)
    w = initializers.get("glorot_uniform")(shape)
    limit = np.sqrt(6 / 700)
    assert w.dtype == np.float32 and np.abs(w).max() <= limit and np.isclose(w.std(), limit / np.sqrt(3), rtol=0.02)
    assert np.isclose(initializers.get("he_normal")(shape).std(), np.sqrt(2 / 400), rtol=0.03)
    assert np.abs(initializers.get("he_normal")(shape)).max() <= 2 * np.sqrt(2 / 400) / 0.8796 + 1e-6
    assert np.isclose(initializers.get("he_uniform")(shape).std(), np.sqrt(2 / 400), rtol=0.03)
    assert np.isclose(initializers.get("lecun_normal")(shape).std(), np.sqrt(1 / 400), rtol=0.03)
    conv = initializers.get("glorot_uniform")((3, 3, 16, 32))      # fans include the receptive field
    assert np.abs(conv).max() <= np.sqrt(6 / (9 * 16 + 9 * 32))
    q = initializers.get("orthogonal")((5, 5))
    np.testing.assert_allclose(q @ q.T, np.eye(5), atol=1e-5)
    assert np.all(initializers.get("ones")((2,)) == 1) and np.all(initializers.Constant(3)((2,)) == 3)


def test_keras_layer_defaults():
    d = layers.Dense(4)
    assert isinstance(d.kernel_initializer, initializers.GlorotUniform)
    assert isinstance(d.bias_initializer, initializers.Zeros)
    bn = layers.BatchNormalization()
    assert (bn.momentum, bn.epsilon) == (0.99, 1e-3)
    assert layers.MaxPooling2D().strides == (2, 2) and layers.Conv2D(2, 3).padding == "valid"


def test_seed_makes_initial_weights_repeat():
    utils.set_random_seed(11)
    a = layers.Dense(3, input_dim=4)
    a.build_for((4,))
    utils.set_random_seed(11)
    b = layers.Dense(3, input_dim=4)
    b.build_for((4,))
    np.testing.assert_array_equal(a.kernel.value, b.kernel.value)
    with pytest.raises(ValueError, match="non-negative int"):
        utils.set_random_seed(-1)


def test_input_forms_match_keras():
    from distnet.models import Sequential
    for first in (layers.Dense(2, input_dim=3), layers.Dense(2, input_shape=(3,)),
                  layers.Dense(2, batch_input_shape=(None, 3))):
        assert Sequential([first]).input_shape == (None, 3)
    model = Sequential([layers.Input(shape=(3,)), layers.Dense(2)])
    assert model.input_shape == (None, 3) and len(model.layers) == 1
    lazy = Sequential([layers.Dense(2)])
    assert not lazy.built
    lazy.build((None, 5))
    assert lazy.get_weights()[0].shape == (5, 2)


def test_to_categorical():
    np.testing.assert_array_equal(utils.to_categorical([0, 2], 3), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        utils.to_categorical([0, 3], 3)
