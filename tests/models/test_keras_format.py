"""Keras 3 model files without Keras: files laid out exactly as Keras 3.15 writes them (written here with h5py and
zipfile) load with the right weights, predictions and optimizer state; distnet's own files have that layout;
unsupported content fails with errors that name it. tests/models/test_keras_files_oracle.py checks both
directions against Keras itself."""
import io
import json
import os
import sys
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from distnet import layers, optimizers  # noqa: E402
from distnet.checkpoint import CheckpointError  # noqa: E402
from distnet.models import Sequential, load_model  # noqa: E402

rng = np.random.default_rng(0)
DTYPE = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}


def _init(name, **config):
    return {"module": "keras.initializers", "class_name": name, "config": config, "registered_name": None}


def _dense(name, units, activation, in_dim, **extra):
    config = {"name": name, "trainable": True, "dtype": DTYPE, "units": units, "activation": activation,
              "use_bias": True, "kernel_initializer": _init("GlorotUniform", seed=None, input_axes=None,
                                                            output_axes=None),
              "bias_initializer": _init("Zeros"), "kernel_regularizer": None, "bias_regularizer": None,
              "kernel_constraint": None, "bias_constraint": None, "quantization_config": None, **extra}
    return {"module": "keras.layers", "class_name": "Dense", "config": config, "registered_name": None,
            "build_config": {"input_shape": [None, in_dim]}}


def keras_mlp_config(layer_specs=None, compile_config=True):
    """config.json of keras.Sequential([keras.Input((4,)), Dense(6, relu), Dense(3, softmax)]) compiled with Adam,
    as Keras 3.15 writes it."""
    specs = layer_specs or [_dense("dense", 6, "relu", 4), _dense("dense_1", 3, "softmax", 6)]
    inp = {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
           "config": {"batch_shape": [None, 4], "dtype": "float32", "sparse": False, "ragged": False,
                      "name": "input_layer", "optional": False}}
    adam = {"module": "keras.src.backend.torch.optimizers.torch_adam", "class_name": "Adam", "registered_name": "Adam",
            "config": {"name": "adam", "learning_rate": 0.01, "weight_decay": None, "clipnorm": None,
                       "global_clipnorm": None, "clipvalue": None, "use_ema": False, "ema_momentum": 0.99,
                       "ema_overwrite_frequency": None, "loss_scale_factor": None,
                       "gradient_accumulation_steps": None, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                       "amsgrad": False}}
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "mlp", "trainable": True, "dtype": DTYPE, "layers": [inp] + specs,
                       "build_input_shape": [None, 4]},
            "build_config": {"input_shape": [None, 4]},
            "compile_config": {"optimizer": adam, "loss": "categorical_crossentropy", "loss_weights": None,
                               "metrics": ["accuracy"], "weighted_metrics": None, "run_eagerly": False,
                               "steps_per_execution": 1, "jit_compile": False} if compile_config else None}


def write_keras_file(path, config, layer_vars, optimizer_vars=None):
    """A .keras archive in Keras 3's layout: layer_vars {group: [arrays]}, optimizer_vars [arrays] or None."""
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_group("vars").attrs["name"] = config["config"]["name"]
        for group, arrays in layer_vars.items():
            g = f.create_group(f"layers/{group}/vars")
            g.attrs["name"] = group
            for i, a in enumerate(arrays):
                g[str(i)] = a
        if optimizer_vars is not None:
            g = f.create_group("optimizer/vars")
            g.attrs["name"] = "adam"
            for i, a in enumerate(optimizer_vars):
                g[str(i)] = a
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-11-29@00:27:20"}))
        zf.writestr("config.json", json.dumps(config))
        zf.writestr("model.weights.h5", buf.getvalue())


def mlp_arrays():
    return [rng.normal(size=s).astype(np.float32) for s in [(4, 6), (6,), (6, 3), (3,)]]


def reference_mlp(w, x):
    h = np.maximum(x @ w[0] + w[1], 0)
    z = h @ w[2] + w[3]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_reads_a_keras_written_file_weights_compile_settings_and_optimizer_state(tmp_path):
    w = mlp_arrays()
    m, v = [a * 0.1 for a in w], [np.abs(a) for a in w]
    opt_vars = [np.array(7, np.int32), np.array(0.005, np.float32)] + [s for pair in zip(m, v) for s in pair]
    write_keras_file(tmp_path / "m.keras", keras_mlp_config(), {"dense": w[:2], "dense_1": w[2:]}, opt_vars)
    model = load_model(tmp_path / "m.keras")
    assert model.name == "mlp" and [la.name for la in model.layers] == ["dense", "dense_1"]
    x = rng.normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference_mlp(w, x), rtol=1e-5, atol=1e-6)
    opt = model.optimizer
    assert isinstance(opt, optimizers.Adam) and opt.iterations == 7 and opt.learning_rate == pytest.approx(0.005)
    assert type(model.loss).__name__ == "CategoricalCrossentropy"
    assert model.compile_config()["metrics"] == ["accuracy"]
    np.testing.assert_array_equal(opt.slots["m"][:24], m[0].ravel())       # dense kernel's momentum
    np.testing.assert_array_equal(opt.slots["v"][24:30], v[1])             # dense bias's velocity
    assert not load_model(tmp_path / "m.keras", compile=False).compiled


def test_reads_tf_keras_2_files(tmp_path):
    """tf.keras 2.13+ wrote .keras files with _layer_checkpoint_dependencies/ for layers/ and batch_input_shape."""
    w = mlp_arrays()
    config = keras_mlp_config(compile_config=False)
    inp = config["config"]["layers"][0]["config"]
    inp["batch_input_shape"] = inp.pop("batch_shape")
    write_keras_file(tmp_path / "m.keras", config, {"dense": w[:2], "dense_1": w[2:]})
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    buf = io.BytesIO()
    with h5py.File(io.BytesIO(files["model.weights.h5"]), "r") as old, h5py.File(buf, "w") as new:
        old.copy("layers", new, name="_layer_checkpoint_dependencies")
    files["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as zf:
        for n, data in files.items():
            zf.writestr(n, data)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(load_model(tmp_path / "m.keras").predict(x, verbose=0), reference_mlp(w, x),
                               rtol=1e-5, atol=1e-6)


def mlp(name="mlp", opt=None):
    model = Sequential([layers.Input((4,)), layers.Dense(6, activation="relu", name="hidden"),
                        layers.Dense(3, activation="softmax", name="out")], name=name)
    model.compile(optimizer=opt or optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def test_written_files_have_keras_layout(tmp_path):
    model = mlp()
    x, y = rng.normal(size=(8, 4)).astype(np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 8)]
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "m.keras").st_mode & 0o777 == 0o666 & ~umask     # not mkstemp's 0600
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        assert zf.namelist() == ["metadata.json", "config.json", "model.weights.h5"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        config = json.loads(zf.read("config.json"))
        weights = zf.read("model.weights.h5")
    assert config["class_name"] == "Sequential" and config["module"] == "keras"
    specs = config["config"]["layers"]
    assert [s["class_name"] for s in specs] == ["InputLayer", "Dense", "Dense"]
    assert specs[0]["config"]["batch_shape"] == [None, 4]
    assert specs[1]["config"]["kernel_initializer"]["class_name"] == "GlorotUniform"
    assert specs[1]["build_config"] == {"input_shape": [None, 4]}
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    with h5py.File(io.BytesIO(weights), "r") as f:
        groups = []
        f.visit(groups.append)
        assert sorted(groups) == sorted(["vars", "layers", "layers/dense", "layers/dense/vars", "layers/dense/vars/0",
                                         "layers/dense/vars/1", "layers/dense_1", "layers/dense_1/vars",
                                         "layers/dense_1/vars/0", "layers/dense_1/vars/1", "optimizer",
                                         "optimizer/vars"] + [f"optimizer/vars/{i}" for i in range(10)])
        assert f["vars"].attrs["name"] == "mlp" and f["layers/dense_1/vars"].attrs["name"] == "out"
        np.testing.assert_array_equal(f["layers/dense/vars/0"][()], model.layers[0].kernel.value)
        assert f["optimizer/vars/0"][()] == 1 and f["optimizer/vars/1"][()] == np.float32(0.01)
        np.testing.assert_array_equal(f["optimizer/vars/3"][()], model.optimizer.slots["v"][:24].reshape(4, 6))


def test_round_trip_keeps_predictions_and_training_state(tmp_path):
    model = mlp(opt=optimizers.RMSprop(0.01, momentum=0.9, centered=True))
    x, y = rng.normal(size=(16, 4)).astype(np.float32), np.eye(3, dtype=np.float32)[rng.integers(0, 3, 16)]
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    model.train_on_batch(x, y)
    back.train_on_batch(x, y)
    for a, b in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)          # same slots: the next update agrees


def test_weights_files(tmp_path):
    model, other = mlp(), mlp("other")
    model.save_weights(tmp_path / "w.weights.h5")
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    model.save(tmp_path / "m.keras")
    third = mlp("third")
    third.load_weights(tmp_path / "m.keras")                    # Keras reads weights from a .keras file too
    np.testing.assert_array_equal(third.get_weights()[2], model.get_weights()[2])
    wider = Sequential([layers.Input((4,)), layers.Dense(7), layers.Dense(3)])
    with pytest.raises(CheckpointError, match=r"weight '.*kernel' has shape \(4, 7\), but the file holds shape"):
        wider.load_weights(tmp_path / "w.weights.h5")
    with pytest.raises(ValueError, match="legacy Keras 2 HDF5"):
        model.save_weights(tmp_path / "w.h5")
    with pytest.raises(ValueError, match="use save_weights"):
        model.save(tmp_path / "w.weights.h5")


def test_npz_stays_the_default(tmp_path):
    model = mlp()
    path = model.save(tmp_path / "m.npz")
    assert np.load(path, allow_pickle=False)["__meta__"] is not None
    assert type(load_model(path)).__name__ == "Sequential"


def test_unsupported_content_is_named(tmp_path):
    lstm = {"module": "keras.layers", "class_name": "LSTMish", "config": {"name": "my_lstm", "units": 3}}
    write_keras_file(tmp_path / "a.keras", keras_mlp_config([lstm]), {})
    with pytest.raises(ValueError, match=r"Keras layer 'my_lstm' \(LSTMish\) is not supported by distnet"):
        load_model(tmp_path / "a.keras")
    dense = _dense("wide", 6, "relu", 4, kernel_constraint={"class_name": "MaxNorm", "config": {}})
    write_keras_file(tmp_path / "b.keras", keras_mlp_config([dense]), {})
    with pytest.raises(ValueError, match=r"'wide' \(Dense\) has kernel_constraint=.*no weight constraints"):
        load_model(tmp_path / "b.keras")
    dense = _dense("wide", 6, "relu", 4, lora_rank=4)
    write_keras_file(tmp_path / "c.keras", keras_mlp_config([dense]), {})
    with pytest.raises(ValueError, match=r"'wide' \(Dense\) has lora_rank=4, which distnet's Dense does not support"):
        load_model(tmp_path / "c.keras")
    config = keras_mlp_config()
    config["class_name"] = "MyModel"
    write_keras_file(tmp_path / "d.keras", config, {})
    with pytest.raises(ValueError, match="model of class 'MyModel'"):
        load_model(tmp_path / "d.keras")
    (tmp_path / "e.keras").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a zip file"):
        load_model(tmp_path / "e.keras")
    write_keras_file(tmp_path / "f.keras", keras_mlp_config(), {"dense": mlp_arrays()[:1]})
    with pytest.raises(CheckpointError, match=r"'dense' \(Dense\) has 2 weights at 'layers/dense/vars', but the file "
                                               r"holds 1"):
        load_model(tmp_path / "f.keras")


def test_missing_h5py_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r"pip install 'distnet\[keras-files\]'"):
        mlp().save(tmp_path / "m.keras")
