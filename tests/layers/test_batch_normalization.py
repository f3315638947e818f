"""BatchNormalization's row-view kernels against the textbook formulas (float64 reference), in float32, on the
shapes a ResNet gives them: images, sequences and (batch, channels); training and inference; strided input."""
import numpy as np
import pytest

from distnet import layers


def reference(x, g, gamma, beta, eps, training, moving=None):
    """Forward output, dx, dgamma, dbeta computed directly in float64 (the unfused formulas)."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    axes = tuple(range(x.ndim - 1))
    mean, var = (x.mean(axis=axes), x.var(axis=axes)) if training else moving
    inv = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * inv
    out = xhat * gamma + beta
    dgamma, dbeta = (g * xhat).sum(axis=axes), g.sum(axis=axes)
    dxhat = g * gamma
    if not training:
        return out, dxhat * inv, dgamma, dbeta
    m = x.size // x.shape[-1]
    dx = (inv / m) * (m * dxhat - dxhat.sum(axis=axes) - xhat * (dxhat * xhat).sum(axis=axes))
    return out, dx, dgamma, dbeta


@pytest.mark.parametrize("shape", [(32, 8, 8, 16), (40, 9, 30, 16), (4, 5, 7, 3), (16, 12, 6), (64, 10)])
@pytest.mark.parametrize("training", [True, False])
def test_forward_and_backward_equal_the_textbook_formulas(shape, training):
    rng = np.random.default_rng(3)
    x = (rng.normal(size=shape) * 3 + 2).astype(np.float32)
    g = rng.normal(size=shape).astype(np.float32)
    layer = layers.BatchNormalization(gamma_initializer="random_normal", beta_initializer="random_normal")
    layer.build_for(shape[1:])
    moving = (rng.normal(size=shape[-1]).astype(np.float32), rng.random(shape[-1]).astype(np.float32) + 0.5)
    layer.moving_mean.value[...], layer.moving_variance.value[...] = moving
    gamma, beta = layer.gamma.value.astype(np.float64), layer.beta.value.astype(np.float64)
    out = layer(x, training=training).copy()
    dx = layer.backward(g.copy())
    want = reference(x, g, gamma, beta, 1e-3, training, moving)
    np.testing.assert_allclose(out, want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, want[1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.gamma.grad, want[2], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(layer.beta.grad, want[3], rtol=1e-4, atol=1e-4)


def test_backward_in_blocks_keeps_the_centred_input():
    """(40, 9, 30, 16): the input gradient is formed in blocks of rows, the last one shorter; a second backward
    after the same forward gives the same gradient (the centred input is not overwritten)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(40, 9, 30, 16)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    layer = layers.BatchNormalization(gamma_initializer="random_normal")
    layer.build_for(x.shape[1:])
    layer(x, training=True)
    first = layer.backward(g.copy()).copy()
    np.testing.assert_array_equal(layer.backward(g.copy()), first)


def test_a_strided_input_and_gradient_give_the_same_result_as_contiguous_ones():
    rng = np.random.default_rng(4)
    big = rng.normal(size=(8, 6, 10, 4)).astype(np.float32)
    gbig = rng.normal(size=big.shape).astype(np.float32)
    results = []
    for x, g in ((big[:, :, ::2], gbig[:, :, ::2]), (big[:, :, ::2].copy(), gbig[:, :, ::2].copy())):
        layer = layers.BatchNormalization(gamma_initializer="random_normal", name="bn")
        layer.build_for(x.shape[1:])
        layer.gamma.value[...] = np.arange(1, 5)
        out = layer(x, training=True).copy()
        results.append((out, layer.backward(g.copy()).copy(), layer.gamma.grad.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_backward_without_scale_or_center():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3, 5, 2)).astype(np.float32)
    g = rng.normal(size=x.shape).astype(np.float32)
    layer = layers.BatchNormalization(scale=False, center=False)
    layer.build_for(x.shape[1:])
    out = layer(x, training=True)
    want = reference(x, g, 1.0, 0.0, 1e-3, True)
    np.testing.assert_allclose(out, want[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.backward(g.copy()), want[1], rtol=1e-4, atol=1e-5)
