"""The TensorBoard callback (Keras's `keras.callbacks.TensorBoard`, also `distnet.callbacks.TensorBoard`): event
files that `tensorboard --logdir LOG_DIR` shows, written by rank 0 alone, without TensorFlow (see event_file.py).

    LOG_DIR/train/events.out.tfevents...       epoch_loss, epoch_<metric>, epoch_learning_rate, and distnet's own:
                                               epoch_step_time, epoch_allreduce_time (seconds per step),
                                               epoch_samples_per_second, epoch_num_workers;
                                               batch_* every `update_freq` steps; weight histograms
    LOG_DIR/validation/events.out.tfevents...  epoch_loss, epoch_<metric> of the validation data

As in Keras, epoch scalars are at step = epoch, batch scalars at the global step (batches since training began),
so train and validation curves share one chart per quantity.
"""
import os
import time

from . import event_file
from .callbacks import Callback
from .parallel import world


class TensorBoard(Callback):
    """log_dir: where the train/ and validation/ runs go. update_freq: 'epoch', or every how many steps to also
    write batch_* scalars. histogram_freq: every how many epochs to write a histogram of every weight (0: never).
    write_steps_per_second: also epoch_/batch_steps_per_second, as Keras. write_graph, write_images,
    profile_batch, embeddings_freq and embeddings_metadata are accepted for Keras's sake and write nothing.

    The allreduce time comes from the model's timeline (`model.timeline = distnet.timeline.Timeline()`) when it
    has one; without it, that scalar is left out."""

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        if update_freq not in ("epoch", "batch") and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"TensorBoard update_freq must be 'epoch', 'batch' or a positive int, received "
                             f"{update_freq!r}")
        if not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(f"TensorBoard histogram_freq must be an int >= 0, received {histogram_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq, self.write_steps_per_second = histogram_freq, write_steps_per_second
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}

    # -- writers (rank 0 only) --------------------------------------------------------------------------------
    def _writer(self, run):
        if run not in self._writers:
            self._writers[run] = event_file.EventFileWriter(os.path.join(self.log_dir, run))
        return self._writers[run]

    def _close(self):
        for w in self._writers.values():
            w.close()
        self._writers = {}

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._active = world.is_main()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._epoch_start = epoch, time.perf_counter()
        self._steps, self._step_seconds = 0, 0.0
        self._since_write, self._seconds_since_write = 0, 0.0
        self._allreduce_seen = len(self._allreduce_durations() or [])

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        seconds = time.perf_counter() - self._batch_start
        self._steps += 1
        self._step_seconds += seconds
        self._since_write += 1
        self._seconds_since_write += seconds
        step = self._epoch * self.params.get("steps", 0) + batch + 1      # global step, the same after a resume
        if not self._active or self.update_freq == "epoch" or step % self.update_freq:
            return
        per_step = self._seconds_since_write / self._since_write
        scalars = {f"batch_{k}": v for k, v in (logs or {}).items() if _is_number(v)}
        scalars["batch_learning_rate"] = self._learning_rate(logs)
        scalars["batch_step_time"] = per_step
        if self.write_steps_per_second:
            scalars["batch_steps_per_second"] = 1.0 / per_step if per_step else 0.0
        self._writer("train").add_scalars(scalars, step)
        self._since_write, self._seconds_since_write = 0, 0.0

    def on_epoch_end(self, epoch, logs=None):
        if not self._active:
            return
        logs = logs or {}
        train = {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_") and _is_number(v)}
        train["epoch_learning_rate"] = self._learning_rate(logs)
        train.update(self._distnet_scalars())
        self._writer("train").add_scalars(train, epoch)
        val = {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_") and _is_number(v)}
        if val:
            self._writer("validation").add_scalars(val, epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            writer = self._writer("train")
            for w in self.model.weights:
                writer.add_histogram(f"{w.name}/histogram", w.value, epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        self._close()

    # -- values -----------------------------------------------------------------------------------------------
    def _learning_rate(self, logs):
        if logs and _is_number(logs.get("learning_rate")):
            return logs["learning_rate"]
        return float(self.model.optimizer.current_learning_rate())

    def _allreduce_durations(self):
        """Seconds of every allreduce the model's timeline recorded, or None without a timeline."""
        timeline = getattr(self.model, "timeline", None)
        return timeline.durations("allreduce") if hasattr(timeline, "durations") else None

    def _distnet_scalars(self):
        """Step time, allreduce time (seconds per step), samples per second and workers of the epoch so far."""
        steps = max(self._steps, 1)
        out = {"epoch_step_time": self._step_seconds / steps}
        seconds = time.perf_counter() - self._epoch_start
        batch, samples = self.params.get("batch_size"), self.params.get("samples")
        if batch and samples:
            seen = min(self._steps * batch, samples)
            out["epoch_samples_per_second"] = seen / seconds if seconds > 0 else 0.0
        if self.write_steps_per_second:
            out["epoch_steps_per_second"] = self._steps / seconds if seconds > 0 else 0.0
        new = (self._allreduce_durations() or [])[self._allreduce_seen:]
        if new:
            out["epoch_allreduce_time"] = sum(new) / steps
        strategy = self.model.distribute_strategy
        out["epoch_num_workers"] = strategy.num_workers if strategy is not None else 1
        return out


def _is_number(v):
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (hasattr(v, "dtype") and v.shape == ())
