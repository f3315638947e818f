"""Conv1D (valid/same/causal, strides, dilation) and dilated Conv2D: gradients, causality, shapes, errors."""
import numpy as np
import pytest

from distnet import layers
from distnet.layers import conv
from tests.layers.gradcheck import case_tests

rng = np.random.default_rng(3)
CASES = [
    ("conv1d_valid", lambda: layers.Conv1D(4, 3, activation="tanh"), (2, 9, 3)),
    ("conv1d_same_stride2", lambda: layers.Conv1D(3, 4, strides=2, padding="same"), (2, 9, 2)),
    ("conv1d_causal_dilated", lambda: layers.Conv1D(3, 3, padding="causal", dilation_rate=2), (2, 10, 2)),
    ("conv1d_relu_nobias", lambda: layers.Conv1D(2, 2, activation="relu", use_bias=False), (3, 6, 2)),
    ("conv2d_dilated_same", lambda: layers.Conv2D(3, (3, 2), dilation_rate=(2, 1), padding="same"), (2, 7, 6, 2)),
    ("conv2d_dilated_valid", lambda: layers.Conv2D(2, 3, dilation_rate=2), (1, 8, 7, 2)),
    # filters <= channels: the input gradient as a convolution of the output gradient (see test below)
    ("conv2d_narrow_same", lambda: layers.Conv2D(3, 3, padding="same", activation="relu"), (2, 5, 6, 3)),
    ("conv2d_narrow_asym", lambda: layers.Conv2D(2, (3, 2), padding="same", dilation_rate=(1, 2)), (2, 5, 6, 3)),
    ("conv1d_narrow_causal", lambda: layers.Conv1D(2, 3, padding="causal", dilation_rate=2), (2, 9, 3)),
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


# the three ways a stride-1 layer can run, forced: (forward on the padded grid, input gradient on the grid,
# input gradient as im2col of the padded output gradient); (False, False, False) is im2col + per-offset GEMMs
PATHS = {"grid": (True, True, False), "transposed": (False, False, True), "per_offset": (False, False, False),
         "grid_forward_only": (True, False, False), "one_gemm": (False, False, False)}


def run_path(make, shape, path, monkeypatch, threads=1):
    """Output, input gradient and weight gradients of a fresh layer forced onto `path`."""
    from distnet import backend
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    layer = make()
    layer.build_for(shape[1:])
    for w in layer.trainable_weights:
        w.value[...] = np.random.default_rng(1).normal(size=w.shape)
    grid_forward, grid_dx, transposed = PATHS[path]
    layer._grid_forward, layer._grid_input_grad = grid_forward, grid_dx
    monkeypatch.setattr(layer, "_transposed_input_grad", lambda: transposed)
    # the per-offset input gradient as kh*kw GEMMs, or as one GEMM for all offsets (chosen by rows per slice)
    monkeypatch.setattr(conv, "ONE_GEMM_ROWS", 10 ** 9 if path == "one_gemm" else 0)
    backend.set_num_threads(threads)
    try:
        out = layer(x, training=True).copy()
        g = np.random.default_rng(2).normal(size=out.shape).astype(np.float32)
        dx = layer.backward(g).copy()
    finally:
        backend.set_num_threads(1)
    return [out, dx] + [w.grad.copy() for w in layer.trainable_weights]


STRIDE_ONE = [
    (lambda: layers.Conv2D(4, 3, padding="same", use_bias=False), (3, 8, 7, 4)),
    (lambda: layers.Conv2D(3, 3, activation="relu"), (2, 9, 8, 5)),
    (lambda: layers.Conv2D(2, (2, 3), padding="same", dilation_rate=(2, 1)), (2, 7, 6, 3)),
    (lambda: layers.Conv2D(4, 1), (2, 5, 5, 6)),
    (lambda: layers.Conv2D(16, 3, padding="same", use_bias=False), (5, 10, 9, 16)),
    (lambda: layers.Conv1D(3, 4, padding="causal", dilation_rate=2), (2, 11, 3)),
]


@pytest.mark.parametrize("make,shape", STRIDE_ONE)
@pytest.mark.parametrize("path", ["grid", "transposed", "grid_forward_only", "one_gemm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_stride_one_path_equals_im2col_and_per_offset_sums(make, shape, path, threads, monkeypatch):
    """The grid convolution (kh*kw shifted GEMMs on the padded grid, no im2col) and the input gradient as a
    convolution of the output gradient with the flipped kernel give the im2col + per-offset results."""
    got = run_path(make, shape, path, monkeypatch, threads)
    want = run_path(make, shape, "per_offset", monkeypatch)
    for name, a, b in zip(["output", "input gradient", "kernel gradient", "bias gradient"], got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("make,shape", [
    (lambda: layers.Conv2D(3, 3, strides=2, activation="relu"), (3, 9, 8, 4)),
    (lambda: layers.Conv2D(2, (3, 2), strides=(1, 2), padding="same"), (2, 7, 9, 3)),
    (lambda: layers.Conv2D(3, 3, dilation_rate=2), (2, 9, 9, 2)),
    (lambda: layers.Conv1D(4, 3, strides=2), (3, 11, 5))])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_input_gradient_as_one_gemm_equals_the_per_offset_gemms(make, shape, threads, monkeypatch):
    """Strided and dilated layers (the stride-one ones are above): one GEMM for all kernel offsets, its
    slices summed into the windows, gives what one GEMM per offset gives."""
    got = run_path(make, shape, "one_gemm", monkeypatch, threads)
    want = run_path(make, shape, "per_offset", monkeypatch)
    for name, a, b in zip(["output", "input gradient", "kernel gradient", "bias gradient"], got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("shape,kw,grid", [((3, 16, 16, 8), {}, True), ((3, 6, 6, 64), {}, False),
                                           ((3, 9, 9, 32), {"strides": 2}, False)])
def test_padded_input_and_columns_are_made_again_in_backward_after_other_layers_used_the_shared_buffers(
        shape, kw, grid):
    """The padded input (grid path) and the im2col columns (>= 32 channels, 3x3) live in scratch shared by the
    layers: another layer's forward in between leaves the gradients as they are without it."""
    rng = np.random.default_rng(0)
    x, other = rng.normal(size=shape).astype(np.float32), rng.normal(size=shape).astype(np.float32)
    first, second = (layers.Conv2D(shape[-1], 3, padding="same", **kw) for _ in range(2))
    for layer in (first, second):
        layer.build_for(shape[1:])
        assert layer._grid_forward == grid and (grid or not layer._keep_columns())
    g = rng.normal(size=(shape[0],) + first.output_shape).astype(np.float32)
    first(x, training=True)
    want = [first.backward(g.copy()).copy(), first.kernel.grad.copy(), first.bias.grad.copy()]
    first(x, training=True)
    second(other, training=True)
    got = [first.backward(g.copy()), first.kernel.grad, first.bias.grad]
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("path", ["grid", "transposed"])
def test_an_equal_width_layer_forms_its_input_gradient_in_the_gradient_buffer(path, monkeypatch):
    """Stride 1, 'same', filters == channels: the output gradient is copied into the padded buffer first, so
    the input gradient reuses its buffer; the same values as a read-only gradient (into a workspace) gives."""
    shape = (3, 8, 7, 4)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    g = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    layer = layers.Conv2D(4, 3, padding="same")
    layer.build_for(shape[1:])
    layer._grid_forward = layer._grid_input_grad = path == "grid"
    monkeypatch.setattr(layer, "_transposed_input_grad", lambda: path == "transposed")
    layer(x, training=True)
    frozen = g.copy()
    frozen.flags.writeable = False
    want = layer.backward(frozen).copy()
    mine = g.copy()
    got = layer.backward(mine)
    assert np.shares_memory(got, mine) and not np.shares_memory(want, frozen)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shape", [(2, 6, 5, 3), (3, 7, 7, 2)])
def test_grid_paths_match_finite_differences(shape, monkeypatch, float64):
    from tests.layers.gradcheck import check_gradients
    layer = layers.Conv2D(3, 3, padding="same", activation="tanh")
    layer.build_for(shape[1:])
    layer._grid_forward = layer._grid_input_grad = True
    check_gradients(layer, np.random.default_rng(6).normal(size=shape))


def test_the_paths_are_chosen_by_channels_and_stride():
    def paths(layer, shape):
        layer.build_for(shape)
        return layer._grid_forward, layer._grid_input_grad, layer._transposed_input_grad()
    assert paths(layers.Conv2D(16, 3, padding="same"), (32, 32, 16)) == (True, True, True)     # ResNet stage 1
    assert paths(layers.Conv2D(64, 3, padding="same"), (8, 8, 64)) == (False, False, True)     # 64 channels
    assert not paths(layers.Conv2D(32, 3), (32, 32, 3))[0]                       # 3 channels: K = 3 too small
    assert paths(layers.Conv2D(64, 3), (15, 15, 32)) == (False, False, False)    # 33% of the grid dropped
    assert paths(layers.Conv2D(32, 3, strides=2, padding="same"), (32, 32, 16))[:2] == (False, False)
    assert not paths(layers.Conv2D(8, 3, strides=2, padding="same"), (8, 8, 16))[2]


@pytest.mark.parametrize("make,shape", [(lambda: layers.Conv2D(16, 3, padding="same"), (32, 32, 16)),
                                        (lambda: layers.Conv1D(16, 3, padding="causal"), (40, 16))])
def test_the_grid_path_handles_an_empty_batch(make, shape):
    layer = make()
    layer.build_for(shape)
    assert layer._grid_forward and layer._grid_input_grad
    layer(np.ones((2,) + shape, np.float32), training=True)
    out = layer(np.zeros((0,) + shape, np.float32), training=True)
    dx = layer.backward(np.zeros_like(out))
    assert out.shape == dx.shape == (0,) + shape and not layer.kernel.grad.any()


def test_columns_times_sums_blocks_of_rows_to_the_one_product():
    from distnet.layers import kernels
    rng = np.random.default_rng(0)
    for rows, k in ((5000, 27), (5000, 64), (1000, 27)):         # blocks; many columns; too few rows to cut
        cols, g = rng.normal(size=(rows, k)).astype(np.float32), rng.normal(size=(rows, 8)).astype(np.float32)
        out, tmp = np.empty((k, 8), np.float32), np.empty((k, 8), np.float32)
        kernels.columns_times(cols, g, out, tmp, chunk=1024)
        np.testing.assert_allclose(out, cols.astype(np.float64).T @ g, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
@pytest.mark.parametrize("make,shape", [(lambda: layers.Conv2D(4, 3, activation="relu"), (7, 6, 2)),
                                        (lambda: layers.Conv1D(3, 2), (9, 3))])
def test_an_input_of_another_dtype_is_converted_as_before(make, shape, dtype):
    """im2col copies a kernel row as raw bytes only when the input has the layer's dtype; others are cast
    (a float64 array from np.random given to a float32 layer: was an error, float16 silently wrong values)."""
    x = (np.random.default_rng(0).normal(size=(2,) + shape) * 3).astype(dtype)
    layer = make()
    layer.build_for(shape)
    out = layer(x, training=True).copy()
    g = np.random.default_rng(1).normal(size=out.shape).astype(np.float32)
    dx = layer.backward(g.copy()).copy()
    dk = layer.kernel.grad.copy()
    np.testing.assert_allclose(out, layer(x.astype(np.float32), training=True), rtol=1e-6)
    np.testing.assert_allclose(dx, layer.backward(g.copy()), rtol=1e-6)
    np.testing.assert_allclose(dk, layer.kernel.grad, rtol=1e-6)
    pool = (layers.MaxPooling2D if len(shape) == 3 else layers.MaxPooling1D)()
    pool.build_for(out.shape[1:])
    np.testing.assert_allclose(layer.call_pooled(x, pool, training=True).copy(),
                               layer.call_pooled(x.astype(np.float32), pool, training=True), rtol=1e-6)
