"""FitState: where a fit is, and continuing it when the batch size changes between the crash and the resume."""
import numpy as np
import pytest

import distnet
from distnet import callbacks, layers
from distnet.checkpoint import CheckpointError
from distnet.models import Sequential


def build():
    distnet.utils.set_random_seed(5)
    m = Sequential([layers.Input((3,)), layers.Dense(4, activation="relu"), layers.Dense(1)])
    m.compile(loss="mse", optimizer="sgd")
    return m


class StopAt(callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.step:
            raise KeyboardInterrupt("simulated crash")


def crashed_backup(tmp_path, batch_size=8):
    """A backup written after step 5 of epoch 0 with batch_size=8 (48 of 96 samples seen)."""
    x = np.random.default_rng(0).normal(size=(96, 3)).astype(np.float32)
    y = x.sum(axis=1)
    with pytest.raises(KeyboardInterrupt):
        build().fit(x, y, batch_size=batch_size, epochs=2, verbose=0,
                    callbacks=[callbacks.BackupAndRestore(tmp_path, save_freq=1), StopAt(5)])
    return x, y


def test_resume_with_a_batch_size_that_cannot_continue_is_refused(tmp_path):
    x, y = crashed_backup(tmp_path)
    with pytest.raises(CheckpointError, match=r"stopped after 48 samples of epoch 1 with batch_size=8; this fit uses "
                                              r"batch_size=32"):
        build().fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callbacks.BackupAndRestore(tmp_path)])


def test_resume_translates_the_position_to_a_dividing_batch_size(tmp_path):
    x, y = crashed_backup(tmp_path)
    seen = []

    class Steps(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(batch)
    build().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callbacks.BackupAndRestore(tmp_path), Steps()])
    assert seen[:3] == [3, 4, 5] and len(seen) == 3 + 6     # 48 samples = 3 steps of 16 done; then epoch 2


def test_fit_state_is_public_during_fit():
    x = np.zeros((10, 3), np.float32)
    got = {}

    class Look(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            state = self.model.fit_state
            got.update(epoch=state.epoch, step=state.step, in_update=state.in_update, batch_size=state.batch_size)
    build().fit(x, np.zeros(10), batch_size=4, epochs=1, verbose=0, callbacks=[Look()])
    assert got == {"epoch": 0, "step": 3, "in_update": False, "batch_size": 4}
