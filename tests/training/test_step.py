"""The step's named statistics slots and the per-step penalty, as fit() uses them."""
import numpy as np
import pytest

import distnet
from distnet import layers
from distnet.training.step import StepStats


def test_step_stats_logs_read_each_named_slot():
    stats = StepStats(["a_acc", "b_mae"], ["a_loss", "b_loss"])
    assert (stats.size, stats.output_loss(1), stats.metric_sum(1), stats.metric_weight(1)) == (8, 3, 6, 7)
    totals = stats.new_totals()
    #          count loss a_loss b_loss acc_sum acc_w mae_sum mae_w
    slots = np.array([4, 10, 6, 4, 3, 4, 2, 8], np.float32)
    stats.add(totals, slots, penalty=0.5)
    stats.add(totals, slots, penalty=0.25)
    logs = stats.logs(totals)
    assert logs == {"loss": (20 + 0.5 * 4 + 0.25 * 4) / 8, "a_loss": 12 / 8, "b_loss": 8 / 8, "a_acc": 6 / 8,
                    "b_mae": 4 / 16}


def test_fit_logs_the_penalty_and_steps_on_its_gradient():
    """Zero inputs and targets: the loss is the L2 penalty alone, and one SGD step scales the kernel by
    1 - lr * 2 * l2."""
    model = distnet.Sequential([layers.Dense(3, input_dim=4, use_bias=False,
                                             kernel_regularizer=distnet.regularizers.L2(0.5))])
    model.compile(loss="mse", optimizer=distnet.optimizers.SGD(learning_rate=0.1))
    kernel = model.layers[0].kernel.value.copy()
    x, y = np.zeros((5, 4), np.float32), np.zeros((5, 3), np.float32)
    history = model.fit(x, y, batch_size=5, epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], 0.5 * np.sum(kernel.astype(np.float64) ** 2), rtol=1e-5)
    np.testing.assert_allclose(model.layers[0].kernel.value, 0.9 * kernel, rtol=1e-6)


class _SeesBufsize(layers.Flatten):
    """Flatten that records NumPy's ufunc buffer size in this thread when called and in backward."""
    seen, fail = [], False

    def call(self, x, training=False):
        self.seen.append(np.getbufsize())
        if self.fail:
            raise RuntimeError("raised inside the step")
        return super().call(x, training)

    def backward(self, grad, need_input_grad=True):
        self.seen.append(np.getbufsize())
        return super().backward(grad, need_input_grad)


def test_the_engine_computes_with_small_ufunc_buffers_and_leaves_numpys_setting_as_it_was():
    """backend.UFUNC_BUFFER inside fit (in blocks), evaluate, predict and a call; the caller's setting after each,
    also when a step raises."""
    with np.errstate():                       # restores NumPy's buffer size on exit whatever the test does
        np.setbufsize(4096)                   # the caller's setting, neither NumPy's default nor the engine's
        _check_ufunc_buffers(4096)


def _check_ufunc_buffers(callers):
    _SeesBufsize.seen = []
    model = distnet.Sequential([layers.Input((2, 3)), _SeesBufsize(), layers.Dense(2)])
    model.compile(loss="mse", optimizer="sgd")
    x, y = np.ones((64, 2, 3), np.float32), np.zeros((64, 2), np.float32)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    assert np.getbufsize() == callers
    model.evaluate(x, y, verbose=0)
    model.predict(x, verbose=0)
    model(x)
    assert np.getbufsize() == callers
    assert len(_SeesBufsize.seen) >= 5 and set(_SeesBufsize.seen) == {distnet.backend.UFUNC_BUFFER}
    _SeesBufsize.fail = True
    try:
        with pytest.raises(RuntimeError, match="inside the step"):
            model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    finally:
        _SeesBufsize.fail = False
    assert np.getbufsize() == callers


def test_the_intra_op_threads_compute_with_the_engines_ufunc_buffers():
    distnet.backend.set_num_threads(2)
    try:
        with distnet.backend.ufunc_buffer():
            seen = distnet.backend.parallel_batches(4, lambda lo, hi, t: np.getbufsize())
    finally:
        distnet.backend.set_num_threads(1)
    assert seen == [distnet.backend.UFUNC_BUFFER] * 2
