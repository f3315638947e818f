"""Optional oracle for the functional API: a residual block and a two-input model built the same way in Keras 3
(torch backend) and distnet give the same outputs, loss and three optimizer updates. Skipped without keras."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import distnet  # noqa: E402
from distnet import optimizers  # noqa: E402


def residual(lib, L):
    inputs = lib.Input((8, 8, 3))
    h = L.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    h = L.Activation("relu")(L.BatchNormalization()(h))
    h2 = L.BatchNormalization()(L.Conv2D(4, 3, padding="same", use_bias=False)(h))
    h = L.Activation("relu")(L.Add()([h, h2]))
    outputs = L.Dense(3, activation="softmax")(L.GlobalAveragePooling2D()(h))
    return lib.Model(inputs, outputs)


def two_inputs(lib, L):
    a, b = lib.Input((5,)), lib.Input((3,))
    h = L.Dense(6, activation="tanh")(L.Concatenate()([a, b]))
    h = L.Multiply()([h, L.Dense(6, activation="sigmoid")(a)])
    outputs = L.Dense(2, activation="softmax")(L.Average()([h, L.Dense(6)(b)]))
    return lib.Model([a, b], outputs)


@pytest.mark.parametrize("build", [residual, two_inputs])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_functional_models_match_keras(build, opt):
    k, d = build(keras, keras.layers), build(distnet, distnet.layers)
    assert [w.shape for w in k.get_weights()] == [w.shape for w in d.get_weights()]
    d.set_weights(k.get_weights())
    rng = np.random.default_rng(0)
    if build is residual:
        x = rng.normal(size=(12, 8, 8, 3)).astype(np.float32)
    else:
        x = [rng.normal(size=(12, 5)).astype(np.float32), rng.normal(size=(12, 3)).astype(np.float32)]
    y = rng.integers(0, 2 if build is two_inputs else 3, 12)
    np.testing.assert_allclose(d.predict(x, verbose=0), k.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    k.compile(loss="sparse_categorical_crossentropy",
              optimizer=keras.optimizers.SGD(0.1) if opt == "sgd" else keras.optimizers.Adam(0.01))
    d.compile(loss="sparse_categorical_crossentropy",
              optimizer=optimizers.SGD(0.1) if opt == "sgd" else optimizers.Adam(0.01))
    np.testing.assert_allclose(d.evaluate(x, y, verbose=0), k.evaluate(x, y, verbose=0), rtol=1e-4)
    for _ in range(3):
        k.train_on_batch(x, y)
        d.train_on_batch(x, y)
    for a, b in zip(d.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
