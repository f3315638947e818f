"""Checks every layer test shares: backward against finite differences (any number of inputs and outputs), and
a batch of zero samples. Run the gradient check under the float64 fixture."""
import numpy as np
import pytest

from distnet import backend
from tests.conftest import assert_grad_close


def _as_list(value, many):
    return list(value) if many else [value]


def check_gradients(layer, x, drop=(), check_inputs=True, seed=0, **tol):
    """Finite differences of f = sum_k <output_k, r_k> against backward, for the inputs and every trainable
    weight. drop: indices of outputs that get no gradient (backward receives None for them). Also checks that
    backward overwrites weight gradients (a second backward gives the same values, not twice them)."""
    rng = np.random.default_rng(seed)
    outs = _as_list(layer(x, training=True), layer.multi_output)
    rs = [None if k in drop else rng.normal(size=o.shape) for k, o in enumerate(outs)]

    def f():
        o = _as_list(layer(x, training=True), layer.multi_output)
        return float(sum(np.sum(a * r) for a, r in zip(o, rs) if r is not None))

    def backward():
        layer(x, training=True)
        grads = [None if r is None else r.copy() for r in rs]      # backward may overwrite its gradient
        dx = layer.backward(grads if layer.multi_output else grads[0])
        return [np.array(d) for d in _as_list(dx, layer.multi_input)]

    xs = _as_list(x, layer.multi_input)
    dxs = backward()
    assert len(dxs) == len(xs)
    for dx, xi in zip(dxs, xs):
        assert dx.shape == xi.shape
        if check_inputs:
            assert_grad_close(dx, xi, f, **tol)
    for w in layer.trainable_weights:
        backward()
        first = w.grad.copy()
        backward()
        np.testing.assert_array_equal(w.grad, first, err_msg=f"{w.name}: backward must overwrite, not add")
        assert_grad_close(first, w.value, f, **tol)


def check_empty_batch(layer, x):
    """After a normal batch, a batch of 0 samples gives correctly shaped empty outputs and input gradients, and
    weight gradients of zero."""
    layer(x, training=True)
    xs = _as_list(x, layer.multi_input)
    empty = [np.zeros((0,) + xi.shape[1:], xi.dtype) for xi in xs]
    out = _as_list(layer(empty if layer.multi_input else empty[0], training=True), layer.multi_output)
    shapes = _as_list(layer.output_shape, layer.multi_output)
    assert [o.shape for o in out] == [(0,) + tuple(s) for s in shapes]
    grads = [np.zeros_like(o) for o in out]
    dx = _as_list(layer.backward(grads if layer.multi_output else grads[0]), layer.multi_input)
    assert [d.shape for d in dx] == [e.shape for e in empty]
    for w in layer.trainable_weights:
        assert np.all(w.grad == 0), w.name


def case_tests(cases, threads=False):
    """The finite-difference test (float64; with threads=True once per intra-op thread count) and the
    empty-batch test for a list of (id, make_layer, input_shape) cases; a test module binds both to test names:
    `test_backward_matches_finite_differences, test_empty_batch = case_tests(CASES)`."""
    ids = [c[0] for c in cases]
    counts = [1, 2] if threads else [1]

    @pytest.mark.parametrize("n_threads", counts, ids=[f"{t}thread" for t in counts])
    @pytest.mark.parametrize("name,make,shape", cases, ids=ids)
    def test_backward_matches_finite_differences(float64, name, make, shape, n_threads):
        backend.set_num_threads(n_threads)           # 2: the batch is split over 2 intra-op threads
        try:
            check_gradients(make(), np.random.default_rng(ids.index(name)).normal(size=shape))
        finally:
            backend.set_num_threads(1)

    @pytest.mark.parametrize("name,make,shape", cases, ids=ids)
    def test_empty_batch(name, make, shape):
        check_empty_batch(make(), np.random.default_rng(0).normal(size=shape).astype(np.float32))

    return test_backward_matches_finite_differences, test_empty_batch
