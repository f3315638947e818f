"""BackupAndRestore: Keras's fault-tolerance callback over distnet's atomic, checksummed backups."""
import os
import warnings

from ..parallel import world
from .base import Callback


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
        from ..checkpoint import BackupDirectory
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
        from ..checkpoint import CheckpointError, load_arrays
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
        from ..checkpoint import save_arrays
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
