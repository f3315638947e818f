"""The small things Keras users do without thinking: set the learning rate from a callback mid-training, rebuild a
model from get_config(), BackupAndRestore with Keras's arguments."""
import inspect
import os

import numpy as np
import pytest

import distnet as keras
from distnet import layers

os.environ.setdefault("KERAS_BACKEND", "torch")


def model(lr=0.1):
    m = keras.Sequential([keras.Input((5,)), layers.Dense(4, activation="tanh"), layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return m


def test_learning_rate_set_by_a_callback_is_used_from_the_next_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.normal(size=(40, 1)).astype(np.float32)
    m, seen = model(), []

    class Freeze(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((float(self.model.optimizer.learning_rate), self.model.get_weights()))
            if batch == 1:
                self.model.optimizer.learning_rate = 0.0          # as in Keras 3: assign to the attribute

    m.fit(x, y, batch_size=10, epochs=1, shuffle=False, verbose=0, callbacks=[Freeze()])
    assert [lr for lr, _ in seen] == [0.1, 0.1, 0.0, 0.0]
    assert not np.allclose(seen[0][1][0], seen[1][1][0])             # lr 0.1: the step changed the weights
    for _, weights in seen[2:]:                                      # lr 0: later steps leave them
        for a, b in zip(weights, seen[1][1]):
            np.testing.assert_array_equal(a, b)


def test_get_config_from_config_round_trip():
    m = keras.Sequential([keras.Input((8, 8, 1)), layers.Conv2D(3, 3, activation="relu", name="c"),
                          layers.MaxPooling2D(), layers.Flatten(), layers.Dropout(0.2),
                          layers.Dense(2, activation="softmax", kernel_regularizer=keras.regularizers.l2(0.01))],
                         name="small")
    clone = keras.Sequential.from_config(m.get_config())
    assert clone.name == "small" and clone.built and clone.output_shape == m.output_shape
    assert [type(la).__name__ for la in clone.layers] == [type(la).__name__ for la in m.layers]
    assert clone.get_config() == m.get_config()
    assert clone.layers[-1].kernel_regularizer.l2 == pytest.approx(0.01)


def test_keras_config_to_distnet():
    k = pytest.importorskip("keras")
    pytest.importorskip("torch")
    km = k.Sequential([k.Input((6,)), k.layers.Dense(3, activation="relu", kernel_initializer="he_normal"),
                       k.layers.Dense(1, activation="sigmoid")], name="from_keras")
    m = keras.Sequential.from_config(km.get_config())
    assert m.name == "from_keras" and m.input_shape == (None, 6) and m.count_params() == km.count_params()
    assert type(m.layers[0].kernel_initializer).__name__ == "HeNormal"


def test_backup_and_restore_takes_keras_arguments(tmp_path):
    bar = keras.callbacks.BackupAndRestore(backup_dir=str(tmp_path), save_freq="epoch", double_checkpoint=True,
                                           delete_checkpoint=False)
    assert bar.keep_last == 2 and bar.delete_checkpoint is False
    k = pytest.importorskip("keras")
    pytest.importorskip("torch")
    for name in ("BackupAndRestore", "TensorBoard", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau",
                 "CSVLogger"):
        theirs, ours = _named_parameters(getattr(k.callbacks, name)), _named_parameters(getattr(keras.callbacks, name))
        assert ours[:len(theirs)] == theirs, name          # same names in the same order: positional calls agree


def _named_parameters(cls):
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind != p.VAR_KEYWORD]


def test_to_json_and_model_from_json(tmp_path):
    m = model()
    again = keras.models.model_from_json(m.to_json())
    assert [type(la).__name__ for la in again.layers] == ["Dense", "Dense"] and again.input_shape == (None, 5)
    m.save(tmp_path / "m.npz")
    with pytest.raises(FileExistsError, match="overwrite=False"):
        m.save(tmp_path / "m.npz", overwrite=False)
    k = pytest.importorskip("keras")
    pytest.importorskip("torch")
    assert k.models.model_from_json(m.to_json()).count_params() == m.count_params()
