"""Functional graphs in Keras 3 files, without Keras (h5py only): a residual block with an extra conv on one
branch, a two-input model (Concatenate), a two-output model (per-output compile settings), Bidirectional LSTM/GRU
with TimeDistributed. distnet -> .keras -> distnet keeps predictions and training state, the weights file numbers
its groups in Keras's layer order (by depth, not distnet's run order), the config has Keras's layout, a graph's
summary is Keras's text, and what distnet cannot build is refused by name. test_keras_graph_files_oracle.py
checks both directions against Keras itself."""
import json
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

import distnet  # noqa: E402
from distnet.models import keras_config  # noqa: E402


# -- the graphs, built the same way with keras or distnet (lib, L) ---------------------------------------------
def residual_branch(lib, L):
    """The shortcut has one conv, the branch two (with BN): Keras's order puts branch_a before the shortcut.
    (No bias before a BatchNormalization: its gradient is zero up to rounding, which Adam would amplify.)"""
    inp = lib.Input((8, 8, 3), name="img")
    h = L.BatchNormalization(name="stem_bn")(L.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inp))
    short = L.Conv2D(6, 1, name="short")(h)
    b = L.Conv2D(5, 3, padding="same", use_bias=False, name="branch_a")(h)
    b = L.Activation("relu", name="branch_relu")(L.BatchNormalization(name="branch_bn")(b))
    b = L.Conv2D(6, 3, padding="same", name="branch_b")(b)
    h = L.Activation("relu", name="merge_relu")(L.Add(name="add")([short, b]))
    out = L.Dense(3, activation="softmax", name="head")(L.GlobalAveragePooling2D(name="pool")(h))
    return lib.Model(inp, out, name="residual")


def two_inputs(lib, L):
    a, b = lib.Input((5,), name="a"), lib.Input((3,), name="b")
    h = L.Concatenate(name="cat")([L.Dense(6, activation="tanh", name="a_hidden")(a), b])
    h = L.Dense(4, activation="relu", name="joint")(h)
    return lib.Model([a, b], L.Dense(2, activation="softmax", name="out")(h), name="two_inputs")


def two_outputs(lib, L):
    x = lib.Input((6,), name="x")
    h = L.Dense(8, activation="relu", name="trunk")(x)
    cls = L.Dense(3, activation="softmax", name="cls")(h)
    reg = L.Dense(1, name="reg")(L.Dense(4, activation="tanh", name="reg_hidden")(h))
    return lib.Model(x, [cls, reg], name="two_outputs")


def recurrent(lib, L):
    seq = lib.Input((7, 3), name="seq")
    h = L.Bidirectional(L.LSTM(5, return_sequences=True), name="bilstm")(seq)
    h = L.TimeDistributed(L.Dense(4, activation="relu"), name="td")(h)
    h = L.Bidirectional(L.GRU(3), merge_mode="sum", name="bigru")(h)
    return lib.Model(seq, L.Dense(2, activation="softmax", name="out")(h), name="recurrent")


BUILDERS = [residual_branch, two_inputs, two_outputs, recurrent]
# Keras 3.15's `model.layers` for each graph (printed by Keras itself): the order of the weight groups
KERAS_ORDER = {
    "residual_branch": ["img", "stem", "stem_bn", "branch_a", "branch_bn", "branch_relu", "short", "branch_b", "add",
                        "merge_relu", "pool", "head"],
    "two_inputs": ["a", "a_hidden", "b", "cat", "joint", "out"],
    "two_outputs": ["x", "trunk", "reg_hidden", "cls", "reg"],
    "recurrent": ["seq", "bilstm", "td", "bigru", "out"],
}


def data(build, n=12, seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.normal(size=(n,) + shape).astype(np.float32)
    if build is residual_branch:
        return normal(8, 8, 3), rng.integers(0, 3, n)
    if build is two_inputs:
        return [normal(5), normal(3)], rng.integers(0, 2, n)
    if build is two_outputs:
        return normal(6), [rng.integers(0, 3, n), normal(1)]
    return normal(7, 3), rng.integers(0, 2, n)


def compile_args(build, opt):
    if build is two_outputs:          # per-output losses, metrics and loss weights
        return dict(optimizer=opt, loss=["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], ["mae"]],
                    loss_weights=[1.0, 0.5])
    return dict(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def same_layer_weights(a, b, atol=1e-5):
    """Layer by layer, by name (a graph's get_weights() follows each library's own layer order)."""
    for layer in a.layers:
        ours, theirs = layer.get_weights(), b.get_layer(layer.name).get_weights()
        assert len(ours) == len(theirs), layer.name
        for u, v in zip(ours, theirs):
            np.testing.assert_allclose(u, v, atol=atol, rtol=1e-4, err_msg=layer.name)


def close(a, b, atol=1e-5):
    for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=atol)


# -- without Keras ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build", BUILDERS)
def test_round_trip_keeps_graph_predictions_and_training_state(tmp_path, build):
    x, y = data(build)
    d = build(distnet, distnet.layers)
    d.compile(**compile_args(build, distnet.optimizers.Adam(0.01)))
    d.fit(x, y, batch_size=6, epochs=1, verbose=0)
    d.save(tmp_path / "d.keras")
    e = distnet.models.load_model(tmp_path / "d.keras")
    assert type(e) is distnet.Model and [la.name for la in e.order] == [la.name for la in d.order]
    close(e.predict(x, verbose=0), d.predict(x, verbose=0), atol=0)
    assert e.optimizer.iterations == d.optimizer.iterations == 2
    d.train_on_batch(x, y)
    e.train_on_batch(x, y)
    same_layer_weights(e, d, atol=1e-6)


@pytest.mark.parametrize("build", BUILDERS)
def test_weight_groups_are_numbered_in_keras_layer_order(tmp_path, build):
    d = build(distnet, distnet.layers)
    assert [la.name for la, _ in d.layers_by_depth()] == KERAS_ORDER[build.__name__]
    d.save_weights(tmp_path / "d.weights.h5")
    counts = {}
    with h5py.File(tmp_path / "d.weights.h5") as f:
        for name in KERAS_ORDER[build.__name__]:
            layer = next(la for la, _ in d.layers_by_depth() if la.name == name)
            base = keras_config.keras_snake_case(type(layer).__name__)
            k = counts[base] = counts.get(base, -1) + 1
            group = f[f"layers/{base}{'_' + str(k) if k else ''}"]
            paths = [f"{path}/{i}" for path, ws in keras_config.layer_variables(layer) for i in range(len(ws))]
            assert [group[p].shape for p in paths] == [w.shape for w in layer.get_weights()], name
            if isinstance(layer, distnet.layers.Bidirectional):
                assert set(group) == {"forward_layer", "backward_layer"}
                np.testing.assert_array_equal(group["backward_layer/cell/vars/1"],
                                              layer.backward_layer.get_weights()[1])


def written_config(path):
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read("config.json"))


def test_written_config_has_keras_functional_layout(tmp_path):
    d = two_inputs(distnet, distnet.layers)
    d.save(tmp_path / "d.keras")
    config = written_config(tmp_path / "d.keras")
    assert (config["module"], config["class_name"]) == ("keras.src.models.functional", "Functional")
    assert config["build_config"] == {"input_shape": None}
    inner = config["config"]
    assert [spec["name"] for spec in inner["layers"]] == KERAS_ORDER["two_inputs"]
    assert inner["input_layers"] == [["a", 0, 0], ["b", 0, 0]] and inner["output_layers"] == ["out", 0, 0]
    cat = next(spec for spec in inner["layers"] if spec["name"] == "cat")
    assert cat["build_config"] == {"input_shape": [[None, 6], [None, 3]]}
    (node,) = cat["inbound_nodes"]
    assert [t["config"]["keras_history"] for t in node["args"][0]] == [["a_hidden", 0, 0], ["b", 0, 0]]
    assert node["args"][0][1] == {"class_name": "__keras_tensor__",
                                  "config": {"shape": [None, 3], "dtype": "float32", "keras_history": ["b", 0, 0]}}
    r = recurrent(distnet, distnet.layers)
    r.save(tmp_path / "r.keras")
    bilstm = next(spec for spec in written_config(tmp_path / "r.keras")["config"]["layers"]
                  if spec["name"] == "bilstm")["config"]
    assert bilstm["layer"]["class_name"] == bilstm["backward_layer"]["class_name"] == "LSTM"
    assert bilstm["backward_layer"]["config"]["go_backwards"] is True
    assert bilstm["layer"]["build_config"] == {"input_shape": [None, 7, 3]}


def test_one_input_in_a_list_stays_a_list(tmp_path):
    x = distnet.Input((4,), name="x")
    d = distnet.Model([x], [distnet.layers.Dense(2, name="d")(x)])
    d.save(tmp_path / "d.keras")
    inner = written_config(tmp_path / "d.keras")["config"]
    assert inner["input_layers"] == [["x", 0, 0]] and inner["output_layers"] == [["d", 0, 0]]
    e = distnet.models.load_model(tmp_path / "d.keras")
    assert e.multiple_inputs and e.multiple_outputs


# Keras 3.15.1's summaries (line_length=90) of two graphs: one with a Connected-to column, one a chain of layers
KERAS_SUMMARIES = {"two_inputs": """\
Model: "two_inputs"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━┓
┃ Layer (type)             ┃ Output Shape         ┃      Param # ┃ Connected to          ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━┩
│ a (InputLayer)           │ (None, 5)            │            0 │ -                     │
├──────────────────────────┼──────────────────────┼──────────────┼───────────────────────┤
│ a_hidden (Dense)         │ (None, 6)            │           36 │ a[0][0]               │
├──────────────────────────┼──────────────────────┼──────────────┼───────────────────────┤
│ b (InputLayer)           │ (None, 3)            │            0 │ -                     │
├──────────────────────────┼──────────────────────┼──────────────┼───────────────────────┤
│ cat (Concatenate)        │ (None, 9)            │            0 │ a_hidden[0][0],       │
│                          │                      │              │ b[0][0]               │
├──────────────────────────┼──────────────────────┼──────────────┼───────────────────────┤
│ joint (Dense)            │ (None, 4)            │           40 │ cat[0][0]             │
├──────────────────────────┼──────────────────────┼──────────────┼───────────────────────┤
│ out (Dense)              │ (None, 2)            │           10 │ joint[0][0]           │
└──────────────────────────┴──────────────────────┴──────────────┴───────────────────────┘
 Total params: 86 (344.00 B)
 Trainable params: 86 (344.00 B)
 Non-trainable params: 0 (0.00 B)
""", "recurrent": """\
Model: "recurrent"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                          ┃ Output Shape                 ┃         Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ seq (InputLayer)                      │ (None, 7, 3)                 │               0 │
├───────────────────────────────────────┼──────────────────────────────┼─────────────────┤
│ bilstm (Bidirectional)                │ (None, 7, 10)                │             360 │
├───────────────────────────────────────┼──────────────────────────────┼─────────────────┤
│ td (TimeDistributed)                  │ (None, 7, 4)                 │              44 │
├───────────────────────────────────────┼──────────────────────────────┼─────────────────┤
│ bigru (Bidirectional)                 │ (None, 3)                    │             162 │
├───────────────────────────────────────┼──────────────────────────────┼─────────────────┤
│ out (Dense)                           │ (None, 2)                    │               8 │
└───────────────────────────────────────┴──────────────────────────────┴─────────────────┘
 Total params: 574 (2.24 KB)
 Trainable params: 574 (2.24 KB)
 Non-trainable params: 0 (0.00 B)
"""}


@pytest.mark.parametrize("build", [two_inputs, recurrent])
def test_graph_summary_text(monkeypatch, build):
    monkeypatch.setenv("COLUMNS", "120")
    out = []
    build(distnet, distnet.layers).summary(print_fn=out.append, line_length=90)
    assert out == [KERAS_SUMMARIES[build.__name__]]


# -- what distnet cannot build, named ------------------------------------------------------------------------------
def keras_tensor(name, shape, index=0, node=0):
    return {"class_name": "__keras_tensor__",
            "config": {"shape": [None] + shape, "dtype": "float32", "keras_history": [name, node, index]}}


def layer_spec(class_name, name, config=None, *nodes):
    return {"module": "keras.layers", "class_name": class_name, "name": name, "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": "float32", **(config or {})},
            "inbound_nodes": [{"args": [arg], "kwargs": {}} for arg in nodes]}


def graph(*specs, inputs=("x", 0, 0), outputs=("d", 0, 0)):
    x = {"module": "keras.layers", "class_name": "InputLayer", "name": "x", "registered_name": None,
         "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False, "name": "x",
                    "optional": False}, "inbound_nodes": []}
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "g", "trainable": True, "layers": [x, *specs], "input_layers": list(inputs),
                       "output_layers": list(outputs)}}


DENSE = {"units": 4, "activation": "linear", "use_bias": True, "kernel_initializer": "glorot_uniform",
         "bias_initializer": "zeros"}


def test_a_hand_written_graph_loads_with_layers_listed_out_of_order():
    config = graph(layer_spec("Dense", "d", DENSE, keras_tensor("h", [4])),
                   layer_spec("Dense", "h", DENSE, keras_tensor("x", [4])))
    model = keras_config.model_from_keras(config)
    assert [la.name for la in model.order] == ["x", "h", "d"]


def test_tf_keras_2_nodes_are_read():
    config = graph(layer_spec("Dense", "h", DENSE), layer_spec("Dense", "d", DENSE))
    config["config"]["layers"][1]["inbound_nodes"] = [[["x", 0, 0, {}]]]
    config["config"]["layers"][2]["inbound_nodes"] = [[["h", 0, 0, {}]]]
    assert [la.name for la in keras_config.model_from_keras(config).order] == ["x", "h", "d"]


@pytest.mark.parametrize("case, message", [
    ("shared", r"Keras layer 'd' \(Dense\) is called 2 times in the graph \(a shared layer\)"),
    ("nested", r"Keras layer 'inner' \(Functional\) is a nested model"),
    ("unsupported", r"Keras layer 'unit' \(UnitNormalization\) is not supported by distnet"),
    ("dict", r"outputs are a dict \['y'\]"),
    ("kwargs", r"Keras layer 'd' \(Dense\) is called with arguments distnet layers do not take: .*\['mask'\]"),
    ("unknown", r"layers \['d'\] read unknown layers \['nowhere'\]"),
])
def test_unbuildable_graphs_are_named(case, message):
    x = keras_tensor("x", [4])
    if case == "shared":
        spec = layer_spec("Dense", "d", DENSE, x, keras_tensor("x", [4]))
    elif case == "nested":
        spec = layer_spec("Functional", "inner", {"layers": []}, x)
    elif case == "unsupported":
        spec = layer_spec("UnitNormalization", "unit", {"axis": -1}, x)
    elif case == "unknown":
        spec = layer_spec("Dense", "d", DENSE, keras_tensor("nowhere", [4]))
    else:
        spec = layer_spec("Dense", "d", DENSE, x)
    config = graph(spec)
    if case == "dict":
        config["config"]["output_layers"] = {"y": ["d", 0, 0]}
    if case == "kwargs":
        spec["inbound_nodes"][0]["kwargs"] = {"mask": x, "training": None}
    with pytest.raises(ValueError, match=message):
        keras_config.model_from_keras(config)


def test_a_second_call_of_a_layer_is_named_as_shared():
    config = graph(layer_spec("Dense", "d", DENSE, keras_tensor("x", [4], node=1)))
    with pytest.raises(ValueError, match=r"reads call 1 of layer 'x': a layer called more than once"):
        keras_config.model_from_keras(config)
