"""Keras-style callbacks. Under data parallelism every rank runs every callback with identical, globally
averaged logs, so decisions (stop, lower the learning rate) agree across ranks; callbacks that write files or
print do so on rank 0 only."""
import csv
import math
import os
import sys
import time
import warnings

import numpy as np

from .parallel import world


class Callback:
    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): pass
    def on_train_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Calls every hook on every callback in order."""

    def __init__(self, callbacks, model, params):
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be distnet.callbacks.Callback instances, received {cb!r}")
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook):
        if not hook.startswith("on_"):
            raise AttributeError(hook)

        methods = [getattr(cb, hook) for cb in self.callbacks
                   if getattr(type(cb), hook, None) is not getattr(Callback, hook, None) or hook in vars(cb)]

        def call(*args):
            for method in methods:
                method(*args)
        setattr(self, hook, call)      # built once per hook: the per-step cost is the loop itself
        return call


class History(Callback):
    """Records the epoch logs: `history.history['loss']`, `history.epoch`."""

    def __init__(self):
        super().__init__()
        self.history, self.epoch = {}, []
        self.membership = []      # elastic runs: {epoch, step, event, workers, seconds} per change of workers

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


def _fmt_value(v):
    return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.4e}"


def _fmt_time(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}"
    return f"{int(round(seconds))}s"


class ProgbarLogger(Callback):
    """Keras's progress bar. verbose=1: a live bar (on a terminal; one line per epoch otherwise);
    verbose=2: one line per epoch. Prints on rank 0 only."""

    def __init__(self, verbose=1, stream=None):
        super().__init__()
        self.verbose, self.stream = verbose, stream
        self._last_draw = 0.0

    @property
    def _out(self):
        return self.stream or sys.stdout

    def _active(self):
        return self.verbose and world.is_main()

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._seen = 0
        if self._active():
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', 1)}", file=self._out, flush=True)

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        if not (self._active() and self.verbose == 1 and getattr(self._out, "isatty", lambda: False)()):
            return
        now = time.perf_counter()
        if now - self._last_draw >= 0.05 or self._seen == self.params.get("steps"):
            self._last_draw = now
            self._out.write("\r" + self._line(logs, final=False))
            self._out.flush()

    def on_epoch_end(self, epoch, logs=None):
        if not self._active():
            return
        tty = getattr(self._out, "isatty", lambda: False)()
        self._out.write(("\r" if tty and self.verbose == 1 else "") + self._line(logs, final=True) + "\n")
        self._out.flush()

    def _line(self, logs, final):
        steps = self.params.get("steps") or self._seen
        elapsed = time.perf_counter() - self._start
        per_step = elapsed / max(self._seen, 1)
        head = f"{self._seen}/{steps}"
        if self.verbose == 1:
            width = 20
            filled = int(width * self._seen / max(steps, 1))
            head += " " + "━" * filled + ("╸" if filled < width else "") + " " * max(width - filled - 1, 0)
        if final:
            timing = f"{_fmt_time(elapsed)} {per_step * 1e3:.0f}ms/step"
        else:
            timing = f"{_fmt_time(per_step * (steps - self._seen))} {per_step * 1e3:.0f}ms/step"
        items = " - ".join(f"{k}: {_fmt_value(v)}" for k, v in (logs or {}).items()
                           if isinstance(v, (float, int, np.floating)))
        return f"{head} {timing}" + (f" - {items}" if items else "")


class _Monitor(Callback):
    """Shared by callbacks that watch one logged quantity for improvement."""

    def __init__(self, monitor, mode, min_delta):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"{type(self).__name__} mode must be 'auto', 'min' or 'max', received {mode!r}")
        self.monitor = monitor
        if mode == "auto":
            mode = "max" if ("acc" in monitor or monitor.endswith("auc")) else "min"
        self.mode = mode
        self.min_delta = abs(min_delta)

    def _better(self, current, reference):
        if reference is None:
            return True
        if self.mode == "max":
            return current - self.min_delta > reference
        return current + self.min_delta < reference

    def _current(self, logs):
        value = (logs or {}).get(self.monitor)
        if value is None:
            warnings.warn(f"{type(self).__name__}: monitored metric '{self.monitor}' is not available; available "
                          f"metrics are: {', '.join(logs or {})}", stacklevel=3)
        return value


class EarlyStopping(_Monitor):
    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best, self.best_weights, self.best_epoch = 0, 0, None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0 and world.is_main():
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0 and world.is_main():
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_state(self):
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch}

    def set_state(self, state):
        self.wait, self.best, self.best_epoch = state["wait"], state["best"], state["best_epoch"]
        self.stopped_epoch = state["stopped_epoch"]

    def get_arrays(self):
        return list(self.best_weights or [])

    def set_arrays(self, arrays):
        self.best_weights = list(arrays) or None


class ReduceLROnPlateau(_Monitor):
    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0):
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0, received factor={factor}")
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self.wait, self.cooldown_counter, self.best = 0, 0, None

    def on_train_begin(self, logs=None):
        self.wait, self.cooldown_counter, self.best = 0, 0, None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.current_learning_rate())
        current = self._current(logs)
        if current is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current, self.best):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.learning_rate)
                if old > self.min_lr:
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose > 0 and world.is_main():
                        print(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0

    def get_state(self):
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self.best}

    def set_state(self, state):
        self.wait, self.cooldown_counter, self.best = state["wait"], state["cooldown_counter"], state["best"]


class LearningRateScheduler(Callback):
    """Sets the learning rate at the start of each epoch to schedule(epoch, lr) (or schedule(epoch))."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.model.optimizer.learning_rate)
        try:
            new = self.schedule(epoch, lr)
        except TypeError:
            new = self.schedule(epoch)
        if not isinstance(new, (float, int, np.floating, np.integer)) or not math.isfinite(new):
            raise ValueError(f"LearningRateScheduler: the schedule must return a finite float, received {new!r}")
        self.model.optimizer.learning_rate = float(new)
        if self.verbose > 0 and world.is_main():
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class TerminateOnNaN(Callback):
    """Stops training as soon as the loss becomes NaN or infinite."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            if world.is_main():
                print(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Appends one row per epoch (epoch, then the logs in sorted order) to a CSV file, on rank 0."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self._file, self._writer, self._keys = None, None, None

    def on_train_begin(self, logs=None):
        if not world.is_main():
            return
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._header_written = exists

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:
            return
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self._keys, delimiter=self.sep)
            if not self._header_written:
                self._writer.writeheader()
        self._writer.writerow({"epoch": epoch, **{k: logs.get(k, "NA") for k in self._keys}})
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file, self._writer, self._keys = None, None, None


class ModelCheckpoint(_Monitor):
    """Saves the model (or its weights) after each epoch, or only when `monitor` improves; on rank 0."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__(monitor, mode, 0)
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"ModelCheckpoint save_freq must be 'epoch' or a positive int, received {save_freq!r}")
        self.filepath, self.verbose = os.fspath(filepath), verbose
        self.save_best_only, self.save_weights_only, self.save_freq = save_best_only, save_weights_only, save_freq
        self.best = initial_value_threshold
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs, batch=batch)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs)

    def _save(self, epoch, logs, batch=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, batch=batch, **logs)
        if self.save_best_only:
            current = self._current(logs)
            if current is None or not self._better(current, self.best):
                return
            if self.verbose > 0 and world.is_main():
                print(f"\nEpoch {epoch + 1}: {self.monitor} improved from {self.best} to {current}, saving to {path}")
            self.best = current
        if world.is_main():
            if self.save_weights_only:
                self.model.save_weights(path)
            else:
                self.model.save(path)

    def get_state(self):
        return {"best": self.best}

    def set_state(self, state):
        self.best = state["best"]


class BackupAndRestore(Callback):
    """Keras's fault-tolerance callback: back up the whole training state to `backup_dir` (every epoch, or
    every `save_freq` steps) and, when `fit` starts again after a crash, resume from the latest valid backup.
    The resumed run is bitwise identical to one that was never interrupted (same number of workers).

    A backup holds weights, optimizer slots and step count, the epoch and step to continue from, the running
    metric sums of a partial epoch, the data-order seed, dropout generators, the state of callbacks that
    have one (EarlyStopping, ReduceLROnPlateau, ModelCheckpoint) and the History so far. Files are written by
    rank 0 only, atomically, with checksums; a damaged file is skipped (with a warning) for the one before it.
    The newest `keep_last` backups are kept (at least 2 with Keras's `double_checkpoint=True`; distnet keeps 2 by
    default anyway); `delete_checkpoint=True` removes them when training completes.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True, keep_last=2):
        super().__init__()
        if double_checkpoint and isinstance(keep_last, int):
            keep_last = max(keep_last, 2)
        from .checkpoint import BackupDirectory
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"BackupAndRestore save_freq must be 'epoch' or a positive int, received {save_freq!r}")
        if not isinstance(keep_last, int) or keep_last < 1:
            raise ValueError(f"BackupAndRestore keep_last must be a positive int, received {keep_last!r}")
        self.backup_dir, self.save_freq = os.fspath(backup_dir), save_freq
        self.delete_checkpoint, self.keep_last = delete_checkpoint, keep_last
        self.directory = BackupDirectory(self.backup_dir)
        self._steps = 0
        self._due = False         # a step-based backup is owed (it waits for the end of an accumulated update)
        self.restored_from = None

    def on_train_begin(self, logs=None):
        from .checkpoint import CheckpointError, load_arrays
        found, problem = None, None
        if world.is_main():
            try:
                self.directory.open()        # usable, and no other job is using it (lock)
            except CheckpointError as e:
                problem = str(e)
            for path in reversed(self.directory.files() if problem is None else []):
                try:
                    arrays, meta = load_arrays(path)
                except CheckpointError as e:
                    warnings.warn(f"BackupAndRestore: skipping damaged backup {path}: {e}", stacklevel=2)
                    continue
                if meta.get("format") == "distnet.backup" and isinstance(meta.get("state"), dict):
                    found = (arrays, meta["state"], path)
                    break
        strategy = self.model.distribute_strategy
        resume, problem = strategy.broadcast_object((found is not None, problem))
        if problem:                         # on every rank, so that none waits for the others
            raise CheckpointError(problem)
        if resume:
            self.model.fit_state.resume_from(*(found or (None, None, None)))
            self.restored_from = found[2] if found else True
            if found and self.params.get("verbose") and world.is_main():
                print(f"BackupAndRestore: resuming from {found[2]} (epoch {found[1]['epoch'] + 1}, "
                      f"step {found[1]['step']})", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq != "epoch":
            self._steps += 1
            if self._steps % self.save_freq == 0:
                self._due = True
        if self._due and not self.model.fit_state.in_update:
            self._backup()        # with steps_per_sync > 1, backups wait for the end of an accumulated update
            self._due = False

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._backup()

    def _backup(self):
        from .checkpoint import save_arrays
        arrays, meta = self.model.fit_state.capture(exclude=(self,))     # collective: all ranks take part
        if not world.is_main():
            return
        path = os.path.join(self.backup_dir, f"backup-e{meta['epoch']:06d}-s{meta['step']:08d}.npz")
        save_arrays(path, arrays, {"format": "distnet.backup", "state": meta})
        self.directory.prune(self.keep_last)

    def on_train_end(self, logs=None):
        if world.is_main():               # reached only when fit completes without an error
            if self.delete_checkpoint:
                self.directory.prune(0)
            self.directory.close(remove=self.delete_checkpoint)


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback got an unknown hook {name!r}")
            setattr(self, name, fn)


def __getattr__(name):
    """TensorBoard lives in distnet/tensorboard.py (it imports this module); loaded on first use."""
    if name == "TensorBoard":
        from .tensorboard import TensorBoard
        return TensorBoard
    raise AttributeError(f"module 'distnet.callbacks' has no attribute {name!r}")
