"""BackupAndRestore: an interrupted and resumed fit is bitwise identical to an uninterrupted one."""
import os

import numpy as np
import pytest

import distnet
from distnet import callbacks, layers
from distnet.checkpoint import CheckpointError, load_arrays, save_arrays
from distnet.models import Sequential


def build():
    distnet.utils.set_random_seed(42)
    m = Sequential([layers.Input((6,)), layers.Dense(16, activation="relu"), layers.Dropout(0.3),
                    layers.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return m


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(101, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)


class Crash(callbacks.Callback):
    """Simulates a worker dying at a given (epoch, step)."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt("simulated crash")


def fit(model, extra, backup=None, epochs=4):
    x, y = data()
    cbs = [callbacks.EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=True),
           callbacks.ReduceLROnPlateau(monitor="loss", patience=1, factor=0.5)]
    if backup:
        cbs.append(backup)
    return model.fit(x, y, batch_size=8, epochs=epochs, validation_split=0.2, verbose=0, callbacks=cbs + extra)


@pytest.mark.parametrize("save_freq,crash", [("epoch", (2, 3)), (3, (1, 7)), (5, (3, 0))])
def test_resumed_run_is_bitwise_identical(tmp_path, save_freq, crash):
    reference = build()
    ref_hist = fit(reference, [])
    backup_dir = tmp_path / "backup"
    first = build()
    with pytest.raises(KeyboardInterrupt):
        fit(first, [Crash(*crash)], callbacks.BackupAndRestore(backup_dir, save_freq=save_freq))
    assert os.listdir(backup_dir)
    resumed = build()                               # a fresh process would rebuild the model like this
    bar = callbacks.BackupAndRestore(backup_dir, save_freq=save_freq)
    hist = fit(resumed, [], bar)
    assert bar.restored_from
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.optimizer.iterations == reference.optimizer.iterations
    assert hist.history == ref_hist.history
    assert not os.listdir(backup_dir)               # delete_checkpoint=True after a completed fit


def test_corrupt_latest_backup_falls_back_to_the_previous(tmp_path):
    backup_dir = tmp_path / "b"
    model = build()
    with pytest.raises(KeyboardInterrupt):
        fit(model, [Crash(3, 1)], callbacks.BackupAndRestore(backup_dir, keep_last=3))
    files = sorted(os.listdir(backup_dir))
    assert len(files) == 3                          # keep_last rotation
    newest = backup_dir / files[-1]
    newest.write_bytes(newest.read_bytes()[:-100])  # truncated, e.g. a crash mid-write without our rename
    bar = callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)
    with pytest.warns(UserWarning, match="skipping damaged backup"):
        fit(build(), [], bar)
    assert bar.restored_from.endswith(files[-2])


def test_backup_from_another_architecture_is_refused(tmp_path):
    backup_dir = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        fit(build(), [Crash(1, 0)], callbacks.BackupAndRestore(backup_dir))
    other = Sequential([layers.Input((6,)), layers.Dense(4), layers.Dense(3, activation="softmax")])
    other.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    with pytest.raises(CheckpointError, match="different model architecture"):
        fit(other, [], callbacks.BackupAndRestore(backup_dir))


def test_interrupted_write_leaves_previous_file_loadable(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    save_arrays(path, {"w": np.arange(4.0)}, {"v": 1})

    def die(*args, **kwargs):
        raise OSError(28, "No space left on device")      # disk full in the middle of np.savez
    monkeypatch.setattr(np, "savez", die)
    with pytest.raises(OSError, match="No space left"):
        save_arrays(path, {"w": np.zeros(4)}, {"v": 2})
    monkeypatch.undo()
    arrays, meta = load_arrays(path)
    assert meta == {"v": 1} and arrays["w"].tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]     # no temporary left behind
