"""`import distnet as keras`: Keras 3 scripts (tests/keras_scripts/, written for Keras) run with only their import
lines changed, and the names Keras users reach for exist with Keras's spelling."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

import distnet as keras_like

os.environ.setdefault("KERAS_BACKEND", "torch")     # for the checks against keras itself, when it is installed
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "keras_scripts")
PIMA = os.path.join(ROOT, "distnet", "data", "bundled", "pima", "pima-indians-diabetes.data.csv")
IMPORTS = {"import keras\n": "import distnet as keras\n", "from keras import layers\n": "from distnet import layers\n"}


def as_distnet(name, tmp_path, shorter=()):
    """The script with only its Keras imports changed (and `shorter`: (old, new) edits that shorten the run)."""
    text = open(os.path.join(SCRIPTS, name)).read()
    for old, new in list(IMPORTS.items()) + list(shorter):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


def run(path, *args, timeout=600, env=None):
    result = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, cwd=path.parent, env={**os.environ, "PYTHONPATH": ROOT, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_keras_io_mnist_convnet(tmp_path):
    """keras-io's "Simple MNIST convnet", one epoch instead of 15: validation_split=0.1 holds out every class."""
    out = run(as_distnet("mnist_convnet.py", tmp_path, [("epochs = 15\n", "epochs = 1\n")]))
    assert "x_train shape: (5000, 28, 28, 1)" in out and 'Model: "sequential' in out
    assert "Total params: 34,826 (136.04 KB)" in out                      # Keras's numbers for this model
    val_acc = float(re.search(r"val_accuracy: ([\d.]+)", out).group(1))
    test_acc = float(re.search(r"Test accuracy: ([\d.]+)", out).group(1))
    assert val_acc > 0.5 and test_acc > 0.6, out


def test_tabular_script_with_callbacks_and_keras_files(tmp_path):
    pytest.importorskip("h5py")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = run(as_distnet("pima_callbacks.py", tmp_path), PIMA, out_dir)
    assert float(re.search(r"held-out accuracy: ([\d.]+)", out).group(1)) > 0.7
    epochs = int(re.search(r"epochs run: (\d+)", out).group(1))
    assert 5 < epochs <= 30
    assert (out_dir / "best.keras").exists() and (out_dir / "final.weights.h5").exists()
    assert len(open(out_dir / "log.csv").read().splitlines()) == epochs + 1
    assert not (out_dir / "backup").exists() or not os.listdir(out_dir / "backup")   # removed at the end


def test_tabular_script_runs_on_keras_itself(tmp_path):
    """The same script, unchanged, under Keras 3 (torch backend): it is a genuine Keras script."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = run(pathlib.Path(SCRIPTS) / "pima_callbacks.py", PIMA, out_dir, env={"KERAS_BACKEND": "torch"})
    assert float(re.search(r"held-out accuracy: ([\d.]+)", out).group(1)) > 0.7


KERAS_NAMES = ["Input", "Sequential", "Model", "layers.Dense", "layers.Conv2D", "layers.Input", "optimizers.Adam",
               "optimizers.schedules.ExponentialDecay", "losses.SparseCategoricalCrossentropy",
               "metrics.SparseCategoricalAccuracy", "metrics.BinaryAccuracy", "callbacks.EarlyStopping",
               "callbacks.ModelCheckpoint", "callbacks.BackupAndRestore", "callbacks.TensorBoard",
               "callbacks.ReduceLROnPlateau", "callbacks.CSVLogger", "callbacks.LearningRateScheduler",
               "datasets.mnist.load_data", "utils.to_categorical", "utils.set_random_seed", "utils.normalize",
               "utils.pad_sequences", "utils.register_keras_serializable", "initializers.HeNormal",
               "initializers.GlorotUniform", "regularizers.l2", "regularizers.L1L2", "models.load_model",
               "models.Sequential", "models.model_from_json", "saving.load_model",
               "saving.register_keras_serializable", "config.floatx",
               "config.set_floatx", "config.epsilon", "config.image_data_format", "config.backend"]


def _resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", KERAS_NAMES)
def test_keras_names_exist(name):
    assert _resolve(keras_like, name) is not None


def test_the_names_are_keras_spellings():
    keras = pytest.importorskip("keras")
    pytest.importorskip("torch")
    missing = [n for n in KERAS_NAMES if not _has(keras, n)]
    assert not missing


def _has(module, dotted):
    try:
        return _resolve(module, dotted) is not None
    except AttributeError:
        return False


def test_small_utils_behave_as_keras():
    import numpy as np
    padded = keras_like.utils.pad_sequences([[1, 2, 3], [4], [5, 6, 7, 8, 9]], maxlen=4)
    np.testing.assert_array_equal(padded, [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9]])
    post = keras_like.utils.pad_sequences([[1, 2, 3], [4]], maxlen=2, padding="post", truncating="post")
    np.testing.assert_array_equal(post, [[1, 2], [4, 0]])
    np.testing.assert_allclose(keras_like.utils.normalize(np.array([[3.0, 4.0], [0.0, 0.0]])), [[0.6, 0.8], [0, 0]])
    assert keras_like.config.image_data_format() == "channels_last" and keras_like.config.floatx() == "float32"
    with pytest.raises(ValueError, match="channels_last"):
        keras_like.config.set_image_data_format("channels_first")
