"""The callback protocol (Keras's hooks), the list that dispatches them, History and the progress bar."""
import sys
import time

import numpy as np

from ..parallel import world


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


class LambdaCallback(Callback):
    """A callback from plain functions: LambdaCallback(on_epoch_end=lambda epoch, logs: ...)."""

    def __init__(self, **hooks):
        super().__init__()
        for name, fn in hooks.items():
            if not name.startswith("on_") or not hasattr(Callback, name):
                raise ValueError(f"LambdaCallback got an unknown hook {name!r}")
            setattr(self, name, fn)
