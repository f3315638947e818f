import numpy as np
import pytest

from distnet import losses
from distnet.activations import sigmoid, softmax
from tests.conftest import assert_grad_close

rng = np.random.default_rng(1)


def _probs(shape):
    return softmax(rng.normal(size=shape))


CASES = [
    ("mse", lambda: rng.normal(size=(5, 3)), lambda: rng.normal(size=(5, 3))),
    ("mae", lambda: rng.normal(size=(5, 3)), lambda: rng.normal(size=(5, 3))),
    ("huber", lambda: rng.normal(size=(5, 3)) * 2, lambda: rng.normal(size=(5, 3))),
    ("binary_crossentropy", lambda: rng.integers(0, 2, (6, 1)).astype(float),
     lambda: sigmoid(rng.normal(size=(6, 1)))),
    ("categorical_crossentropy", lambda: np.eye(4)[rng.integers(0, 4, 5)], lambda: _probs((5, 4))),
    ("sparse_categorical_crossentropy", lambda: rng.integers(0, 4, 5), lambda: _probs((5, 4))),
]


@pytest.mark.parametrize("name,make_y,make_p", CASES, ids=[c[0] for c in CASES])
def test_loss_gradient_matches_finite_differences(float64, name, make_y, make_p):
    loss = losses.get(name)
    p = make_p()
    y = loss.prepare_targets(make_y(), p.shape[1:])
    assert loss.per_sample(y, p).shape == (p.shape[0],)
    assert_grad_close(loss.grad(y, p), p, lambda: float(loss.per_sample(y, p).sum()), rtol=1e-5)


@pytest.mark.parametrize("cls,y", [
    (losses.BinaryCrossentropy, np.array([[1.0], [0.0], [1.0]])),
    (losses.CategoricalCrossentropy, np.eye(3)),
    (losses.SparseCategoricalCrossentropy, np.array([0, 2, 1])),
])
def test_from_logits_gradient_and_agreement_with_probability_path(float64, cls, y):
    z = rng.normal(size=(3, 1 if cls is losses.BinaryCrossentropy else 3))
    logit_loss = cls(from_logits=True)
    yy = logit_loss.prepare_targets(y, z.shape[1:])
    losses_z, grad_z = logit_loss.from_logits_pair(yy, z)
    assert_grad_close(grad_z, z, lambda: float(logit_loss.from_logits_pair(yy, z)[0].sum()))
    p = sigmoid(z) if cls is losses.BinaryCrossentropy else softmax(z)
    np.testing.assert_allclose(cls().per_sample(yy, p), losses_z, rtol=1e-6)


def test_saturated_logits_give_finite_loss_and_gradient():
    z = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    loss, g = losses.CategoricalCrossentropy().from_logits_pair(np.array([[0.0, 1.0, 0.0]], np.float32), z)
    assert np.isfinite(loss).all() and np.isfinite(g).all() and loss[0] > 1e3
    loss, g = losses.BinaryCrossentropy().from_logits_pair(np.array([[0.0]], np.float32),
                                                           np.array([[1e4]], np.float32))
    assert np.isfinite(loss).all() and np.isfinite(g).all()
    p = np.array([[1.0, 0.0, 0.0]], np.float32)     # saturated probabilities on the probability path
    assert np.isfinite(losses.CategoricalCrossentropy().per_sample(np.array([[0, 1.0, 0]], np.float32), p)).all()


def test_keras_values():
    # keras.losses.BinaryCrossentropy()([[0,1],[0,0]], [[0.6,0.4],[0.4,0.6]]) == 0.815 (Keras docs example)
    bce = losses.BinaryCrossentropy()
    assert np.isclose(bce(np.array([[0, 1], [0, 0]], float), np.array([[0.6, 0.4], [0.4, 0.6]])), 0.815, atol=1e-3)
    # keras.losses.CategoricalCrossentropy()([[0,1,0],[0,0,1]], [[.05,.95,0],[.1,.8,.1]]) == 1.177
    cce = losses.CategoricalCrossentropy()
    assert np.isclose(cce(np.array([[0, 1, 0], [0, 0, 1]], float), np.array([[.05, .95, 0], [.1, .8, .1]])), 1.177,
                      atol=1e-3)
    assert np.isclose(losses.get("huber")(np.array([[0, 1], [0, 0]], float), np.array([[0.6, 0.4], [0.4, 0.6]])),
                      0.155, atol=1e-3)


def test_label_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"labels in \[0, 10\).*received labels from 0 to 12"):
        losses.get("sparse_categorical_crossentropy").prepare_targets(np.array([0, 12]), (10,))
    with pytest.raises(ValueError, match="one-hot labels of shape \\(None, 10\\).*sparse_categorical_crossentropy"):
        losses.get("categorical_crossentropy").prepare_targets(np.array([1, 2]), (10,))
    with pytest.raises(ValueError, match="labels of shape \\(None, 3\\).*received labels of shape \\(2, 4\\)"):
        losses.get("mse").prepare_targets(np.zeros((2, 4)), (3,))
    with pytest.raises(ValueError, match="Unknown loss 'crossentropy'; valid names"):
        losses.get("crossentropy")


@pytest.mark.parametrize("name,make_y,make_p", CASES, ids=[c[0] for c in CASES])
def test_loss_and_metrics_of_an_empty_batch(name, make_y, make_p):
    from distnet import metrics
    loss = losses.get(name)
    p = make_p()[:0]
    y = loss.prepare_targets(make_y()[:0], p.shape[1:])
    assert loss.per_sample(y, p).shape == (0,) and loss.grad(y, p).shape == p.shape
    acc = metrics.get("accuracy", loss, p.shape[1:], y.ndim == 1)
    assert acc.values(y, p).shape == (0,)
