"""A few steps of every optimizer against the update rule written out by hand (Keras 3's formulas)."""
import math

import numpy as np
import pytest

from distnet import optimizers

G = [np.array([0.5, -1.0, 2.0]), np.array([0.1, 0.3, -0.2]), np.array([-0.4, 0.0, 1.0])]
W0 = np.array([1.0, -2.0, 0.5])


def run(opt, steps=3):
    w = W0.copy()
    opt.build(w)
    for g in G[:steps]:
        opt.apply(w, g.copy())
    return w


def test_sgd_plain():
    np.testing.assert_allclose(run(optimizers.SGD(0.1)), W0 - 0.1 * sum(G))


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum(nesterov):
    w, m = W0.copy(), np.zeros(3)
    for g in G:
        m = 0.9 * m - 0.1 * g
        w = w + (0.9 * m - 0.1 * g if nesterov else m)
    np.testing.assert_allclose(run(optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov)), w)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam(amsgrad):
    w, m, v, vh = W0.copy(), np.zeros(3), np.zeros(3), np.zeros(3)
    for t, g in enumerate(G, 1):
        m = m + (g - m) * 0.1
        v = v + (g * g - v) * 0.001
        vh = np.maximum(vh, v)
        alpha = 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        w = w - alpha * m / (np.sqrt(vh if amsgrad else v) + 1e-7)
    np.testing.assert_allclose(run(optimizers.Adam(0.01, amsgrad=amsgrad)), w, rtol=1e-12)


def test_adamw_decays_before_adam_step():
    w, m, v = W0.copy(), np.zeros(3), np.zeros(3)
    for t, g in enumerate(G, 1):
        w = w - w * 0.004 * 0.01
        m = m + (g - m) * 0.1
        v = v + (g * g - v) * 0.001
        w = w - 0.01 * math.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(run(optimizers.AdamW(0.01)), w, rtol=1e-12)


@pytest.mark.parametrize("centered,momentum", [(False, 0.0), (True, 0.0), (False, 0.5)])
def test_rmsprop(centered, momentum):
    w, vel, avg, mom = W0.copy(), np.zeros(3), np.zeros(3), np.zeros(3)
    for g in G:
        vel = 0.9 * vel + 0.1 * g * g
        avg = 0.9 * avg + 0.1 * g
        den = (vel - avg * avg if centered else vel) + 1e-7
        inc = 0.01 * g / np.sqrt(den)
        mom = momentum * mom + inc
        w = w - (mom if momentum else inc)
    np.testing.assert_allclose(run(optimizers.RMSprop(0.01, centered=centered, momentum=momentum)), w, rtol=1e-12)


def test_adagrad():
    w, acc = W0.copy(), np.full(3, 0.1)
    for g in G:
        acc = acc + g * g
        w = w - 0.01 * g / np.sqrt(acc + 1e-7)
    np.testing.assert_allclose(run(optimizers.Adagrad(0.01)), w, rtol=1e-12)


def test_keras3_defaults():
    assert optimizers.SGD().learning_rate == 0.01 and optimizers.SGD().momentum == 0.0
    a = optimizers.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon) == (0.001, 0.9, 0.999, 1e-7)
    assert optimizers.AdamW().weight_decay == 0.004
    r = optimizers.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    ag = optimizers.Adagrad()
    assert (ag.learning_rate, ag.initial_accumulator_value, ag.epsilon) == (0.001, 0.1, 1e-7)
    assert isinstance(optimizers.get("adam"), optimizers.Adam)


def test_clipping():
    g = np.array([3.0, 4.0, 0.0])
    w = run_with(optimizers.SGD(1.0, clipvalue=1.0), g)
    np.testing.assert_allclose(w, W0 - [1.0, 1.0, 0.0])
    w = run_with(optimizers.SGD(1.0, global_clipnorm=1.0), g)
    np.testing.assert_allclose(w, W0 - g / 5)
    opt = optimizers.SGD(1.0, clipnorm=1.0)
    w = W0.copy()
    opt.build(w, segments=[(0, 1), (1, 2)])          # two variables: [3] and [4, 0]
    opt.apply(w, g.copy())
    np.testing.assert_allclose(w, W0 - [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="Only one of clipnorm"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)


def run_with(opt, g):
    w = W0.copy()
    opt.build(w)
    opt.apply(w, g.copy())
    return w


def test_schedules():
    s = optimizers.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert math.isclose(s(10), 0.05) and math.isclose(s(5), 0.1 * 0.5 ** 0.5)
    assert math.isclose(optimizers.ExponentialDecay(0.1, 10, 0.5, staircase=True)(15), 0.05)
    c = optimizers.CosineDecay(0.1, decay_steps=100, alpha=0.1)
    assert math.isclose(c(0), 0.1) and math.isclose(c(100), 0.01) and math.isclose(c(50), 0.055)
    assert math.isclose(optimizers.CosineDecay(0.0, 100, warmup_target=0.2, warmup_steps=10)(5), 0.1)
    opt = optimizers.SGD(s)
    w = W0.copy()
    opt.build(w)
    for _ in range(10):
        opt.apply(w, np.zeros(3))
    assert math.isclose(opt.current_learning_rate(), 0.05)
    # as in Keras 3: learning_rate is the schedule's current value; the schedule is not replaced by a float
    assert math.isclose(opt.learning_rate, 0.05) and opt.schedule is s
    with pytest.raises(TypeError, match="created with a `LearningRateSchedule`.*not settable.*received 0.3"):
        opt.learning_rate = 0.3
    assert optimizers.SGD(0.1).schedule is None


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown optimizer 'adamm'; valid names: adagrad, adam"):
        optimizers.get("adamm")
