"""The step's named statistics slots and the per-step penalty, as fit() uses them."""
import numpy as np

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
