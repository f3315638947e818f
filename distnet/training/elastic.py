"""Elastic training: continuing a fit when workers leave or join, with the result unchanged.

The global batch is split over however many workers there are, so a step gives the same update on 2 workers as
on 3; what a membership change must preserve is the state. Before each step the worker keeps a Snapshot (in
buffers allocated once); when a collective fails because a peer left (MembershipChanged), it restores the
snapshot, waits for the new membership (DataParallel.recover) and redoes the step on the survivors. A joining
worker receives rank 0's whole training state (FitState capture/restore, broadcast) at a step boundary that
every worker agrees on: the request to change rides in a slot of the step's gradient allreduce.
"""
import time

import numpy as np


class Snapshot:
    """Parameters, non-trainable state, optimizer slots and step count, layers' random generators and the
    epoch's running totals at a step boundary."""

    def __init__(self, model):
        self.model, flat = model, model.flat_state
        self.params, self.state = np.empty_like(flat.params), np.empty_like(flat.state)
        self.slots = {k: np.empty_like(v) for k, v in model.optimizer.slots.items()}
        self.totals = None

    def take(self, totals):
        model, flat = self.model, self.model.flat_state
        np.copyto(self.params, flat.params)
        np.copyto(self.state, flat.state)
        for k, v in model.optimizer.slots.items():
            np.copyto(self.slots[k], v)
        self.iterations = model.optimizer.iterations
        self.generators = [la.generator.bit_generator.state for la in model.all_layers if la.generator is not None]
        self.totals = totals.copy()

    def restore(self):
        """Put the state back as it was at take(); returns the running totals."""
        model, flat = self.model, self.model.flat_state
        np.copyto(flat.params, self.params)
        np.copyto(flat.state, self.state)
        for k, v in model.optimizer.slots.items():
            np.copyto(v, self.slots[k])
        model.optimizer.iterations = self.iterations
        for la, st in zip([la for la in model.all_layers if la.generator is not None], self.generators):
            la.generator.bit_generator.state = st
        return self.totals.copy()


def recover(model, epoch, step, timeline=None):
    """Wait for the new membership, then say what changed (rank 0 prints; History and the timeline record it)."""
    t0 = time.perf_counter()
    info = model.distribute_strategy.recover()
    t1 = time.perf_counter()
    if timeline is not None and hasattr(timeline, "record"):
        timeline.record("membership", t0, t1)
    size = info["size"]
    if info["left"]:
        what = f"rank{'s' if len(info['left']) > 1 else ''} {', '.join(map(str, info['left']))} left"
    else:
        what = f"{info['joined']} worker{'s' if info['joined'] != 1 else ''} joined"
    event = {"epoch": epoch, "step": step, "event": what, "workers": size, "seconds": round(t1 - t0, 3)}
    if model.history is not None:
        model.history.membership.append(event)
    if model.distribute_strategy.is_main:
        print(f"distnet: {what} at step {step} of epoch {epoch + 1}; continuing on {size} worker"
              f"{'s' if size != 1 else ''}", flush=True)
    return info


def share_state(state):
    """Collective over the new membership: every worker takes rank 0's training state (a joiner starts from
    it). Returns (epoch, step, running totals or None) to continue from."""
    arrays, meta = state.capture()
    if state.strategy.is_main:
        state.resume_from(arrays, meta)
    else:
        state.resume_from(None, None)
    return state.restore()
