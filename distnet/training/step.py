"""One training step over flat buffers: forward, per-sample losses, backward into ONE gradient buffer, the sum
over workers, the optimizer update.

    my slice of the global batch -> forward -> per-sample losses -> backward (grads land in ONE flat buffer)
    -> strategy sums [grads | step statistics] over workers in one allreduce
    -> divide by the global sample count -> optimizer updates ONE flat parameter buffer

The step statistics travel in a few slots after the gradients (`StepStats` names them), so the sample count,
loss and metric sums of every worker are summed exactly in the same collective.
"""
import math
import os

import numpy as np

from .. import backend
from ..layers.base import ActivatedLayer, flatten_grads, flatten_values, segments


class StepStats:
    """Names for the statistics slots: [count, loss_sum, (loss_sum of each output, if several),
    (metric_sum, metric_weight) per metric]. Running totals of an epoch have one more slot at the end: the
    regularisation penalty times the count."""

    COUNT, LOSS = 0, 1

    def __init__(self, metric_names, output_loss_names=(), control=False):
        self.output_loss_names = list(output_loss_names)
        self.metric_names = list(metric_names)
        self.first_metric = 2 + len(self.output_loss_names)
        self.size = self.first_metric + 2 * len(self.metric_names)
        # elastic: one more slot, summed with the gradients: > 0 when some worker was asked to change membership
        self.control = self.size if control else None
        self.size += 1 if control else 0
        # (name, slot) of each output's loss and (name, sum slot, weight slot) of each metric: fixed per model,
        # so `logs` (called every step) does no index arithmetic
        self.output_loss_slots = [(name, self.output_loss(k)) for k, name in enumerate(self.output_loss_names)]
        self.metric_slots = [(name, self.metric_sum(i), self.metric_weight(i))
                             for i, name in enumerate(self.metric_names)]

    def output_loss(self, k):
        return 2 + k

    def metric_sum(self, i):
        return self.first_metric + 2 * i

    def metric_weight(self, i):
        return self.first_metric + 2 * i + 1

    def new_totals(self):
        """Zeroed running totals: the slots plus the penalty slot, in float64 (sums over an epoch)."""
        return np.zeros(self.size + 1, dtype=np.float64)

    def add(self, totals, slots, penalty=0.0):
        totals[:-1] += slots
        totals[-1] += penalty * slots[self.COUNT]

    def logs(self, totals):
        """The Keras logs of running totals: mean loss (with the penalty), each output's mean loss, and each
        metric's weighted mean."""
        count = totals[self.COUNT]
        logs = {"loss": float((totals[self.LOSS] + totals[-1]) / count) if count else 0.0}
        for name, slot in self.output_loss_slots:
            logs[name] = float(totals[slot] / count) if count else 0.0
        for name, sum_slot, weight_slot in self.metric_slots:
            weight = totals[weight_slot]
            logs[name] = float(totals[sum_slot] / weight) if weight else 0.0
        return logs


class FlatState:
    """A model's numbers in flat buffers: `params` (every trainable value), `state` (non-trainable values such as
    BatchNormalization's moving statistics) and, once a step needs it, `buffer` = [grads | step statistics].
    Layers' weights are views into them, so an optimizer step or an allreduce is one operation."""

    def __init__(self, layers, dtype):
        self.trainable = [w for la in layers for w in la.weights if w.trainable]
        self.frozen = [w for la in layers for w in la.weights if not w.trainable]
        self.params = flatten_values(self.trainable, dtype)
        self.state = flatten_values(self.frozen, dtype)
        self.segments = segments(self.trainable)
        self.layer_offsets, offset = {}, 0      # where each layer's gradients start in the flat buffer
        for i, layer in enumerate(layers):
            size = sum(w.value.size for w in layer.weights if w.trainable)     # as laid out above
            if size:
                self.layer_offsets[i] = offset
            offset += size
        self.regularized = [w for w in self.trainable if w.regularizer is not None]
        self.buffer = self.grads = self.stats = None
        self.views = [(w, w.value) for w in self.trainable + self.frozen]     # for own()
        self.grad_views = []

    def gradient_buffer(self, n_stats):
        """[grads | n_stats slots]: allocated once (weights' `grad` become views of it), reused every step."""
        if self.buffer is None or self.buffer.size != self.params.size + n_stats:
            self.buffer = flatten_grads(self.trainable, self.params.dtype, n_stats)
            self.grads = self.buffer[:self.params.size]
            self.stats = self.buffer[self.params.size:]
            self.grad_views = [(w, w.grad) for w in self.trainable]
        return self.buffer

    def own(self):
        """Point the weights at these buffers again where another model built over the same layers took them
        (Keras models share their layers: an encoder made beside its autoencoder, a GAN's discriminator): the
        current values are carried over, and which weights train is again what this model was compiled with.
        Without it, the optimizer would update buffers the layers no longer read."""
        for w, view in self.views:
            if w.value is not view:
                view[...] = w.value
                w.value = view
        for w in self.frozen:
            w.set_trainable(False)
        for w in self.trainable:
            w.set_trainable(True)
        for w, grad in self.grad_views:
            w.grad = grad

    def penalty(self):
        """The regularisation penalty of the current weights (a float)."""
        return float(sum(w.regularizer.penalty(w.value) for w in self.regularized)) if self.regularized else 0.0

    def add_penalty_gradients(self):
        for w in self.regularized:
            w.regularizer.add_gradient(w.value, w.grad)


class Head:
    """One model output with its loss, loss weight, metrics and whether the loss is fused with its activation
    (softmax/sigmoid + cross-entropy differentiated as one stable unit from the logits)."""

    def __init__(self, name, layer, loss, weight, metrics, weighted):
        self.name, self.layer, self.loss, self.weight = name, layer, loss, weight
        self.metrics, self.weighted = metrics, weighted
        self.fused = (loss.fuses_with is not None and not loss.from_logits and isinstance(layer, ActivatedLayer)
                      and layer.activation.name == loss.fuses_with)
        if isinstance(layer, ActivatedLayer):
            layer.keep_preactivation = self.fused

    def losses(self, y, out, with_grad):
        """Per-sample losses (batch,), times the loss weight, and (with_grad) d(them)/d(output or logits)."""
        if self.fused:
            losses, grad = self.loss.from_logits_pair(y, self.layer.preactivation)
        elif with_grad:
            losses, grad = self.loss.per_sample(y, out), self.loss.grad(y, out)
        else:
            losses, grad = self.loss.per_sample(y, out), None
        if self.weight != 1.0:
            losses = losses * self.weight
            if grad is not None:
                grad = grad * grad.dtype.type(self.weight)
        return losses, grad


class Step:
    """The training and evaluation steps of one compiled model on one kind of targets.

    model: the structure (forward/backward over its layers); heads: one per output; strategy: the DataParallel
    that sums over workers; steps_per_sync: micro-batches accumulated per update."""

    def __init__(self, model, heads, optimizer, strategy, steps_per_sync=1):
        self.model, self.heads, self.optimizer, self.strategy = model, heads, optimizer, strategy
        self.steps_per_sync = steps_per_sync
        self.many = len(heads) > 1
        self.flat = model.flat_state
        self.metric_refs = [(k, m, w) for k, h in enumerate(heads) for m, w in zip(h.metrics, h.weighted)]
        self.sample_id_layers = [la for la in model.layers if la.uses_sample_ids]
        self.stats = StepStats([(f"{heads[k].name}_{m.name}" if self.many else m.name) for k, m, _ in self.metric_refs],
                               [f"{h.name}_loss" for h in heads] if self.many else (), control=strategy.elastic)
        # per metric: (head, metric, weighted, sum slot, weight slot), resolved once instead of every step
        self.metric_fills = [(k, m, weighted, sum_slot, weight_slot) for (k, m, weighted), (_, sum_slot, weight_slot)
                             in zip(self.metric_refs, self.stats.metric_slots)]
        self.buffer = self.flat.gradient_buffer(self.stats.size)
        self.fused = [h.fused for h in heads] if self.many else heads[0].fused
        self.accumulated = None
        # samples per block of a large batch (0: never), for how many intra-op threads; the blocks' sums
        self.block, self.block_threads, self.carried = None, None, None
        self.mid_accumulation = False       # True between the micro-batches of one accumulated update
        for layer in model.layers:          # synchronized BatchNormalization sums its statistics over workers
            if getattr(layer, "synchronized", False):
                layer.sum_across_workers = strategy.sum_in_order

    def outputs_and_losses(self, xb, ys, training, with_grad):
        """Forward, then per head (per-sample losses, gradient); ys: one target array per head."""
        out = self.model.forward(xb, training=training)
        if not self.many:
            return [out], [self.heads[0].losses(ys[0], out, with_grad)]
        return out, [h.losses(y, o, with_grad) for h, y, o in zip(self.heads, ys, out)]

    def fill_stats(self, slots, ys, outs, per_head, w):
        """Write the batch's count, loss sums and metric sums into `slots` (weighted by w where asked)."""
        slots[StepStats.COUNT] = outs[0].shape[0]
        if self.many:
            total = 0.0
            for k, (losses, _) in enumerate(per_head):
                value = losses.sum() if w is None else np.dot(losses, w)
                total += value
                weight = self.heads[k].weight   # as Keras 3 logs it: each output's own loss, before its weight
                slots[self.stats.output_loss(k)] = value / weight if weight else 0.0
            slots[StepStats.LOSS] = total
        else:
            losses = per_head[0][0]
            slots[StepStats.LOSS] = losses.sum() if w is None else np.dot(losses, w)
        for k, m, weighted, sum_slot, weight_slot in self.metric_fills:
            v = m.values(ys[k], outs[k])
            use = w if weighted else None
            slots[sum_slot] = v.sum() if use is None else np.dot(v, use)
            slots[weight_slot] = v.shape[0] if use is None else use.sum()
        if self.stats.control is not None:
            slots[self.stats.control] = 1.0 if self.strategy.change_requested else 0.0

    # -- steps --------------------------------------------------------------------------------------------
    def train(self, xb, yb, wb, tl, sync=True):
        """One micro-batch. With sync=False (gradient accumulation) the update waits for a later micro-batch and
        None is returned; else the step's global statistics slots after the update.

        A batch larger than the model's block runs as blocks, each forward then backward while its activations
        are still in the cache; every quantity the step sums (gradients, sample count, loss and metric sums) is
        a sum over samples, so the blocks' sums are the batch's."""
        with backend.ufunc_buffer():          # once for the step's blocks (the model's forward/backward nest)
            return self._train(xb, yb, wb, tl, sync)

    def _train(self, xb, yb, wb, tl, sync):
        strategy, flat = self.strategy, self.flat
        ys = yb if self.many else [yb]
        accumulate = self.steps_per_sync > 1
        overlap = strategy.overlaps and not accumulate
        tl.mark_step()
        blocks, carried = self.blocks(xb), None
        if blocks is not None:
            carried = self.carried
            for k, (lo, hi) in enumerate(blocks[:-1]):
                self.forward_backward(*self.rows(lo, hi, xb, ys, wb), tl)
                if k == 0:
                    np.copyto(carried, self.buffer)
                else:
                    carried += self.buffer
            xb, ys, wb = self.rows(*blocks[-1], xb, ys, wb)
        self.forward_backward(xb, ys, wb, tl, overlap, carried)
        if accumulate:
            if self.accumulated is None or self.accumulated.size != self.buffer.size:
                self.accumulated = np.zeros_like(self.buffer)
            self.accumulated += self.buffer           # gradient sums, sample counts and metric sums add up
            self.mid_accumulation = not sync
            if not sync:
                return None
            self.buffer[...] = self.accumulated
            self.accumulated.fill(0)
        if tl.measure_wait and not overlap:
            with tl.phase("wait"):
                strategy.barrier()
        with tl.phase("allreduce"):
            if overlap:
                strategy.finish_gradients()           # the buckets were sent during backward
            else:
                strategy.sum_gradients(self.buffer, self.stats.size)   # sums over workers, in place
        with tl.phase("optimizer"):
            count = flat.stats[StepStats.COUNT]
            flat.grads *= flat.grads.dtype.type(1.0 / count) if count else 0
            flat.add_penalty_gradients()
            self.optimizer.apply(flat.params, flat.grads)
        return flat.stats

    def forward_backward(self, xb, ys, wb, tl, overlap=False, carried=None):
        """Forward and backward of (a block of) the batch into `buffer` = [grads | statistics]; `carried`: the
        sums of the batch's earlier blocks, added in (before each layer's gradients are handed to the overlapped
        allreduce, when there is one)."""
        strategy, flat = self.strategy, self.flat
        with tl.phase("forward"):
            outs, per_head = self.outputs_and_losses(xb, ys, True, True)
        with tl.phase("backward"):
            if wb is not None:
                grads = [g * wb.reshape((-1,) + (1,) * (g.ndim - 1)).astype(g.dtype, copy=False)
                         for _, g in per_head]
            else:
                grads = [g for _, g in per_head]
            self.fill_stats(flat.stats, ys, outs, per_head, wb)
            ready = None
            if carried is not None:
                flat.stats += carried[flat.grads.size:]
            if overlap:
                strategy.begin_gradients(self.buffer, self.stats.size, flat.layer_offsets.values())
                ready = strategy.gradients_ready if carried is None else self.adding_ready(carried)
            self.model.backward(grads if self.many else grads[0], fused=self.fused, ready=ready)
            if carried is not None:
                end = ready.end if overlap else flat.grads.size
                flat.grads[:end] += carried[:end]

    def adding_ready(self, carried):
        """strategy.gradients_ready, adding the earlier blocks' gradients from `offset` on before passing it on;
        `.end`: where the gradients not yet passed on end."""
        grads, tell = self.flat.grads, self.strategy.gradients_ready

        def ready(offset):
            grads[offset:ready.end] += carried[offset:ready.end]
            ready.end = offset
            tell(offset)
        ready.end = grads.size
        return ready

    # -- blocks of a large batch --------------------------------------------------------------------------
    def blocks(self, xb):
        """[(lo, hi)] of a batch to run as blocks of about `block` samples, or None to run it whole."""
        if self.block_threads != backend.num_threads():
            self.block, self.block_threads = block_samples(self.model), backend.num_threads()
        n = (xb[0] if isinstance(xb, (list, tuple)) else xb).shape[0]
        if not self.block or 2 * n <= 3 * self.block:
            return None
        if self.carried is None or self.carried.size != self.buffer.size:
            self.carried = np.zeros_like(self.buffer)
        return [(lo, min(n, lo + self.block)) for lo in range(0, n, self.block)]

    @staticmethod
    def rows(lo, hi, xb, ys, wb):
        """Rows lo:hi of the inputs (one array or a list), of each target and of the sample weights."""
        xs = [x[lo:hi] for x in xb] if isinstance(xb, (list, tuple)) else xb[lo:hi]
        return xs, [y[lo:hi] for y in ys], None if wb is None else wb[lo:hi]

    def evaluate(self, xb, yb, wb, slots):
        """Fill `slots` with this batch's statistics in inference mode (no update, no communication); a large
        batch runs in blocks, as in training."""
        with backend.ufunc_buffer():
            return self._evaluate(xb, yb, wb, slots)

    def _evaluate(self, xb, yb, wb, slots):
        ys = yb if self.many else [yb]
        blocks = self.blocks(xb)
        if blocks is None:
            outs, per_head = self.outputs_and_losses(xb, ys, False, False)
            self.fill_stats(slots, ys, outs, per_head, wb)
            return slots
        block_slots = np.zeros_like(slots)
        slots.fill(0)
        for lo, hi in blocks:
            xs, y_rows, w_rows = self.rows(lo, hi, xb, ys, wb)
            outs, per_head = self.outputs_and_losses(xs, y_rows, False, False)
            self.fill_stats(block_slots, y_rows, outs, per_head, w_rows)
            slots += block_slots
        if self.stats.control is not None:
            slots[self.stats.control] = block_slots[self.stats.control]
        return slots


# Bytes of the widest layer output of one block per intra-op thread at one thread (twice that per thread with
# more). Measured on the example CNN at batch 128 (`distnet-bench engine --model cnn --batch 128 --threads 1,2
# --repeat 1`, DISTNET_BLOCK_BYTES varied, alternating): unblocked 79-82 ms at one thread; then blocks of 16
# samples (1.8 MB of its first convolution's output) 57-61 ms, of 8 62-63, of 21-22 67-69 (a power of two of
# samples runs best). After the fused convolution + pooling and the shared scratch buffers, at one thread 16
# samples against 32, six pairs: median 49.9 against 51.7 ms (4 of 6 pairs faster by ~2 ms), 64 samples 56-59
# ms; at two threads 32 samples per thread against 16: 32.8-35.0 against 37.0-38.9 ms (the per-layer hand-over
# between threads is paid per block). Batch 32 is the same either way.
BLOCK_BYTES = 2 << 20


def block_samples(model):
    """Samples per block for `model`: 0 (never block) unless every layer is per-sample (no batch statistics,
    no random draws); DISTNET_BLOCK_BYTES overrides BLOCK_BYTES (0 turns blocks off). With T > 1 intra-op threads
    each thread takes a slice with twice the budget (its own L2 cache; fewer hand-overs), a block T times that."""
    budget = int(os.environ.get("DISTNET_BLOCK_BYTES", BLOCK_BYTES))
    if budget <= 0 or not all(la.per_sample for la in model.layers):
        return 0
    if backend.num_threads() > 1:
        budget *= 2
    widest = 1
    for la in model.layers:
        shapes = la.output_shape if la.multi_output else [la.output_shape]
        widest = max([widest] + [math.prod(s) * np.dtype(la.dtype).itemsize for s in shapes])
    fits = max(1, budget // widest)
    return (1 << (fits.bit_length() - 1)) * backend.num_threads()     # the largest power of two that fits
