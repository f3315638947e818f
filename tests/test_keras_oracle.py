"""Optional oracle: the same model, weights and batch in Keras 3 (torch backend) and distnet agree.
Skipped when keras (and torch) are not installed; they are never runtime dependencies of distnet."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")   # keras on NumPy 2

from distnet import layers, optimizers  # noqa: E402
from distnet.models import Sequential  # noqa: E402


def pair(kind):
    kl = keras.layers
    if kind == "mlp":
        k = keras.Sequential([keras.Input((8,)), kl.Dense(10, activation="relu"), kl.Dense(10, activation="relu"),
                              kl.Dense(1, activation="sigmoid")])
        d = Sequential([layers.Dense(10, input_dim=8, activation="relu"), layers.Dense(10, activation="relu"),
                        layers.Dense(1, activation="sigmoid")])
        return k, d, "binary_crossentropy"
    k = keras.Sequential([keras.Input((10, 10, 2)), kl.Conv2D(4, 3, activation="relu", padding="same"),
                          kl.MaxPooling2D(), kl.Conv2D(6, 3, strides=2, activation="tanh"), kl.Flatten(),
                          kl.Dense(5, activation="softmax")])
    d = Sequential([layers.Conv2D(4, 3, activation="relu", padding="same", input_shape=(10, 10, 2)),
                    layers.MaxPooling2D(), layers.Conv2D(6, 3, strides=2, activation="tanh"), layers.Flatten(),
                    layers.Dense(5, activation="softmax")])
    return k, d, "categorical_crossentropy"


def data(kind, n=16):
    rng = np.random.default_rng(0)
    if kind == "mlp":
        return rng.normal(size=(n, 8)).astype(np.float32), rng.integers(0, 2, (n, 1)).astype(np.float32)
    return rng.normal(size=(n, 10, 10, 2)).astype(np.float32), np.eye(5, dtype=np.float32)[rng.integers(0, 5, n)]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("opt", ["sgd", "adam", "rmsprop"])
def test_same_predictions_loss_and_update_as_keras(kind, opt):
    k, d, loss = pair(kind)
    assert [w.shape for w in k.get_weights()] == [w.shape for w in d.get_weights()]    # Keras layout and order
    d.set_weights(k.get_weights())
    x, y = data(kind)
    np.testing.assert_allclose(d.predict(x, verbose=0), k.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    k.compile(loss=loss, optimizer={"sgd": keras.optimizers.SGD(0.1), "adam": keras.optimizers.Adam(0.01),
                                    "rmsprop": keras.optimizers.RMSprop(0.01)}[opt])
    d.compile(loss=loss, optimizer={"sgd": optimizers.SGD(0.1), "adam": optimizers.Adam(0.01),
                                    "rmsprop": optimizers.RMSprop(0.01)}[opt])
    np.testing.assert_allclose(d.evaluate(x, y, verbose=0), k.evaluate(x, y, verbose=0), rtol=1e-4)
    for _ in range(3):
        k.train_on_batch(x, y)
        d.train_on_batch(x, y)
    for a, b in zip(d.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
