"""Where a running fit is, and how to continue it bitwise-identically: the public training-state API that
BackupAndRestore (or any callback) uses through `model.fit_state`.

    state = model.fit_state              # during fit
    state.in_update                      # False between the micro-batches of one accumulated update
    arrays, meta = state.capture(exclude=(self,))       # collective: every rank calls it
    state.resume_from(arrays, meta, path)               # in on_train_begin: fit continues from there
"""
import time

import numpy as np

from ..checkpoint import CheckpointError


class FitState:
    """Position (epoch, step, running totals), data seed, batch size and callbacks of one fit call."""

    def __init__(self, model, step, callbacks, seed, batch_size):
        self.model, self.step_engine, self.callbacks = model, step, callbacks
        self.seed, self.batch_size = seed, batch_size
        self.epoch, self.step, self.totals, self.epoch_logs = 0, 0, None, {}
        self.pending = None            # (arrays, meta, path) given by resume_from, applied by restore()

    @property
    def strategy(self):
        return self.model.distribute_strategy

    @property
    def in_update(self):
        """True between the micro-batches of one accumulated update (steps_per_sync > 1): no backup then."""
        return self.step_engine.mid_accumulation

    def at(self, epoch, step, totals=None, epoch_logs=None):
        self.epoch, self.step, self.totals = epoch, step, totals
        if epoch_logs is not None:
            self.epoch_logs = epoch_logs

    # -- capture ------------------------------------------------------------------------------------------
    def capture(self, exclude=()):
        """Everything needed to continue this fit bitwise-identically: (arrays, JSON metadata). Collective:
        every rank calls it (each rank's dropout generators have drawn for its own shard)."""
        model, flat = self.model, self.model.flat_state
        rng = self.strategy.allgather({str(i): la.generator.bit_generator.state
                                       for i, la in enumerate(model.all_layers) if la.generator is not None})
        arrays = {"params": flat.params, "state": flat.state}
        arrays.update({f"slot/{k}": v for k, v in model.optimizer.slots.items()})
        if self.totals is not None:
            arrays["totals"] = self.totals
        history = {k: list(v) for k, v in model.history.history.items()}
        epochs_seen = list(model.history.epoch)
        if self.step == 0 and self.epoch - 1 not in epochs_seen:   # epoch end, before History recorded it
            epochs_seen.append(self.epoch - 1)
            for k, v in self.epoch_logs.items():
                history.setdefault(k, []).append(v)
        stateful = self._stateful(exclude)
        for k, cb in enumerate(stateful):
            for j, a in enumerate(cb.get_arrays() if hasattr(cb, "get_arrays") else []):
                arrays[f"callback{k:02d}/{j:04d}"] = a
        lr = None if model.optimizer.schedule is not None else model.optimizer.learning_rate
        meta = {"epoch": self.epoch, "step": self.step, "seed": self.seed, "batch_size": self.batch_size,
                "iterations": model.optimizer.iterations, "architecture": model.architecture(),
                "learning_rate": lr,
                "history": history, "history_epochs": epochs_seen,
                "membership": list(model.history.membership),
                "rng": rng, "world_size": self.strategy.num_workers,
                "callbacks": [[type(cb).__name__, cb.get_state(),
                               len(cb.get_arrays()) if hasattr(cb, "get_arrays") else 0] for cb in stateful]}
        return arrays, meta

    def _stateful(self, exclude=()):
        return [cb for cb in self.callbacks if hasattr(cb, "get_state") and cb not in exclude]

    # -- restore ------------------------------------------------------------------------------------------
    def resume_from(self, arrays, meta, path=None):
        """Continue this fit from a captured state (called on every rank in on_train_begin; only rank 0 needs
        the arrays and meta, the others may pass None)."""
        self.pending = (arrays, meta, path)

    def restore(self, timeline=None):
        """Apply the state given to resume_from and share it with every rank; return (epoch, step, totals).
        A backup written by another number of workers (a job relaunched on fewer hosts) is a change of
        membership: rank 0 says so, and History.membership and the timeline (phase `membership`) record it."""
        t0 = time.perf_counter()
        arrays, meta, path = self.pending
        self.pending = None
        model, strategy, flat = self.model, self.strategy, self.model.flat_state
        meta = strategy.broadcast_object(meta if strategy.is_main else None)
        if meta.get("architecture") != model.architecture():
            raise CheckpointError(f"the checkpoint in {path!r} was written by a different model architecture; "
                                  "delete it or point BackupAndRestore elsewhere")
        step = self._translate_step(meta, path)
        if strategy.is_main:
            flat.params[...] = arrays["params"]
            flat.state[...] = arrays["state"]
            model.optimizer.set_state({"iterations": meta["iterations"],
                                       "slots": {k[5:]: v for k, v in arrays.items() if k.startswith("slot/")}})
        if meta["learning_rate"] is not None:
            model.optimizer.learning_rate = meta["learning_rate"]
        strategy.broadcast_(flat.params, flat.state, *model.optimizer.slots.values())
        model.optimizer.iterations = strategy.broadcast_int(model.optimizer.iterations)
        mine = meta["rng"][strategy.rank % len(meta["rng"])]   # same world size: exactly this rank's generators
        for i, la in enumerate(model.all_layers):
            if str(i) in mine and la.generator is not None:
                la.generator.bit_generator.state = mine[str(i)]
        self._restore_callbacks(meta, arrays or {})
        model.history.history = {k: list(v) for k, v in meta["history"].items()}
        model.history.epoch = list(meta["history_epochs"])
        totals = None
        if step > 0:
            totals = self.step_engine.stats.new_totals()
            if strategy.is_main:
                totals[...] = arrays["totals"]
            strategy.broadcast_(totals)
        self.seed = meta["seed"]
        model.history.membership = list(meta.get("membership", []))
        saved = meta.get("world_size", strategy.num_workers)
        if saved != strategy.num_workers:
            t1 = time.perf_counter()
            if timeline is not None and hasattr(timeline, "record"):
                timeline.record("membership", t0, t1)
            workers = strategy.num_workers
            model.history.membership.append(
                {"epoch": meta["epoch"], "step": step, "event": f"restarted from a backup saved by {saved} workers",
                 "workers": workers, "seconds": round(t1 - t0, 3)})
            if strategy.is_main:
                print(f"distnet: restarted from a backup at step {step} of epoch {meta['epoch'] + 1} (saved by "
                      f"{saved} workers; continuing on {workers} worker{'s' if workers != 1 else ''})", flush=True)
        return meta["epoch"], step, totals

    def _translate_step(self, meta, path):
        """The step to continue from under this fit's batch size (the position counts samples of an epoch)."""
        saved_batch, step = meta.get("batch_size", self.batch_size), meta["step"]
        if step == 0 or saved_batch == self.batch_size:
            return step
        seen = step * saved_batch
        if seen % self.batch_size:
            raise CheckpointError(f"the backup {path!r} stopped after {seen} samples of epoch {meta['epoch'] + 1} "
                                  f"with batch_size={saved_batch}; this fit uses batch_size={self.batch_size}, which "
                                  f"cannot continue from there. Resume with batch_size={saved_batch} or delete the "
                                  "backup")
        return seen // self.batch_size

    def _restore_callbacks(self, meta, arrays):
        strategy = self.strategy
        weights = self.model.weights
        for k, ((name, state, n_arrays), cb) in enumerate(zip(meta["callbacks"], self._stateful())):
            if type(cb).__name__ != name:
                continue
            cb.set_state(state)
            if n_arrays:       # e.g. EarlyStopping's best weights: rank 0 read them, everyone receives them
                values = [arrays[f"callback{k:02d}/{j:04d}"].copy() if strategy.is_main else np.empty_like(w.value)
                          for j, w in zip(range(n_arrays), weights)]
                strategy.broadcast_(*values)
                cb.set_arrays(values)
