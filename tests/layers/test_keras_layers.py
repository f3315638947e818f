"""Optional oracle, per layer: the same weights and inputs give the same outputs in Keras 3 (torch backend) and
distnet. Skipped when keras (and torch) are not installed; they are never runtime dependencies of distnet."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")   # keras on NumPy 2

from distnet import layers  # noqa: E402

kl = keras.layers
RNN_FLAGS = [{}, {"return_sequences": True}, {"go_backwards": True}, {"return_state": True},
             {"return_sequences": True, "return_state": True, "go_backwards": True}]


def rnn_cases():
    for name in ("SimpleRNN", "LSTM", "GRU"):
        for flags in RNN_FLAGS:
            yield f"{name}-{'+'.join(flags) or 'default'}", name, (5,), flags, (7, 3)
    yield "GRU-reset_before", "GRU", (4,), {"reset_after": False, "return_sequences": True}, (6, 3)
    yield "LSTM-nobias-relu", "LSTM", (4,), {"use_bias": False, "activation": "relu"}, (6, 3)
    yield "SimpleRNN-sigmoid", "SimpleRNN", (4,), {"activation": "sigmoid", "return_sequences": True}, (6, 3)


CASES = list(rnn_cases()) + [
    ("Conv1D-valid", "Conv1D", (4, 3), {}, (9, 2)),
    ("Conv1D-same-stride", "Conv1D", (4, 4), {"padding": "same", "strides": 2}, (9, 2)),
    ("Conv1D-causal-dilated", "Conv1D", (3, 3), {"padding": "causal", "dilation_rate": 2, "activation": "relu"},
     (10, 2)),
    ("Conv1D-same-dilated", "Conv1D", (3, 2), {"padding": "same", "dilation_rate": 3}, (10, 2)),
    ("Conv2D-dilated-same", "Conv2D", (3, 3), {"padding": "same", "dilation_rate": 2}, (7, 8, 2)),
    ("MaxPooling1D", "MaxPooling1D", (), {}, (9, 3)),
    ("MaxPooling1D-same", "MaxPooling1D", (3,), {"strides": 2, "padding": "same"}, (8, 3)),
    ("AveragePooling1D", "AveragePooling1D", (3,), {}, (9, 3)),
    ("AveragePooling1D-same", "AveragePooling1D", (2,), {"strides": 1, "padding": "same"}, (5, 3)),
    ("GlobalMaxPooling1D", "GlobalMaxPooling1D", (), {}, (6, 3)),
    ("GlobalMaxPooling2D-keepdims", "GlobalMaxPooling2D", (), {"keepdims": True}, (4, 5, 3)),
    ("GlobalAveragePooling1D", "GlobalAveragePooling1D", (), {}, (6, 3)),
    ("ZeroPadding1D", "ZeroPadding1D", ((1, 2),), {}, (4, 3)),
    ("ZeroPadding2D", "ZeroPadding2D", (((1, 0), (2, 3)),), {}, (4, 5, 3)),
    ("LayerNormalization", "LayerNormalization", (), {}, (6, 8)),
    ("LayerNormalization-2axes", "LayerNormalization", (), {"axis": [1, 2], "epsilon": 1e-5}, (4, 5)),
    ("TimeDistributed-Dense", None, (), {}, (5, 4)),
]


def random_weights(layer, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()]


def compare(k_layer, d_layer, x, seed=0):
    k_out = k_layer(x)                                              # builds the Keras layer
    d_layer.build_for([a.shape[1:] for a in x] if isinstance(x, list) else x.shape[1:])
    k_shapes, d_shapes = [w.shape for w in k_layer.get_weights()], [w.shape for w in d_layer.get_weights()]
    assert d_shapes == k_shapes                                     # Keras's layouts, in Keras's order
    weights = random_weights(k_layer, seed)
    k_layer.set_weights(weights)
    d_layer.set_weights(weights)
    k_out = k_layer(x)
    k_out = [keras.ops.convert_to_numpy(o) for o in (k_out if isinstance(k_out, (list, tuple)) else [k_out])]
    d_out = d_layer(x)
    d_out = d_out if d_layer.multi_output else [d_out]
    assert len(d_out) == len(k_out)
    for d, k in zip(d_out, k_out):
        assert d.shape == k.shape
        np.testing.assert_allclose(d, k, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case_id,name,args,kwargs,shape", CASES, ids=[c[0] for c in CASES])
def test_same_outputs_as_keras(case_id, name, args, kwargs, shape):
    x = np.random.default_rng(1).normal(size=(4,) + shape).astype(np.float32)
    if name is None:
        compare(kl.TimeDistributed(kl.Dense(3, activation="tanh")),
                layers.TimeDistributed(layers.Dense(3, activation="tanh")), x)
        return
    compare(getattr(kl, name)(*args, **kwargs), getattr(layers, name)(*args, **kwargs), x)


@pytest.mark.parametrize("mode", ["concat", "sum", "mul", "ave", None], ids=str)
@pytest.mark.parametrize("inner,flags", [("LSTM", {"return_sequences": True}), ("GRU", {}),
                                         ("LSTM", {"return_state": True}),
                                         ("SimpleRNN", {"return_sequences": True, "return_state": True})],
                         ids=["lstm-seq", "gru", "lstm-state", "rnn-seq-state"])
def test_bidirectional_same_outputs_as_keras(inner, flags, mode):
    x = np.random.default_rng(2).normal(size=(3, 6, 4)).astype(np.float32)
    compare(kl.Bidirectional(getattr(kl, inner)(5, **flags), merge_mode=mode),
            layers.Bidirectional(getattr(layers, inner)(5, **flags), merge_mode=mode), x)


def test_embedding_same_outputs_as_keras():
    ids = np.random.default_rng(3).integers(0, 20, (4, 7))
    compare(kl.Embedding(20, 6), layers.Embedding(20, 6), ids)


@pytest.mark.parametrize("name,kwargs", [("Add", {}), ("Subtract", {}), ("Multiply", {}), ("Average", {}),
                                         ("Maximum", {}), ("Minimum", {}), ("Concatenate", {"axis": 1})])
def test_merge_same_outputs_as_keras(name, kwargs):
    rng = np.random.default_rng(4)
    xs = [rng.normal(size=(3, 4, 5)).astype(np.float32) for _ in range(2 if name == "Subtract" else 3)]
    compare(getattr(kl, name)(**kwargs), getattr(layers, name)(**kwargs), xs)


@pytest.mark.parametrize("opt", ["sgd", "adam"])
@pytest.mark.parametrize("inner", ["SimpleRNN", "LSTM", "GRU", "Bidirectional"])
def test_recurrent_model_same_loss_and_three_updates_as_keras(inner, opt):
    """Sequential([Input, <rnn>, Dense softmax]): predictions, loss and three optimizer steps agree."""
    from distnet import optimizers
    from distnet.models import Sequential

    def rnn(lib):
        if inner == "Bidirectional":
            return lib.Bidirectional(lib.LSTM(6, return_sequences=True), merge_mode="concat")
        return getattr(lib, inner)(6)
    tail = [kl.GlobalAveragePooling1D()] if inner == "Bidirectional" else []
    d_tail = [layers.GlobalAveragePooling1D()] if inner == "Bidirectional" else []
    k = keras.Sequential([keras.Input((7, 3)), rnn(kl), *tail, kl.Dense(4, activation="softmax")])
    d = Sequential([layers.Input((7, 3)), rnn(layers), *d_tail, layers.Dense(4, activation="softmax")])
    assert [w.shape for w in k.get_weights()] == [w.shape for w in d.get_weights()]
    d.set_weights(k.get_weights())
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(16, 7, 3)).astype(np.float32), rng.integers(0, 4, 16)
    np.testing.assert_allclose(d.predict(x, verbose=0), k.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    k.compile(loss="sparse_categorical_crossentropy",
              optimizer={"sgd": keras.optimizers.SGD(0.5), "adam": keras.optimizers.Adam(0.01)}[opt])
    d.compile(loss="sparse_categorical_crossentropy",
              optimizer={"sgd": optimizers.SGD(0.5), "adam": optimizers.Adam(0.01)}[opt])
    np.testing.assert_allclose(d.evaluate(x, y, verbose=0), k.evaluate(x, y, verbose=0), rtol=1e-4)
    for _ in range(3):
        k.train_on_batch(x, y)
        d.train_on_batch(x, y)
    for a, b in zip(d.get_weights(), k.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
