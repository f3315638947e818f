"""The Trainer's Keras arguments: each is implemented with Keras's meaning or refused with a clear error."""
import numpy as np
import pytest

from distnet import layers
from distnet.models import Sequential


def data(n=40, seed=0):
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 4)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.float32)


def model(**kw):
    m = Sequential([layers.Input((4,)), layers.Dense(3, activation="relu"), layers.Dense(1, activation="sigmoid")],
                   **{k: kw.pop(k) for k in ("trainable",) if k in kw})
    m.compile(**{"loss": "binary_crossentropy", "optimizer": "sgd", **kw})
    return m


def test_backend_knobs_are_accepted_and_steps_per_execution_is_refused():
    model(run_eagerly=True, jit_compile=False)
    with pytest.raises(ValueError, match="steps_per_execution=4 is not supported"):
        model(steps_per_execution=4)


def test_loss_weights_scale_the_loss_of_a_one_output_model():
    x, y = data()
    a, b = model(), model(loss_weights=[2.0])
    b.set_weights(a.get_weights())
    assert np.isclose(b.evaluate(x, y, verbose=0), 2 * a.evaluate(x, y, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match="loss_weights .* received 'x'"):
        model(loss_weights="x")


def test_weighted_metrics_use_sample_weight_and_plain_metrics_do_not():
    x, y = data()
    w = np.where(np.arange(40) < 20, 3.0, 0.5)
    m = model(metrics=["mae"], weighted_metrics=["mae"])
    logs = m.evaluate(x, y, sample_weight=w, verbose=0, return_dict=True)
    err = np.abs(m.predict(x, verbose=0)[:, 0] - y)
    assert np.isclose(logs["mae"], err.mean(), rtol=1e-5)
    assert np.isclose(logs["weighted_mae"], np.dot(err, w) / w.sum(), rtol=1e-5)


def test_metrics_may_be_one_string():
    x, y = data()
    h = model(metrics="accuracy").fit(x, y, epochs=1, verbose=0)
    assert "accuracy" in h.history


def test_evaluate_and_predict_honour_steps():
    x, y = data()
    m = model()
    assert m.predict(x, batch_size=8, steps=2, verbose=0).shape == (16, 1)
    first = m.evaluate(x[:16], y[:16], batch_size=8, verbose=0)
    assert np.isclose(m.evaluate(x, y, batch_size=8, steps=2, verbose=0), first, rtol=1e-6)
    with pytest.raises(ValueError, match="steps must be a positive int or None, received 0"):
        m.evaluate(x, y, steps=0, verbose=0)


def test_a_frozen_sequential_trains_nothing():
    x, y = data()
    m = model(trainable=False)
    before = m.get_weights()
    m.fit(x, y, epochs=2, verbose=0)
    assert m.trainable_weights == [] and all(np.array_equal(a, b) for a, b in zip(before, m.get_weights()))


@pytest.mark.parametrize("kwargs,message", [
    ({"validation_freq": 0}, "validation_freq to be a positive int, received 0"),
    ({"steps_per_epoch": -1}, "steps_per_epoch to be a positive int or None, received -1"),
    ({"batch_size": True}, "batch_size to be a positive int, received True"),
    ({"epochs": 1.5}, "epochs to be an int >= 0, received 1.5"),
])
def test_fit_argument_errors(kwargs, message):
    x, y = data()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model().fit(x, y, verbose=0, validation_split=0.2, **kwargs)


def test_bad_targets_and_weights_are_named():
    x, y = data()
    m = model()
    with pytest.raises(TypeError, match=r"y holds a non-number \(None\) at flat position 3"):
        m.fit(x, np.array([0, 1, 0, None] + [0] * 36, dtype=object), verbose=0)
    with pytest.raises(TypeError, match="y holds strings"):
        m.fit(x, np.array(["cat", "dog"] * 20), verbose=0)
    with pytest.raises(ValueError, match="sample_weight must be finite and >= 0; sample 5 has nan"):
        m.fit(x, y, sample_weight=np.where(np.arange(40) == 5, np.nan, 1.0), verbose=0)
    big = x.astype(np.float64)
    big[7, 1] = 1e39
    with pytest.raises(ValueError, match=r"beyond the range of float32 \(sample 7: 1e\+39\)"):
        m.fit(big, y, verbose=0, shuffle=False)


def test_train_test_split_without_shuffle_returns_views(tmp_path):
    from distnet.data.datasets import train_test_split
    path = tmp_path / "x.npy"
    np.save(path, np.arange(100, dtype=np.float32).reshape(50, 2))
    x = np.load(path, mmap_mode="r")
    (xtr, _), (xte, _) = train_test_split(x, np.arange(50), test_size=0.2, shuffle=False)
    assert np.shares_memory(xtr, x) and np.shares_memory(xte, x) and len(xte) == 10
