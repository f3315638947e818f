"""A batch larger than the model's block runs as blocks (forward and backward of each while it is in the cache):
the same update, statistics and evaluation as the whole batch at once."""
import numpy as np
import pytest

import distnet
from distnet import backend, layers, timeline
from distnet.training.step import block_samples


def _cnn():
    distnet.utils.set_random_seed(3)
    m = distnet.Sequential([layers.Input((9, 9, 2)), layers.Conv2D(6, 3, activation="relu"), layers.MaxPooling2D(),
                            layers.Flatten(), layers.Dense(12, activation="relu"),
                            layers.Dense(4, activation="softmax")])
    m.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def _two_inputs():
    distnet.utils.set_random_seed(5)
    a, b = distnet.Input((6,), name="a"), distnet.Input((3,), name="b")
    h = layers.Concatenate()([layers.Dense(8, activation="tanh")(a), b])
    m = distnet.Model([a, b], layers.Dense(1)(h))
    m.compile(loss="mse", optimizer="sgd", metrics=["mae"])
    return m


def _data(n=50):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 9, 9, 2)).astype(np.float32)
    y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]
    w = rng.uniform(0.2, 2.0, n).astype(np.float32)
    return x, y, w


def _with_budget(monkeypatch, budget, build):
    monkeypatch.setenv("DISTNET_BLOCK_BYTES", str(budget))
    return build()


def test_block_samples_is_a_power_of_two_of_the_widest_output_and_0_for_batch_coupled_models(monkeypatch):
    m = _cnn()            # widest output: the convolution's 7*7*6 floats = 1176 bytes per sample
    monkeypatch.delenv("DISTNET_BLOCK_BYTES", raising=False)
    assert block_samples(m) == 1024                                  # 2 MiB / 1176 = 1783
    monkeypatch.setenv("DISTNET_BLOCK_BYTES", str(1176 * 5))
    assert block_samples(m) == 4
    monkeypatch.setenv("DISTNET_BLOCK_BYTES", "0")
    assert block_samples(m) == 0
    monkeypatch.setenv("DISTNET_BLOCK_BYTES", "1")
    assert block_samples(m) == 1
    monkeypatch.setenv("DISTNET_BLOCK_BYTES", str(1176 * 4))
    backend.set_num_threads(2)          # a slice per thread, each with twice the budget
    try:
        assert block_samples(m) == 16
    finally:
        backend.set_num_threads(1)
    for coupled in (layers.BatchNormalization(), layers.Dropout(0.5, noise_shape=(1, 3))):
        bn = distnet.Sequential([layers.Input((4,)), layers.Dense(3), coupled, layers.Dense(1)])
        assert block_samples(bn) == 0, type(coupled).__name__
    wrapped = distnet.Sequential([layers.Input((5, 4)), layers.TimeDistributed(layers.Dense(3)),
                                  layers.Dropout(0.5, noise_shape=(None, 1, 3))])
    assert block_samples(wrapped) > 0


@pytest.mark.parametrize("weighted", [False, True])
def test_fit_in_blocks_matches_the_whole_batch(monkeypatch, weighted):
    x, y, w = _data()
    sw = w if weighted else None
    whole = _with_budget(monkeypatch, 0, _cnn)
    h_whole = whole.fit(x, y, sample_weight=sw, batch_size=20, epochs=3, verbose=0, shuffle=False)
    blocked = _with_budget(monkeypatch, 1176 * 4, _cnn)      # blocks of 4 samples: 20 = 5 blocks, 10 = 3
    h_blocked = blocked.fit(x, y, sample_weight=sw, batch_size=20, epochs=3, verbose=0, shuffle=False)
    assert (whole.step.block, blocked.step.block) == (0, 4)
    for a, b in zip(whole.get_weights(), blocked.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(h_blocked.history[key], h_whole.history[key], rtol=1e-5)
    for m, budget in ((whole, 0), (blocked, 1176 * 4)):       # evaluate in blocks too
        monkeypatch.setenv("DISTNET_BLOCK_BYTES", str(budget))
        m.evaluation = m.evaluate(x, y, sample_weight=sw, batch_size=50, verbose=0, return_dict=True)
        assert m.step.block == (budget and 4)
    assert blocked.evaluation.keys() == whole.evaluation.keys()
    for key, value in whole.evaluation.items():
        np.testing.assert_allclose(blocked.evaluation[key], value, rtol=1e-5)


def test_a_two_input_graph_in_blocks_matches_the_whole_batch(monkeypatch):
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 3)).astype(np.float32)
    y = (xa[:, :1] * xb[:, :1]).astype(np.float32)
    whole = _with_budget(monkeypatch, 0, _two_inputs)
    whole.fit([xa, xb], y, batch_size=40, epochs=2, verbose=0)
    blocked = _with_budget(monkeypatch, 44 * 3, _two_inputs)      # widest: 11 floats -> blocks of 2 samples
    blocked.fit([xa, xb], y, batch_size=40, epochs=2, verbose=0)
    for a, b in zip(whole.get_weights(), blocked.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_the_timeline_sums_a_steps_blocks(monkeypatch):
    x, y, _ = _data(40)
    m = _with_budget(monkeypatch, 1176 * 4, _cnn)
    m.timeline = timeline.Timeline()
    m.fit(x, y, batch_size=20, epochs=1, verbose=0)
    events = m.timeline.events
    assert sum(p == "forward" for p, _, _ in events) == 10             # 2 steps of 5 blocks
    forward = m.timeline.durations("forward")
    assert len(forward) == 2 == len(m.timeline.durations("optimizer"))
    per_block = [e - s for p, s, e in events if p == "forward"]
    np.testing.assert_allclose(sum(forward), sum(per_block))
    assert all(e["name"] != "step" for e in m.timeline.trace_events(0))


def test_dropout_in_blocks_draws_the_masks_of_the_whole_batch(monkeypatch):
    def build():
        distnet.utils.set_random_seed(7)
        m = distnet.Sequential([layers.Input((9, 9, 2)), layers.Conv2D(6, 3, activation="relu"), layers.Flatten(),
                                layers.Dropout(0.4, seed=3), layers.Dense(4, activation="softmax")])
        m.compile(loss="categorical_crossentropy", optimizer="adam")
        return m
    x, y, _ = _data(40)
    whole = _with_budget(monkeypatch, 0, build)
    whole.fit(x, y, batch_size=20, epochs=2, verbose=0, shuffle=False)
    blocked = _with_budget(monkeypatch, 1176 * 4, build)
    blocked.fit(x, y, batch_size=20, epochs=2, verbose=0, shuffle=False)
    assert blocked.step.block == 4
    for a, b in zip(whole.get_weights(), blocked.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
