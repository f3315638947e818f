"""A convolution followed by a disjoint max pooling runs as one (Conv.call_pooled / backward_pooled): the same
outputs, losses and updates as the two layers run one after the other."""
import numpy as np
import pytest

import distnet
from distnet import backend, layers
from distnet.layers import conv as conv_module


def _pair(first, pool, rank=2, seed=0):
    """A chain with `first` (a convolution) then `pool`, another convolution + pooling, and a softmax head."""
    distnet.utils.set_random_seed(seed)
    if rank == 2:
        body = [layers.Input((17, 16, 3)), first, pool, layers.Conv2D(6, 3, activation="relu"), layers.MaxPooling2D()]
    else:
        body = [layers.Input((23, 3)), first, pool, layers.Conv1D(6, 3, activation="relu"), layers.MaxPooling1D()]
    m = distnet.Sequential(body + [layers.Flatten(), layers.Dense(5, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def _data(rank, n=24):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 17, 16, 3) if rank == 2 else (n, 23, 3)).astype(np.float32)
    x[:, :10] = 0.0      # constant regions: windows of both poolings whose values tie (the first maximum wins)
    return x, np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]


CASES = {
    "relu 2x2": (lambda: layers.Conv2D(8, 3, activation="relu"), lambda: layers.MaxPooling2D(), 2),
    "linear 3x3, same padding": (lambda: layers.Conv2D(8, 3, padding="same"), lambda: layers.MaxPooling2D(3), 2),
    "2x1 windows, stride 2 conv": (lambda: layers.Conv2D(8, 3, strides=2, activation="relu"),
                                   lambda: layers.MaxPooling2D((2, 1)), 2),
    "dilated, no bias": (lambda: layers.Conv2D(8, 3, dilation_rate=2, use_bias=False, activation="relu"),
                         lambda: layers.MaxPooling2D(), 2),
    "Conv1D + MaxPooling1D": (lambda: layers.Conv1D(8, 3, activation="relu"), lambda: layers.MaxPooling1D(2), 1),
}


@pytest.mark.parametrize("gemm_per_phase", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_conv_and_pooling_train_as_the_two_layers(case, threads, gemm_per_phase, monkeypatch):
    """Ties included; each pooling phase a GEMM of its own, or one GEMM for all phases (few rows)."""
    monkeypatch.setattr(conv_module, "PHASE_GEMM_ROWS", 0 if gemm_per_phase else 10 ** 9)
    conv, pool, rank = CASES[case]
    x, y = _data(rank)
    fused, plain = _pair(conv(), pool(), rank), _pair(conv(), pool(), rank)
    plain.pooled_convs = set()                               # the layers one after the other
    assert 0 in fused.pooled_convs                          # (the second pair fuses unless it runs on the grid)
    backend.set_num_threads(threads)
    try:
        h_fused = fused.fit(x, y, batch_size=12, epochs=3, verbose=0, shuffle=False)
        h_plain = plain.fit(x, y, batch_size=12, epochs=3, verbose=0, shuffle=False)
        p_fused, p_plain = fused.predict(x, verbose=0), plain.predict(x, verbose=0)
    finally:
        backend.set_num_threads(1)
    np.testing.assert_allclose(h_fused.history["loss"], h_plain.history["loss"], rtol=1e-5)
    for a, b in zip(fused.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p_fused, p_plain, rtol=1e-5, atol=1e-6)
    assert h_plain.history["loss"][-1] < h_plain.history["loss"][0]


def test_fused_pooling_sends_the_gradient_to_the_first_maximum_of_a_tie():
    distnet.utils.set_random_seed(0)
    m = distnet.Sequential([layers.Input((4, 4, 1)), layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones"),
                            layers.MaxPooling2D()])
    assert m.pooled_convs == {0}
    conv, pool = m.layers[:2]
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 1, 1] = x[0, 1, 0] = 2.0                 # window (0, 0): a tie between (1, 0) and (1, 1)
    x[0, 3, 3] = 5.0                              # window (1, 1): the maximum at (3, 3)
    out = conv.call_pooled(x, pool, training=True)
    np.testing.assert_array_equal(out[0, :, :, 0], [[2, 0], [0, 5]])
    dx = conv.backward_pooled(np.ones((1, 2, 2, 1), np.float32), pool, need_input_grad=True)
    want = np.zeros((4, 4), np.float32)
    want[1, 0] = want[3, 3] = 1.0                 # the first of the tie, the single maximum; the zero windows: relu
    want[0, 2] = want[2, 0] = 1.0                 # linear here: the all-zero windows route to their first
    np.testing.assert_array_equal(dx[0, :, :, 0], want)
    # dkernel = sum of the inputs each window's gradient reached: 2 + 0 + 0 + 5
    np.testing.assert_allclose(conv.kernel.grad.ravel(), [7.0])


def test_only_a_disjoint_max_pooling_after_a_relu_or_linear_convolution_fuses():
    def chain(*mid, conv_kw=None):
        m = distnet.Sequential([layers.Input((12, 12, 3)), layers.Conv2D(8, 3, **(conv_kw or {})), *mid,
                                layers.Flatten(), layers.Dense(2)])
        return m.pooled_convs
    assert chain(layers.MaxPooling2D()) == {0}
    assert chain(layers.MaxPooling2D(2, strides=1)) == set()             # overlapping windows
    assert chain(layers.MaxPooling2D(padding="same")) == set()
    assert chain(layers.AveragePooling2D()) == set()
    assert chain(layers.MaxPooling2D(), conv_kw={"activation": "tanh"}) == set()
    assert chain(layers.Activation("relu"), layers.MaxPooling2D()) == set()
    # 16 channels, stride 1: the forward runs on the padded grid (no im2col), which this path does not take
    grid = distnet.Sequential([layers.Input((20, 20, 16)), layers.Conv2D(8, 3, padding="same"),
                               layers.MaxPooling2D()])
    assert grid.layers[0]._grid_forward and grid.pooled_convs == set()
    # the convolution's output read by another layer too: a graph, not a chain
    inp = distnet.Input((12, 12, 3))
    c = layers.Conv2D(4, 3)(inp)
    both = distnet.Model(inp, layers.Concatenate()([layers.Flatten()(layers.MaxPooling2D()(c)),
                                                    layers.Flatten()(c)]))
    assert not both.chain and both.pooled_convs == set()


@pytest.mark.parametrize("channels,filters,method", [(3, 40, "offsets"), (40, 6, "transposed"), (3, 16, "grid")])
@pytest.mark.parametrize("size", [(16, 14), (17, 15)])
def test_the_pooled_input_gradient_by_each_method_matches_the_two_layers(channels, filters, method, size):
    """Each way the convolution computes its input gradient, on outputs the windows cover wholly (even) or not
    (odd: the last row and column get no gradient)."""
    rng = np.random.default_rng(2)
    distnet.utils.set_random_seed(2)
    conv = layers.Conv2D(filters, 3, padding="same", activation="relu")
    pool = layers.MaxPooling2D()
    conv.build_for(size + (channels,))
    pool.build_for(conv.output_shape)
    used = "grid" if conv._grid_input_grad else "transposed" if conv._transposed_input_grad() else "offsets"
    assert used == method and conv.pools_with(pool)
    x = rng.normal(size=(5,) + size + (channels,)).astype(np.float32)
    g = rng.normal(size=(5,) + pool.output_shape).astype(np.float32)
    conv.kernel.grad, conv.bias.grad = np.zeros_like(conv.kernel.value), np.zeros_like(conv.bias.value)
    out = conv.call_pooled(x, pool, training=True).copy()
    dx = conv.backward_pooled(g.copy(), pool, need_input_grad=True).copy()
    dk, db = conv.kernel.grad.copy(), conv.bias.grad.copy()
    ref_out = pool.call(conv.call(x, training=True), training=True)
    ref_dx = conv.backward(pool.backward(g.copy()), need_input_grad=True)
    # each phase is a GEMM of its own, which OpenBLAS may sum in another order than one GEMM of all positions
    # (its small-matrix kernels): float32 rounding of the largest terms
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-6 * np.abs(ref_out).max())
    scale = np.abs(ref_dx).max()
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-6 * scale)
    np.testing.assert_allclose(dk, conv.kernel.grad, rtol=1e-5, atol=1e-6 * np.abs(dk).max())
    np.testing.assert_allclose(db, conv.bias.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("gemm_per_phase", [True, False])
def test_fused_conv_and_pooling_take_an_empty_batch(gemm_per_phase, monkeypatch):
    """A worker's shard can be empty: zero samples in, zero out, zero gradients."""
    monkeypatch.setattr(conv_module, "PHASE_GEMM_ROWS", 0 if gemm_per_phase else 10 ** 9)
    conv, pool = layers.Conv2D(4, 3, activation="relu"), layers.MaxPooling2D()
    conv.build_for((9, 8, 3))
    pool.build_for(conv.output_shape)
    conv.kernel.grad, conv.bias.grad = np.ones_like(conv.kernel.value), np.ones_like(conv.bias.value)
    out = conv.call_pooled(np.zeros((0, 9, 8, 3), np.float32), pool, training=True)
    assert out.shape == (0, 3, 3, 4)
    dx = conv.backward_pooled(np.zeros(out.shape, np.float32), pool, need_input_grad=True)
    assert dx.shape == (0, 9, 8, 3)
    assert not conv.kernel.grad.any() and not conv.bias.grad.any()
