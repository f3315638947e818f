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
    files = sorted(f for f in os.listdir(backup_dir) if f.endswith(".npz"))
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


def test_newest_backup_flagged_encrypted_falls_back_to_the_previous(tmp_path):
    from tests.models.test_saving import _set_in_central_directory
    backup_dir = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        fit(build(), [Crash(3, 1)], callbacks.BackupAndRestore(backup_dir, keep_last=3))
    files = sorted(f for f in os.listdir(backup_dir) if f.endswith(".npz"))
    newest = backup_dir / files[-1]
    newest.write_bytes(_set_in_central_directory(newest.read_bytes(), 8, 0x0001))    # zip "encrypted" flag
    bar = callbacks.BackupAndRestore(backup_dir, delete_checkpoint=False)
    with pytest.warns(UserWarning, match="skipping damaged backup .*encrypted"):
        fit(build(), [], bar)
    assert bar.restored_from.endswith(files[-2])


HOLDER = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from tests.test_checkpoint import build, data
from distnet import callbacks
class Hold(callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            print("HOLDING", flush=True)
            time.sleep(300)             # a second job, still running, that owns the directory
x, y = data()
build().fit(x, y, batch_size=8, epochs=4, verbose=0,
            callbacks=[callbacks.BackupAndRestore(sys.argv[1], save_freq=1, keep_last=1), Hold()])
"""


@pytest.mark.timeout(120)
def test_a_directory_in_use_by_another_job_is_refused_and_a_restarted_job_resumes_its_own(tmp_path):
    import signal
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = tmp_path / "shared"
    other = subprocess.Popen([sys.executable, "-c", HOLDER, str(shared), root], stdout=subprocess.PIPE, text=True)
    try:
        assert "HOLDING" in other.stdout.readline()
        before = sorted(os.listdir(shared))
        bar = callbacks.BackupAndRestore(shared, save_freq=1, keep_last=1)
        with pytest.raises(CheckpointError, match=rf"is in use by another job \(.*\"pid\": {other.pid}"):
            fit(build(), [], bar)
        assert sorted(os.listdir(shared)) == before and bar.restored_from is None     # nothing read or written
    finally:
        other.send_signal(signal.SIGKILL)                # the other job dies (its lock goes with it) ...
        other.wait()
    bar = callbacks.BackupAndRestore(shared, save_freq=1, keep_last=1)
    fit(build(), [], bar)                                # ... and a restart of it resumes its backups
    assert bar.restored_from and bar.restored_from.endswith(".npz")


def test_pruning_tolerates_backups_that_are_already_gone(tmp_path, monkeypatch):
    from distnet.checkpoint import BackupDirectory
    directory = BackupDirectory(tmp_path)
    for name in ("backup-1.npz", "backup-2.npz", "backup-3.npz"):
        save_arrays(tmp_path / name, {"w": np.zeros(1)}, {})
    listed = directory.files()
    os.unlink(listed[0])                                  # removed by someone else after we listed it
    monkeypatch.setattr(directory, "files", lambda: listed)
    directory.prune(1)
    assert sorted(os.listdir(tmp_path)) == ["backup-3.npz"]


@pytest.mark.parametrize("case,message", [("a file", "is a file, not a directory"),
                                          ("below a file", "cannot create backup_dir"),
                                          ("read-only", "is not writable")])
def test_an_unusable_backup_dir_stops_fit_before_training(tmp_path, case, message):
    (tmp_path / "file").write_text("x")
    target = {"a file": tmp_path / "file", "below a file": tmp_path / "file" / "backup",
              "read-only": "/proc"}[case]           # /proc: a directory that not even root can write into
    steps = []
    counter = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    with pytest.raises(CheckpointError, match=message):
        fit(build(), [counter], callbacks.BackupAndRestore(target))
    assert steps == []
