"""Functional graphs in Keras 3 files against Keras itself (torch backend; skipped when keras is not installed):
files written by either side load in the other with the same predictions and optimizer state (the next update
agrees), weights files and per-output compile settings travel both ways, Keras's `model.layers` is the order
distnet numbers weight groups in, a graph's summary is Keras's text, and Keras files distnet cannot build are
refused by name. The graphs and the checks without Keras: test_keras_graph_files.py."""
import json
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")
pytest.importorskip("h5py")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import distnet  # noqa: E402
from tests.models.test_keras_graph_files import (  # noqa: E402
    BUILDERS,
    KERAS_ORDER,
    close,
    compile_args,
    data,
    residual_branch,
    same_layer_weights,
    two_inputs,
    two_outputs,
    written_config,
)


@pytest.mark.parametrize("build", BUILDERS)
def test_keras_order_is_keras_model_layers(build):
    assert [la.name for la in build(keras, keras.layers).layers] == KERAS_ORDER[build.__name__]


@pytest.mark.parametrize("writer", ["keras", "distnet"])
@pytest.mark.parametrize("build", BUILDERS)
def test_graph_file_of_one_loads_in_the_other_and_training_continues_alike(tmp_path, build, writer):
    x, y = data(build)
    source, reader = (keras, distnet) if writer == "keras" else (distnet, keras)
    a = build(source, source.layers)
    a.compile(**compile_args(build, source.optimizers.Adam(0.01)))
    a.fit(x, y, batch_size=6, epochs=1, verbose=0)
    a.save(tmp_path / "a.keras")
    b = reader.models.load_model(tmp_path / "a.keras")
    close(b.predict(x, verbose=0), a.predict(x, verbose=0))
    assert int(a.optimizer.iterations) == int(b.optimizer.iterations) == 2
    k, d = (a, b) if writer == "keras" else (b, a)
    assert type(d) is distnet.Model and [la.name for la, _ in d.layers_by_depth()] == [la.name for la in k.layers]
    k.train_on_batch(x, y)
    d.train_on_batch(x, y)
    same_layer_weights(d, k)


@pytest.mark.parametrize("build", BUILDERS)
def test_model_from_a_keras_get_config(build):
    k = build(keras, keras.layers)
    d = distnet.Model.from_config(k.get_config())
    assert [(la.name, type(la).__name__) for la, _ in d.layers_by_depth()] == \
        [(la.name, type(la).__name__) for la in k.layers]
    assert sorted(w.shape for w in d.get_weights()) == sorted(tuple(w.shape) for w in k.get_weights())


@pytest.mark.parametrize("build", [residual_branch, two_outputs])
def test_graph_weights_files_both_ways(tmp_path, build):
    x, _ = data(build)
    k, d = build(keras, keras.layers), build(distnet, distnet.layers)
    k.save_weights(tmp_path / "k.weights.h5")
    d.load_weights(tmp_path / "k.weights.h5")
    close(d.predict(x, verbose=0), k.predict(x, verbose=0))
    d.set_weights([w * 0.5 for w in d.get_weights()])
    d.save_weights(tmp_path / "d.weights.h5")
    k.load_weights(tmp_path / "d.weights.h5")
    close(k.predict(x, verbose=0), d.predict(x, verbose=0))


def test_per_output_compile_dicts_travel_both_ways(tmp_path):
    x, (y1, y2) = data(two_outputs)
    k = two_outputs(keras, keras.layers)
    k.compile(optimizer="adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
              metrics={"cls": ["accuracy"], "reg": ["mae"]}, loss_weights={"cls": 1.0, "reg": 0.5})
    k.fit(x, {"cls": y1, "reg": y2}, batch_size=6, verbose=0)
    k.save(tmp_path / "k.keras")
    d = distnet.models.load_model(tmp_path / "k.keras")
    assert d.compile_settings.loss_weights == {"cls": 1.0, "reg": 0.5}
    assert d.compile_settings.metrics == {"cls": ["accuracy"], "reg": ["mae"]}
    ours = d.evaluate(x, [y1, y2], verbose=0, return_dict=True)
    theirs = k.evaluate(x, [y1, y2], verbose=0, return_dict=True)
    for key in ("loss", "cls_accuracy", "reg_mae"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5)
    d.save(tmp_path / "d.keras")
    assert written_config(tmp_path / "d.keras")["compile_config"]["metrics"] == {"cls": ["accuracy"], "reg": ["mae"]}
    k2 = keras.models.load_model(tmp_path / "d.keras")
    np.testing.assert_allclose(k2.evaluate(x, [y1, y2], verbose=0), k.evaluate(x, [y1, y2], verbose=0), rtol=1e-5)


@pytest.mark.parametrize("case", ["shared", "unsupported", "nested"])
def test_keras_files_distnet_cannot_build_are_named(tmp_path, case):
    kl = keras.layers
    x = keras.Input((4,), name="x")
    if case == "shared":
        dense = kl.Dense(4, name="tied")
        out, message = dense(dense(x)), r"Keras layer 'tied' \(Dense\) is called 2 times"
    elif case == "unsupported":
        out, message = kl.UnitNormalization(name="unit")(x), r"Keras layer 'unit' \(UnitNormalization\) is not"
    else:
        inner = keras.Sequential([keras.Input((4,)), kl.Dense(2)], name="inner")
        out, message = inner(x), r"Keras layer 'inner' \(Sequential\) is a nested model"
    keras.Model(x, out).save(tmp_path / "k.keras")
    with pytest.raises(ValueError, match=message):
        distnet.models.load_model(tmp_path / "k.keras")


def test_integer_ids_input_and_wrappers_in_a_sequential_both_ways(tmp_path):
    """An Input of int32 ids (for an Embedding); Bidirectional and TimeDistributed in a Sequential too."""
    kl = keras.layers
    ids = keras.Input((6,), dtype="int32", name="ids")
    h = kl.Flatten(name="flat")(kl.Embedding(20, 4, name="emb")(ids))
    k = keras.Model(ids, kl.Dense(2, name="d")(h))
    s = keras.Sequential([keras.Input((7, 3)), kl.Bidirectional(kl.GRU(4, return_sequences=True), merge_mode="ave"),
                          kl.TimeDistributed(kl.Dense(2)), kl.Flatten(), kl.Dense(1)])
    rng = np.random.default_rng(0)
    for model, x in ((k, rng.integers(0, 20, (5, 6))), (s, rng.normal(size=(5, 7, 3)).astype(np.float32))):
        model.save(tmp_path / "k.keras")
        d = distnet.models.load_model(tmp_path / "k.keras")
        close(d.predict(x, verbose=0), model.predict(x, verbose=0))
        d.save(tmp_path / "d.keras")
        back = keras.models.load_model(tmp_path / "d.keras")
        close(back.predict(x, verbose=0), model.predict(x, verbose=0))
        assert back.inputs[0].dtype == model.inputs[0].dtype and type(back) is type(model)
    assert d.layers[0].forward_layer.units == 4 and d.layers[0].merge_mode == "ave"


def lstm_states(lib, L):
    """A chain (Keras prints it without Connected-to) whose LSTM returns its states."""
    seq = lib.Input((5, 3), name="seq")
    out, h, _ = L.LSTM(4, return_state=True, name="lstm")(seq)
    return lib.Model(seq, [L.Dense(2, name="d")(out), h], name="states")


def bidirectional_states(lib, L):
    """Layers with several outputs read by index: Bidirectional with return_state, and with merge_mode=None."""
    seq = lib.Input((6, 3), name="seq")
    outs = L.Bidirectional(L.LSTM(4, return_state=True), name="bi")(seq)
    forward, backward = L.Bidirectional(L.GRU(2, return_sequences=True), merge_mode=None, name="bi2")(seq)
    h = L.Concatenate(name="cat")([outs[0], outs[1], outs[4]])
    return lib.Model(seq, [L.Dense(2, name="d")(h), L.Add(name="add")([forward, backward])], name="states")


def test_tensors_picked_from_several_outputs_both_ways(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 6, 3)).astype(np.float32)
    k = bidirectional_states(keras, keras.layers)
    k.save(tmp_path / "k.keras")
    d = distnet.models.load_model(tmp_path / "k.keras")
    close(d.predict(x, verbose=0), k.predict(x, verbose=0))
    d.set_weights([w + 0.1 for w in d.get_weights()])
    d.save(tmp_path / "d.keras")
    close(keras.models.load_model(tmp_path / "d.keras").predict(x, verbose=0), d.predict(x, verbose=0))


@pytest.mark.parametrize("columns", [80, 140])
@pytest.mark.parametrize("build", BUILDERS + [lstm_states, bidirectional_states])
def test_graph_summary_is_keras_text(monkeypatch, columns, build):
    monkeypatch.setenv("COLUMNS", str(columns))
    texts = []
    for lib in (keras, distnet):
        m, out = build(lib, lib.layers), []
        for kw in ({}, {"line_length": 90}):
            m.summary(print_fn=out.append, **kw)
        texts.append(out)
    assert texts[1] == texts[0]


def test_keras_reads_distnet_build_config_of_a_merge_layer(tmp_path):
    """Keras builds a layer from its build_config before the graph calls it: a merge layer's is a list."""
    d = two_inputs(distnet, distnet.layers)
    d.save(tmp_path / "d.keras")
    with zipfile.ZipFile(tmp_path / "d.keras") as zf:
        layer = keras.saving.deserialize_keras_object(
            next(s for s in json.loads(zf.read("config.json"))["config"]["layers"] if s["name"] == "cat"))
    assert layer.built
