"""model.summary() prints what Keras 3 prints: the same table, columns, wrapping and totals. The expected texts
below are Keras 3.15.1's (torch backend) for the same models; with keras installed, more models and line lengths
are compared with Keras directly."""
import os

import numpy as np
import pytest

import distnet

KERAS_DEFAULT = """\
Model: "pima"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                         ┃ Output Shape                ┃         Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ dense (Dense)                        │ (None, 10)                  │              90 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ a_rather_long_output_layer_name_tha… │ (None, 1)                   │              11 │
│ (Dense)                              │                             │                 │
└──────────────────────────────────────┴─────────────────────────────┴─────────────────┘
 Total params: 101 (404.00 B)
 Trainable params: 101 (404.00 B)
 Non-trainable params: 0 (0.00 B)
"""

KERAS_AFTER_ONE_STEP_60 = """\
Model: "pima"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━┓
┃ Layer (type)             ┃ Output Shape      ┃   Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━┩
│ dense (Dense)            │ (None, 10)        │        90 │
├──────────────────────────┼───────────────────┼───────────┤
│ a_rather_long_output_la… │ (None, 1)         │        11 │
│ (Dense)                  │                   │           │
└──────────────────────────┴───────────────────┴───────────┘
 Total params: 204 (816.00 B)
 Trainable params: 101 (404.00 B)
 Non-trainable params: 0 (0.00 B)
 Optimizer params: 103 (412.00 B)
"""


def pima(keras):
    kl = keras.layers
    m = keras.Sequential([keras.Input((8,)), kl.Dense(10, activation="relu", name="dense"),
                          kl.Dense(1, activation="sigmoid", name="a_rather_long_output_layer_name_that_wraps")],
                         name="pima")
    m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="binary_crossentropy")
    return m


def texts(keras, build, calls):
    """The summaries of build(keras) (layers named: automatic names depend on what a process made before), with
    each of calls: kwargs of summary(), or "fit" for one training step."""
    m, out = build(keras), []
    for kw in calls:
        if kw == "fit":
            m.fit(np.zeros((4,) + tuple(m.input_shape[1:]), np.float32), np.zeros((4,) + m.output_shape[1:]),
                  verbose=0)
        else:
            m.summary(print_fn=out.append, **kw)
    return out


def test_same_text_as_keras(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")           # Keras narrows the table to the terminal's width - 4
    default, short = texts(distnet, pima, [{}, "fit", {"line_length": 60}])
    assert default == KERAS_DEFAULT                # before the first step Keras has no optimizer variables
    assert short == KERAS_AFTER_ONE_STEP_60        # iterations, learning_rate and one momentum per weight


def cnn(keras):
    kl = keras.layers
    m = keras.Sequential([keras.Input((12, 12, 3)), kl.Conv2D(8, 3, activation="relu", name="first_convolution"),
                          kl.BatchNormalization(name="batch_normalization"), kl.MaxPooling2D(name="pool"),
                          kl.Flatten(name="flatten"), kl.Dropout(0.5, name="dropout"),
                          kl.Dense(10, activation="softmax", name="dense")], name="a_cnn")
    m.compile(optimizer=keras.optimizers.Adam(learning_rate=keras.optimizers.schedules.ExponentialDecay(
        0.01, 10, 0.9)), loss="categorical_crossentropy")
    return m


@pytest.mark.parametrize("columns", [60, 100, 200])
def test_same_text_as_keras_itself(monkeypatch, columns):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    pytest.importorskip("torch")
    monkeypatch.setenv("COLUMNS", str(columns))
    calls = [{}, {"line_length": 50}, {"line_length": 75}, "fit", {}, {"line_length": 120}]
    for build in (pima, cnn):
        assert texts(distnet, build, calls) == texts(keras, build, calls)
