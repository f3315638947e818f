"""BatchNormalization(synchronized=True): global-batch statistics through the sum the trainer provides."""
import numpy as np

from distnet import layers


def test_synchronized_equals_plain_on_one_worker_and_sums_across_workers(float64):
    x = np.random.default_rng(0).normal(size=(6, 3, 3, 2)) * 2 + 1
    g = np.random.default_rng(1).normal(size=x.shape)
    plain, synced = layers.BatchNormalization(), layers.BatchNormalization(synchronized=True)
    for bn in (plain, synced):
        bn.build_for(x.shape[1:])
    outs = [bn.call(x, training=True).copy() for bn in (plain, synced)]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-10, atol=1e-10)
    grads = [bn.backward(g.copy()) for bn in (plain, synced)]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(synced.gamma.grad, plain.gamma.grad, rtol=1e-10)

    assert layers.BatchNormalization(synchronized=True).get_config()["synchronized"] is True


def test_a_worker_with_no_samples_still_takes_part_in_the_sums():
    bn = layers.BatchNormalization(synchronized=True)
    bn.build_for((2,))
    calls = []
    bn.sum_across_workers = lambda a: calls.append(a.copy()) or a.__setitem__(-1, 4) if a.size == 5 else \
        calls.append(a.copy())
    out = bn.call(np.zeros((0, 2), np.float32), training=True)
    bn.backward(np.zeros((0, 2), np.float32))
    assert out.shape == (0, 2) and len(calls) == 2       # forward and backward sums, even with an empty shard
