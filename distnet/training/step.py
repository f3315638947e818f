"""One training step over flat buffers: forward, per-sample losses, backward into ONE gradient buffer, the sum
over workers, the optimizer update.

    my slice of the global batch -> forward -> per-sample losses -> backward (grads land in ONE flat buffer)
    -> strategy sums [grads | step statistics] over workers in one allreduce
    -> divide by the global sample count -> optimizer updates ONE flat parameter buffer

The step statistics travel in a few slots after the gradients (`StepStats` names them), so the sample count,
loss and metric sums of every worker are summed exactly in the same collective.
"""
import numpy as np

from ..layers.base import ActivatedLayer, flatten_grads, flatten_values, segments


class StepStats:
    """Names for the statistics slots: [count, loss_sum, (metric_sum, metric_weight) per metric]. Running totals
    of an epoch have one more slot at the end: the regularisation penalty times the count."""

    COUNT, LOSS = 0, 1

    def __init__(self, metric_names):
        self.metric_names = list(metric_names)
        self.size = 2 + 2 * len(self.metric_names)

    @staticmethod
    def metric_sum(i):
        return 2 + 2 * i

    @staticmethod
    def metric_weight(i):
        return 3 + 2 * i

    def new_totals(self):
        """Zeroed running totals: the slots plus the penalty slot, in float64 (sums over an epoch)."""
        return np.zeros(self.size + 1, dtype=np.float64)

    def add(self, totals, slots, penalty=0.0):
        totals[:-1] += slots
        totals[-1] += penalty * slots[self.COUNT]

    def logs(self, totals):
        """The Keras logs of running totals: mean loss (with the penalty) and each metric's weighted mean."""
        count = totals[self.COUNT]
        logs = {"loss": float((totals[self.LOSS] + totals[-1]) / count) if count else 0.0}
        for i, name in enumerate(self.metric_names):
            weight = totals[self.metric_weight(i)]
            logs[name] = float(totals[self.metric_sum(i)] / weight) if weight else 0.0
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
            size = sum(w.value.size for w in layer.trainable_weights)
            if size:
                self.layer_offsets[i] = offset
            offset += size
        self.regularized = [w for w in self.trainable if w.regularizer is not None]
        self.buffer = self.grads = self.stats = None

    def gradient_buffer(self, n_stats):
        """[grads | n_stats slots]: allocated once (weights' `grad` become views of it), reused every step."""
        if self.buffer is None or self.buffer.size != self.params.size + n_stats:
            self.buffer = flatten_grads(self.trainable, self.params.dtype, n_stats)
            self.grads = self.buffer[:self.params.size]
            self.stats = self.buffer[self.params.size:]
        return self.buffer

    def penalty(self):
        """The regularisation penalty of the current weights (a float)."""
        return float(sum(w.regularizer.penalty(w.value) for w in self.regularized)) if self.regularized else 0.0

    def add_penalty_gradients(self):
        for w in self.regularized:
            w.regularizer.add_gradient(w.value, w.grad)


class Step:
    """The training and evaluation steps of one compiled model on one kind of targets.

    model: the structure (forward/backward over its layers); loss, metrics: resolved objects; strategy: the
    DataParallel that sums over workers; steps_per_sync: micro-batches accumulated per update."""

    def __init__(self, model, loss, metrics, weighted, optimizer, strategy, steps_per_sync=1, loss_weight=1.0):
        self.model, self.loss, self.metrics, self.weighted = model, loss, metrics, weighted
        self.optimizer, self.strategy, self.steps_per_sync = optimizer, strategy, steps_per_sync
        self.loss_weight = loss_weight
        self.flat = model.flat_state
        self.stats = StepStats([m.name for m in metrics])
        self.buffer = self.flat.gradient_buffer(self.stats.size)
        last = model.output_layer
        # softmax/sigmoid + cross-entropy are differentiated as one stable unit from the logits
        self.fused = (loss.fuses_with is not None and not loss.from_logits and isinstance(last, ActivatedLayer)
                      and last.activation.name == loss.fuses_with)
        if isinstance(last, ActivatedLayer):
            last.keep_preactivation = self.fused
        self.accumulated = None
        self.mid_accumulation = False       # True between the micro-batches of one accumulated update

    # -- pieces -------------------------------------------------------------------------------------------
    def losses_and_grad(self, y, out):
        """Per-sample losses (batch,) and d(loss_i)/d(output) (or d/d(logits) when fused)."""
        if self.fused:
            losses, grad = self.loss.from_logits_pair(y, self.model.output_layer.preactivation)
        else:
            losses, grad = self.loss.per_sample(y, out), self.loss.grad(y, out)
        if self.loss_weight != 1.0:
            losses = losses * self.loss_weight
            grad = grad * grad.dtype.type(self.loss_weight)
        return losses, grad

    def per_sample_losses(self, y, out):
        if self.fused:
            losses = self.loss.from_logits_pair(y, self.model.output_layer.preactivation)[0]
        else:
            losses = self.loss.per_sample(y, out)
        return losses * self.loss_weight if self.loss_weight != 1.0 else losses

    def fill_stats(self, slots, y, out, losses, w):
        """Write the batch's count, loss sum and metric sums into `slots` (weighted by w where asked)."""
        slots[StepStats.COUNT] = out.shape[0]
        slots[StepStats.LOSS] = losses.sum() if w is None else np.dot(losses, w)
        for i, (m, weighted) in enumerate(zip(self.metrics, self.weighted)):
            v = m.values(y, out)
            use = w if weighted else None
            slots[StepStats.metric_sum(i)] = v.sum() if use is None else np.dot(v, use)
            slots[StepStats.metric_weight(i)] = v.shape[0] if use is None else use.sum()

    # -- steps --------------------------------------------------------------------------------------------
    def train(self, xb, yb, wb, tl, sync=True):
        """One micro-batch. With sync=False (gradient accumulation) the update waits for a later micro-batch and
        None is returned; else the step's global statistics slots after the update."""
        strategy, flat = self.strategy, self.flat
        accumulate = self.steps_per_sync > 1
        overlap = strategy.overlaps and not accumulate
        with tl.phase("forward"):
            out = self.model.forward(xb, training=True)
        with tl.phase("backward"):
            losses, grad = self.losses_and_grad(yb, out)
            if wb is not None:
                grad = grad * wb.reshape((-1,) + (1,) * (grad.ndim - 1)).astype(grad.dtype, copy=False)
            self.fill_stats(flat.stats, yb, out, losses, wb)
            if overlap:
                strategy.begin_gradients(self.buffer, self.stats.size, flat.layer_offsets.values())
            self.model.backward(grad, fused=self.fused, ready=strategy.gradients_ready if overlap else None)
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

    def evaluate(self, xb, yb, wb, slots):
        """Fill `slots` with this batch's statistics in inference mode (no update, no communication)."""
        out = self.model.forward(xb, training=False)
        self.fill_stats(slots, yb, out, self.per_sample_losses(yb, out), wb)
        return slots
