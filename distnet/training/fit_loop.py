"""The epoch loop of `fit`: every rank runs the same number of steps on its slice of each global batch, with the
callbacks seeing globally averaged logs, validation at the end of epochs, and resumption from a backup."""
import numpy as np

from .. import timeline as timeline_mod, utils
from ..callbacks import CallbackList, History, ProgbarLogger
from ..parallel.strategy import MembershipChanged
from . import adapter, elastic
from .resume import FitState


def _count(value, name, minimum, allow_none=False):
    if allow_none and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"fit() expects {name} to be {kind}{' or None' if allow_none else ''}, received {value!r}")
    return int(value)


class FitLoop:
    def __init__(self, model, batch_size, epochs, verbose, shuffle, initial_epoch, steps_per_epoch,
                 validation_steps, validation_batch_size, validation_freq):
        self.model = model
        self.batch_size = adapter.check_batch_size(batch_size, "fit")
        self.epochs = _count(epochs, "epochs", 0)
        self.initial_epoch = _count(initial_epoch, "initial_epoch", 0)
        self.steps_per_epoch = _count(steps_per_epoch, "steps_per_epoch", 1, allow_none=True)
        self.validation_steps = _count(validation_steps, "validation_steps", 1, allow_none=True)
        self.validation_batch_size = (None if validation_batch_size is None
                                      else adapter.check_batch_size(validation_batch_size, "fit"))
        self.validation_freq = _count(validation_freq, "validation_freq", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.shuffle = shuffle

    def run(self, data, val, callbacks):
        model, B = self.model, self.batch_size
        strategy = model.distribute_strategy
        n = data.num_samples
        model.sync_replicas({"training data (samples)": n, "batch_size": B,
                             "validation_data (samples)": None if val is None else val.num_samples})
        seed = strategy.data_seed(utils.get_seed())
        steps = data.num_steps(B)
        if self.steps_per_epoch is not None:
            steps = min(self.steps_per_epoch, steps)
        step = model.make_step(data.y)
        model.history = History()
        cbs = list(callbacks or []) + [model.history]
        if self.verbose:
            cbs.append(ProgbarLogger(self.verbose))
        cbs = CallbackList(cbs, model, {"epochs": self.epochs, "steps": steps, "verbose": self.verbose,
                                        "batch_size": B, "samples": n})
        state = model.fit_state = FitState(model, step, cbs.callbacks, seed, B)
        model.stop_training = False
        tl = model.timeline or timeline_mod.from_env() or timeline_mod.NULL
        cbs.on_train_begin()
        start = (self.initial_epoch, 0, None)
        if strategy.elastic and model.steps_per_sync > 1:
            raise ValueError("elastic training (min_workers) needs steps_per_sync=1: a membership change cannot "
                             f"split an accumulated update; received steps_per_sync={model.steps_per_sync}")
        if strategy.joining:                           # an elastic worker joining a running job
            elastic.recover(model, state.epoch, state.step, tl)
            start = elastic.share_state(state)
        elif state.pending is not None:                # a BackupAndRestore found a checkpoint
            start = state.restore(tl)
        logs = {}
        for epoch in range(start[0], self.epochs):
            logs = self._epoch(epoch, start, data, val, steps, step, state, cbs, tl)
            if model.stop_training:
                break
        cbs.on_train_end(logs)
        tl.write(strategy.comm)
        return model.history

    def _epoch(self, epoch, start, data, val, steps, step, state, cbs, tl):
        model, B = self.model, self.batch_size
        strategy, flat = model.distribute_strategy, model.flat_state
        cbs.on_epoch_begin(epoch)
        order = data.epoch_order(state.seed, epoch, self.shuffle)
        totals, first_step, logs = step.stats.new_totals(), 0, {}
        if epoch == start[0] and start[2] is not None:
            totals[...], first_step = start[2], start[1]
            logs = step.stats.logs(totals)      # the epoch's logs so far (its steps may all be done already)
        if strategy.elastic:
            logs = self._elastic_steps(epoch, order, first_step, steps, data, step, state, totals, logs, cbs, tl)
        else:
            logs = self._steps(epoch, order, first_step, steps, data, step, state, totals, logs, cbs, tl)
        data.end_epoch()
        strategy.average_(flat.state)
        logs = dict(logs)
        if val is not None and (epoch + 1) % self.validation_freq == 0:
            vb = self.validation_batch_size or B
            vsteps = val.num_steps(vb)
            if self.validation_steps is not None:
                vsteps = min(vsteps, self.validation_steps)
            val_logs = evaluate_data(model, step, val, vb, vsteps)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
        state.at(epoch + 1, 0, None, logs)
        cbs.on_epoch_end(epoch, logs)
        return logs

    def _steps(self, epoch, order, first_step, steps, data, step, state, totals, logs, cbs, tl):
        model, B = self.model, self.batch_size
        strategy, flat = model.distribute_strategy, model.flat_state
        rank, size = strategy.rank, strategy.num_workers
        batches = batch_stream(data, order, range(first_step, steps), B, rank, size, f"fit() epoch {epoch + 1}")
        # what does not change within an epoch is looked up once: for a small model the step is mostly Python
        train, stats, per_sync = step.train, step.stats, model.steps_per_sync
        on_begin, on_end = cbs.on_train_batch_begin, cbs.on_train_batch_end
        batch_context, penalty_of = model.set_batch_context, flat.penalty
        try:
            for i in range(first_step, steps):
                on_begin(i)
                with tl.phase("data"):
                    ids, batch = next(batches)
                    batch_context(epoch, ids)
                penalty = penalty_of()
                slots = train(*batch, tl, per_sync == 1 or (i + 1) % per_sync == 0 or i == steps - 1)
                if slots is not None:
                    stats.add(totals, slots, penalty)
                    logs = stats.logs(totals)
                state.at(epoch, i + 1, totals)
                on_end(i, logs)
                if model.stop_training:
                    break
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        return logs

    def _elastic_steps(self, epoch, order, first_step, steps, data, step, state, totals, logs, cbs, tl):
        """The steps of an epoch when workers may leave or join: each step starts from a snapshot, and a step
        that a departure interrupted is redone on the survivors (the global batch is the same, so the update
        is too); at a boundary where a join was requested, everyone takes rank 0's state."""
        model, B = self.model, self.batch_size
        strategy, flat = model.distribute_strategy, model.flat_state
        snapshot = elastic.Snapshot(model)
        i, begun = first_step, -1
        while i < steps:
            if begun != i:
                cbs.on_train_batch_begin(i)
                begun = i
            snapshot.take(totals)
            try:
                with tl.phase("data"):
                    ids, batch = data.local_batch(order, i, B, strategy.rank, strategy.num_workers,
                                                  f"fit() epoch {epoch + 1}")
                    model.set_batch_context(epoch, ids)
                penalty = flat.penalty()
                slots = step.train(*batch, tl, True)
            except MembershipChanged:
                totals[...] = snapshot.restore()
                elastic.recover(model, epoch, i, tl)
                continue                                  # redo step i on the new membership
            step.stats.add(totals, slots, penalty)
            logs = step.stats.logs(totals)
            state.at(epoch, i + 1, totals)
            if slots[step.stats.control] > 0:             # a worker joins at this boundary: share the state
                elastic.recover(model, epoch, i + 1, tl)
                elastic.share_state(state)
            cbs.on_train_batch_end(i, logs)
            i += 1
            if model.stop_training:
                break
        return logs


def batch_stream(data, order, steps, batch_size, rank, size, what):
    """(sample ids, (x, y, w)) of rank's slice of each global batch in `steps`; read ahead on a background
    thread (distnet.data.Prefetcher) when the source reads from storage."""
    def produce(i):
        return data.local_batch(order, i, batch_size, rank, size, what)
    if getattr(data, "prefetch", False):
        from ..data import Prefetcher
        return Prefetcher(produce, steps, depth=2, describe=lambda i: f"{what}, step {i + 1}")
    return map(produce, steps)


def evaluate_data(model, step, data, batch_size, num_steps, callbacks=None):
    """Sharded over workers: each evaluates its slice of every batch; sums are combined once at the end."""
    strategy = model.distribute_strategy
    totals = step.stats.new_totals()
    slots = np.zeros(step.stats.size, dtype=np.float64)
    order = data.epoch_order(0, 0, False)
    batches = batch_stream(data, order, range(num_steps), batch_size, strategy.rank, strategy.num_workers,
                           "evaluate")
    try:
        for i in range(num_steps):
            if callbacks:
                callbacks.on_test_batch_begin(i)
            _, batch = next(batches)
            step.evaluate(*batch, slots)
            totals[:-1] += slots
            if callbacks:
                callbacks.on_test_batch_end(i, step.stats.logs(totals))
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    data.end_epoch()
    strategy.sum_(totals)
    totals[-1] = model.flat_state.penalty() * totals[0]
    return step.stats.logs(totals)
