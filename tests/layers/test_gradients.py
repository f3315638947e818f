"""Every layer's backward against finite differences, in float64."""
import numpy as np
import pytest

from distnet import layers
from tests.conftest import assert_grad_close

rng = np.random.default_rng(42)

CASES = [
    ("dense", lambda: layers.Dense(5, activation="tanh"), (4, 7)),
    ("dense_3d", lambda: layers.Dense(3), (2, 4, 6)),
    ("dense_nobias", lambda: layers.Dense(4, use_bias=False, activation="sigmoid"), (3, 5)),
    ("conv_valid", lambda: layers.Conv2D(4, (3, 3), activation="tanh"), (2, 7, 6, 3)),
    ("conv_same", lambda: layers.Conv2D(3, (3, 3), padding="same"), (2, 5, 5, 2)),
    ("conv_stride2_same", lambda: layers.Conv2D(3, (3, 2), strides=2, padding="same"), (2, 7, 8, 2)),
    ("conv_stride2_valid", lambda: layers.Conv2D(2, 3, strides=(2, 1)), (1, 9, 6, 2)),
    ("maxpool", lambda: layers.MaxPooling2D(), (2, 6, 6, 3)),
    ("maxpool_odd", lambda: layers.MaxPooling2D((2, 2)), (2, 7, 5, 2)),
    ("maxpool_overlap_same", lambda: layers.MaxPooling2D(3, strides=2, padding="same"), (2, 7, 7, 2)),
    ("avgpool", lambda: layers.AveragePooling2D(), (2, 6, 4, 3)),
    ("avgpool_same", lambda: layers.AveragePooling2D(3, strides=2, padding="same"), (2, 5, 6, 2)),
    ("gap", lambda: layers.GlobalAveragePooling2D(), (3, 4, 5, 2)),
    ("flatten", lambda: layers.Flatten(), (2, 3, 4, 2)),
    ("reshape", lambda: layers.Reshape((-1, 4)), (2, 3, 4)),
    ("batchnorm", lambda: layers.BatchNormalization(), (6, 4)),
    ("batchnorm_conv", lambda: layers.BatchNormalization(), (3, 4, 4, 2)),
]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Each check runs single-threaded and with the batch split over 2 intra-op threads."""
    from distnet import backend
    backend.set_num_threads(request.param)
    yield request.param
    backend.set_num_threads(1)


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_layer_backward_matches_finite_differences(float64, threads, name, make, shape):
    layer = make()
    x = rng.normal(size=shape)
    layer(x, training=True)
    r = rng.normal(size=layer(x, training=True).shape)

    def f():
        return float(np.sum(layer(x, training=True) * r))

    layer(x, training=True)
    dx = layer.backward(r.copy()).copy()       # backward may overwrite its incoming gradient
    assert dx.shape == x.shape
    assert_grad_close(dx, x, f)
    for w in layer.trainable_weights:
        layer(x, training=True)
        layer.backward(r.copy())
        analytic = w.grad.copy()
        assert_grad_close(analytic, w.value, f)


def test_dropout_backward_uses_the_forward_mask(float64):
    layer = layers.Dropout(0.5, seed=3)
    x = rng.normal(size=(50, 8))
    out = layer(x, training=True)
    dx = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(dx * x, out)       # same mask, same 1/(1-rate) scale
    assert 0.3 < (out == 0).mean() < 0.7
    np.testing.assert_array_equal(layer(x, training=False), x)


def test_maxpool_ties_send_gradient_to_one_input():
    layer = layers.MaxPooling2D()
    x = np.zeros((1, 2, 2, 1), dtype=np.float32)
    layer(x)
    dx = layer.backward(np.ones((1, 1, 1, 1), dtype=np.float32))
    assert dx.sum() == 1.0


def test_batchnorm_inference_uses_moving_statistics():
    layer = layers.BatchNormalization(momentum=0.0)
    x = rng.normal(3.0, 2.0, size=(256, 3)).astype(np.float32)
    layer(x, training=True)
    np.testing.assert_allclose(layer.moving_mean.value, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.value, x.var(0), rtol=1e-4)
    out = layer(x, training=False)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(0), np.sqrt(x.var(0) / (x.var(0) + 1e-3)), rtol=1e-4)


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_layer_handles_an_empty_batch(name, make, shape):
    """A worker may get zero samples in a short last batch; it must still run the step (grads of zero)."""
    layer = make()
    layer(np.ones(shape, np.float32), training=True)
    empty = np.zeros((0,) + shape[1:], np.float32)
    out = layer(empty, training=True)
    assert out.shape == (0,) + layer.output_shape
    dx = layer.backward(np.zeros_like(out))
    assert dx.shape == empty.shape
    for w in layer.trainable_weights:
        assert np.all(w.grad == 0)
