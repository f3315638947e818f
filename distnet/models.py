"""Sequential: Keras's model API over the flat-buffer engine, data-parallel when the world has > 1 worker.

A training step, the same on every worker:
    my slice of the global batch -> forward -> per-sample losses -> backward (grads land in ONE flat buffer)
    -> reducer sums [grads | sample count | loss and metric sums] over workers in one allreduce
    -> divide by the global count -> optimizer updates ONE flat parameter buffer
"""
import json
import time

import numpy as np

from . import checkpoint, losses as losses_mod, metrics as metrics_mod, optimizers as optimizers_mod
from . import timeline as timeline_mod
from . import utils
from .callbacks import CallbackList, History, ProgbarLogger
from .data import sharding
from .layers import InputLayer, Layer, get_layer_class
from .layers.base import ActivatedLayer, flatten_grads, flatten_values, segments, unique_name
from .parallel import world
from .parallel.reducer import Reducer


class Sequential:
    def __init__(self, layers=None, name=None, trainable=True):
        self.name = name or unique_name("sequential")
        self._layers = []
        self.built = False
        self.optimizer = self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._reducer = None
        self._synced = False
        self.timeline = None      # a distnet.timeline.Timeline to record phases of every step (or DISTNET_TIMELINE)
        for layer in layers or []:
            self.add(layer)

    # -- structure ----------------------------------------------------------------------------------------
    def add(self, layer):
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add expects a distnet Layer instance, received {layer!r}")
        if isinstance(layer, InputLayer) and self._layers:
            raise ValueError(f"An Input layer can only be the first layer of a Sequential model; model "
                             f"'{self.name}' already has {len(self._layers)} layer(s)")
        if any(layer.name == other.name for other in self._layers):
            raise ValueError(f"All layers in a model must have unique names; '{layer.name}' is already in "
                             f"model '{self.name}'")
        self._layers.append(layer)
        self.built = False
        first = self._layers[0]
        if first._declared_input_shape is not None:
            self._build(first._declared_input_shape)

    def pop(self):
        if not self.layers:
            raise ValueError(f"Model '{self.name}' has no layers to pop")
        layer = self._layers.pop()
        self.built = False
        if self._layers and self._layers[0]._declared_input_shape is not None:
            self._build(self._layers[0]._declared_input_shape)
        return layer

    @property
    def layers(self):
        """The model's layers, without the Input layer (as in Keras)."""
        return [la for la in self._layers if not isinstance(la, InputLayer)]

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r} in model '{self.name}'; layers: {[la.name for la in self.layers]}")

    def build(self, input_shape):
        """Build for input_shape including the batch dimension, e.g. model.build((None, 8))."""
        self._build(tuple(input_shape)[1:])

    def _build(self, input_shape):
        if not self._layers:
            raise ValueError(f"Model '{self.name}' has no layers; add layers before building or training it")
        shape = tuple(input_shape)
        self._input_shape = shape
        for layer in self._layers:
            shape = layer.build_for(shape)
        self.output_shape = (None,) + tuple(shape)
        self.input_shape = (None,) + tuple(self._input_shape)
        dtype = self._layers[0].dtype
        self._trainable = [w for la in self._layers for w in la.weights if w.trainable]
        self._frozen = [w for la in self._layers for w in la.weights if not w.trainable]
        self._params = flatten_values(self._trainable, dtype)
        offsets, offset = {}, 0
        for i, layer in enumerate(self._layers):
            size = sum(w.value.size for w in layer.trainable_weights)
            if size:
                offsets[i] = offset
            offset += size
        self._layer_offsets = offsets          # where each layer's gradients start in the flat buffer
        self._accumulated = None
        self.mid_accumulation = False          # True between the micro-batches of one accumulated update
        self._state = flatten_values(self._frozen, dtype)
        self._grad_buf = None
        self._regularized = [w for w in self._trainable if w.regularizer is not None]
        self.built = True
        self._synced = False
        if self.optimizer is not None:
            self.optimizer.build(self._params, segments(self._trainable))

    def _ensure_built(self, x, what):
        if not self.built:
            self._build(x.shape[1:])
        if x.shape[1:] != self._input_shape:
            first = self._layers[0]
            if isinstance(first, ActivatedLayer) or len(self._input_shape) == 1:
                if x.ndim >= 2 and x.shape[-1] != self._input_shape[-1]:
                    raise ValueError(f"{type(first).__name__} layer '{first.name}' expects input with last "
                                     f"dimension {self._input_shape[-1]}, received shape {x.shape}")
            raise ValueError(f"Model '{self.name}' expects input of shape {self.input_shape} in {what}, received "
                             f"shape {x.shape}")

    # -- compile ------------------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", allreduce="auto",
                bucket_bytes=None, compression=None, topk_ratio=0.01, overlap=False, steps_per_sync=1):
        """Keras's compile, plus how gradients are combined when training data-parallel:
        allreduce: 'auto' | 'ring' | 'native'; bucket_bytes: sum the gradient in slices of this size;
        compression: None | 'fp16' | 'bf16' | 'topk' (with topk_ratio, error feedback);
        overlap: sum the last layers' gradients while backward continues on the earlier ones;
        steps_per_sync=K: accumulate K micro-batches per update (an update then covers K * batch_size samples)."""
        if not isinstance(steps_per_sync, (int, np.integer)) or steps_per_sync < 1:
            raise ValueError(f"steps_per_sync must be a positive int, received {steps_per_sync!r}")
        if loss is None:
            raise ValueError(f"compile of model '{self.name}' needs a loss, received loss=None")
        self.loss = losses_mod.get(loss)
        self.optimizer = optimizers_mod.get(optimizer)
        metrics = list(metrics or []) + list(weighted_metrics or [])
        metrics_mod.validate_names(metrics)
        self._metric_ids = metrics
        self._reducer_options = {"algorithm": allreduce, "bucket_bytes": bucket_bytes, "compression": compression,
                                 "topk_ratio": topk_ratio, "overlap": bool(overlap)}
        Reducer(world.LOCAL, **self._reducer_options)          # validate the options now, not at fit time
        self._steps_per_sync = int(steps_per_sync)
        self._reducer = None
        self.compiled = True
        if self.built:
            self.optimizer.build(self._params, segments(self._trainable))

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() on model '{self.name}' before {what}()")

    def _prepare_outputs(self, y):
        """Resolve metrics for the model's output and the labels, and decide whether the loss takes logits."""
        out_shape = self.output_shape[1:]
        sparse = y is not None and (y.ndim == 1 or y.shape[1:] == (1,)) and out_shape[-1:] != (1,)
        self._metrics = [metrics_mod.get(m, self.loss, out_shape, sparse) for m in self._metric_ids]
        last = self._layers[-1]
        self._fused = (self.loss.fuses_with is not None and not self.loss.from_logits
                       and isinstance(last, ActivatedLayer) and last.activation.name == self.loss.fuses_with)
        if isinstance(last, ActivatedLayer):
            last.keep_preactivation = self._fused       # the loss reads the logits
        self._first_trainable = next((i for i, la in enumerate(self._layers) if la.trainable_weights),
                                     len(self._layers))
        extra = 2 + 2 * len(self._metrics)          # [count, loss_sum, (metric_sum, metric_weight)...]
        if self._grad_buf is None or self._grad_buf.size != self._params.size + extra:
            self._grad_buf = flatten_grads(self._trainable, self._params.dtype, extra)
            self._grads = self._grad_buf[:self._params.size]
            self._stats = self._grad_buf[self._params.size:]

    # -- the distributed world ----------------------------------------------------------------------------
    def _sync_world(self, num_samples, batch_size):
        """Once per fit: check all workers build the same model on the same data, then give them rank 0's
        weights (and optimizer state), so every replica starts identical."""
        comm = world.communicator()
        if self._reducer is None or self._reducer.comm is not comm:
            self._reducer = Reducer(comm, **self._reducer_options)
        if comm.size == 1:
            return
        mine = {"model": self._signature(), "num_samples": int(num_samples), "batch_size": int(batch_size)}
        everyone = comm.allgather(mine)
        for r, theirs in enumerate(everyone):
            for key in mine:
                if theirs[key] != everyone[0][key]:
                    raise RuntimeError(f"Workers disagree on {key}: rank 0 has {everyone[0][key]!r}, rank {r} has "
                                       f"{theirs[key]!r}. Every rank must build the same model and train on data of "
                                       "the same size.")
        self._broadcast_state()

    def _broadcast_state(self):
        comm = self._reducer.comm
        comm.broadcast_(self._params)
        if self._state.size:
            comm.broadcast_(self._state)
        for slot in self.optimizer.slots.values():
            comm.broadcast_(slot)
        it = np.array([self.optimizer.iterations], dtype=np.int64)
        comm.broadcast_(it)
        self.optimizer.iterations = int(it[0])

    def _signature(self, names=True):
        """Layer classes, weight shapes and dtypes (and names: auto-names differ between models built in one
        process, so checkpoints compare the structure only)."""
        if not names:
            return [[type(la).__name__, [[list(w.value.shape), str(w.value.dtype)] for w in la.weights]]
                    for la in self._layers]
        return [[type(la).__name__, la.name, [[w.name, list(w.value.shape), str(w.value.dtype)] for w in la.weights]]
                for la in self._layers]

    # -- forward / backward -------------------------------------------------------------------------------
    def _forward(self, x, training):
        for layer in self._layers:
            x = layer.call(x, training=training)
        return x

    def _losses_and_grad(self, y, out):
        """Per-sample losses and d(loss_i)/d(output) (or d/d(logits) when fused)."""
        if self._fused:
            return self.loss.from_logits_pair(y, self._layers[-1].preactivation)
        return self.loss.per_sample(y, out), self.loss.grad(y, out)

    def _backward(self, grad, ready=None):
        """ready(offset): told, when overlapping communication, that every gradient from `offset` on is final."""
        last = len(self._layers) - 1
        for i in range(last, self._first_trainable - 1, -1):
            layer, need = self._layers[i], i > self._first_trainable
            if i == last and self._fused:
                grad = layer.backward_preactivation(grad, need)
            else:
                grad = layer.backward(grad, need)
            if ready is not None and i in self._layer_offsets:
                ready(self._layer_offsets[i])

    def _penalty(self):
        return sum(w.regularizer.penalty(w.value) for w in self._regularized)

    def _fill_metric_stats(self, stats, y, out, w):
        for i, m in enumerate(self._metrics):
            v = m.values(y, out)
            stats[2 + 2 * i] = v.sum() if w is None else np.dot(v, w)
            stats[3 + 2 * i] = v.shape[0] if w is None else w.sum()

    def _train_step(self, xb, yb, wb, tl=timeline_mod.NULL, sync=True):
        """One micro-batch; with sync=False (gradient accumulation) the update waits for a later micro-batch
        and None is returned. Returns the step's global statistics slots after an update."""
        reducer, n_stats = self._reducer, self._stats.size
        accumulate = self._steps_per_sync > 1
        overlap = reducer.overlap and not accumulate and reducer.comm.size > 1
        with tl.phase("forward"):
            out = self._forward(xb, training=True)
        with tl.phase("backward"):
            losses, grad = self._losses_and_grad(yb, out)
            if wb is not None:
                losses = losses * wb
                grad = grad * wb.reshape((-1,) + (1,) * (grad.ndim - 1)).astype(grad.dtype, copy=False)
            stats = self._stats
            stats[0] = xb.shape[0]
            stats[1] = losses.sum()
            self._fill_metric_stats(stats, yb, out, wb)
            if overlap:
                reducer.begin(self._grad_buf, n_stats, self._layer_offsets.values())
            self._backward(grad, reducer.ready if overlap else None)
        if accumulate:
            if self._accumulated is None or self._accumulated.size != self._grad_buf.size:
                self._accumulated = np.zeros_like(self._grad_buf)
            self._accumulated += self._grad_buf           # gradient sums, sample counts and metric sums add up
            self.mid_accumulation = not sync
            if not sync:
                return None
            self._grad_buf[...] = self._accumulated
            self._accumulated.fill(0)
        if tl.measure_wait and reducer.comm.size > 1 and not overlap:
            with tl.phase("wait"):
                reducer.comm.barrier()
        with tl.phase("allreduce"):
            if overlap:
                reducer.finish()                          # the buckets were sent during backward
            else:
                reducer.reduce_(self._grad_buf, n_stats)  # sums over workers, in place
        with tl.phase("optimizer"):
            self._grads *= self._grads.dtype.type(1.0 / stats[0])
            for w in self._regularized:
                w.regularizer.add_gradient(w.value, w.grad)
            self.optimizer.apply(self._params, self._grads)
        return stats

    # -- data ---------------------------------------------------------------------------------------------
    def _as_inputs(self, x, what):
        if x is None:
            raise ValueError(f"{what}() of model '{self.name}' needs input data x, received None")
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{what}() expects x as a NumPy array, received {type(x).__name__}")
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"{what}() expects numeric x, received an array of dtype {x.dtype}")
        if x.ndim < 2:
            raise ValueError(f"{what}() expects x with a batch dimension (rank >= 2), received shape {x.shape}")
        if x.shape[0] == 0:
            raise ValueError(f"{what}() received empty input data: x has shape {x.shape}")
        return x

    def _as_targets(self, y, n, what):
        if y is None:
            raise ValueError(f"{what}() of model '{self.name}' needs targets y, received None")
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValueError(f"{what}(): x and y have different numbers of samples: x has {n}, y has {y.shape[0]}")
        if y.dtype.kind == "f" and y.size and not np.all(np.isfinite(y)):
            raise ValueError(f"{what}(): y contains NaN or inf values (first at sample "
                             f"{int(np.argwhere(~np.isfinite(y.reshape(n, -1)))[0, 0])})")
        return self.loss.prepare_targets(y, self.output_shape[1:])

    def _batch(self, x, idx, what):
        xb = np.take(x, idx, axis=0)
        if xb.dtype != self._params.dtype:
            xb = xb.astype(self._params.dtype)
        if xb.dtype.kind == "f" and not np.isfinite(xb).all():
            bad = idx[np.argwhere(~np.isfinite(xb.reshape(len(idx), -1)))[0, 0]]
            raise ValueError(f"{what}(): input x contains NaN or inf values (sample {int(bad)}); clean the data "
                             "or drop those samples")
        return xb

    def _sample_weights(self, y, n, sample_weight, class_weight):
        w = None
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=self._params.dtype).reshape(-1)
            if w.shape[0] != n:
                raise ValueError(f"sample_weight has {w.shape[0]} entries, but x has {n} samples")
        if class_weight is not None:
            if not isinstance(class_weight, dict):
                raise TypeError("class_weight must be a dict {class: weight}, received "
                                f"{type(class_weight).__name__}")
            if y.ndim == 1:
                labels = y.astype(np.int64)
            elif y.shape[-1] == 1:
                labels = np.round(y.reshape(-1)).astype(np.int64)
            else:
                labels = np.argmax(y.reshape(n, -1), axis=1)
            missing = sorted(set(np.unique(labels).tolist()) - set(class_weight))
            if missing:
                raise ValueError(f"class_weight has no weight for class(es) {missing}; it has {sorted(class_weight)}")
            cw = np.array([class_weight[c] for c in labels], dtype=self._params.dtype)
            w = cw if w is None else w * cw
        return w

    # -- fit / evaluate / predict -------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_batch_size=None, validation_freq=1):
        """Train for `epochs`. `batch_size` (default 32) is the GLOBAL batch: with N workers each step uses
        batch_size samples in total, split across workers, and gives the same update as one worker would."""
        self._require_compiled("fit")
        x = self._as_inputs(x, "fit")
        batch_size = _check_batch_size(batch_size, "fit")
        if not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise ValueError(f"fit() expects epochs to be an int >= 0, received {epochs!r}")
        self._ensure_built(x, "fit")
        y = self._as_targets(y, x.shape[0], "fit")
        self._prepare_outputs(y)
        sw = self._sample_weights(y, x.shape[0], sample_weight, class_weight)
        if validation_data is None and validation_split:
            if not 0 < validation_split < 1:
                raise ValueError(f"validation_split must be in (0, 1), received {validation_split!r}")
            split = int(x.shape[0] * (1 - validation_split))
            if split == 0 or split == x.shape[0]:
                raise ValueError(f"validation_split={validation_split} leaves no samples for training or "
                                 f"validation out of {x.shape[0]}")
            validation_data = (x[split:], y[split:]) if sw is None else (x[split:], y[split:], sw[split:])
            x, y, sw = x[:split], y[:split], (None if sw is None else sw[:split])
        val = self._validation_arrays(validation_data)
        n = x.shape[0]
        self._sync_world(n, batch_size)
        comm = self._reducer.comm
        seed = self._data_seed(comm)
        steps = sharding.num_steps(n, batch_size)
        if steps_per_epoch is not None:
            steps = min(int(steps_per_epoch), steps)
        verbose = 1 if verbose == "auto" else verbose
        self.history = History()
        cbs = list(callbacks or []) + [self.history]
        if verbose:
            cbs.append(ProgbarLogger(verbose))
        cbs = CallbackList(cbs, self, {"epochs": epochs, "steps": steps, "verbose": verbose,
                                       "batch_size": batch_size, "samples": n})
        self._callbacks = cbs.callbacks
        self.stop_training = False
        tl = self.timeline or timeline_mod.from_env() or timeline_mod.NULL
        self._resume = None
        cbs.on_train_begin()
        start = (initial_epoch, 0, None)
        if self._resume is not None:                  # a BackupAndRestore found a checkpoint
            start, seed = self._apply_resume(self._resume, cbs.callbacks)
        self._position = {"seed": seed}
        logs = {}
        for epoch in range(start[0], epochs):
            cbs.on_epoch_begin(epoch)
            order = sharding.epoch_order(n, seed, epoch, shuffle)
            totals = np.zeros(self._stats.size + 1, dtype=np.float64)   # + penalty*count
            first_step = 0
            if epoch == start[0] and start[2] is not None:
                totals[...], first_step = start[2], start[1]
                logs = self._logs(totals)        # the epoch's logs so far (its steps may all be done already)
            for step in range(first_step, steps):
                cbs.on_train_batch_begin(step)
                with tl.phase("data"):
                    idx = sharding.local_batch(order, step, batch_size, comm.rank, comm.size)
                    xb = self._batch(x, idx, "fit")
                    yb, wb = y[idx], (None if sw is None else sw[idx])
                penalty = self._penalty() if self._regularized else 0.0
                sync = (step + 1) % self._steps_per_sync == 0 or step == steps - 1
                stats = self._train_step(xb, yb, wb, tl, sync)
                if stats is not None:
                    totals[:-1] += stats
                    totals[-1] += penalty * stats[0]
                    logs = self._logs(totals)
                self._position.update(epoch=epoch, step=step + 1, totals=totals)
                cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            self._average_state()
            logs = dict(logs)
            if val is not None and (epoch + 1) % validation_freq == 0:
                val_logs = self._evaluate_arrays(*val, validation_batch_size or batch_size)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            self._position.update(epoch=epoch + 1, step=0, totals=None, epoch_logs=logs)
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        tl.write(comm)
        return self.history

    # -- resumable training state (BackupAndRestore) -------------------------------------------------------
    def training_state(self, callbacks=()):
        """Everything needed to continue this fit bitwise-identically: arrays and JSON metadata. Collective:
        every rank calls it (each rank's dropout generators have drawn for its own shard)."""
        pos = self._position
        rng = self._reducer.comm.allgather(
            {str(i): la._rng.bit_generator.state for i, la in enumerate(self._layers) if hasattr(la, "_rng")})
        arrays = {"params": self._params, "state": self._state}
        arrays.update({f"slot/{k}": v for k, v in self.optimizer.slots.items()})
        if pos.get("totals") is not None:
            arrays["totals"] = pos["totals"]
        history = {k: list(v) for k, v in self.history.history.items()}
        epochs_seen = list(self.history.epoch)
        if pos["step"] == 0 and pos["epoch"] - 1 not in epochs_seen:   # epoch end, before History recorded it
            epochs_seen.append(pos["epoch"] - 1)
            for k, v in pos.get("epoch_logs", {}).items():
                history.setdefault(k, []).append(v)
        stateful = [cb for cb in callbacks if hasattr(cb, "get_state")]
        for k, cb in enumerate(stateful):
            for j, a in enumerate(cb.get_arrays() if hasattr(cb, "get_arrays") else []):
                arrays[f"callback{k:02d}/{j:04d}"] = a
        lr = self.optimizer.learning_rate
        meta = {"epoch": pos["epoch"], "step": pos["step"], "seed": pos["seed"],
                "iterations": self.optimizer.iterations, "signature": self._signature(names=False),
                "learning_rate": lr if isinstance(lr, float) else None,
                "history": history, "history_epochs": epochs_seen,
                "rng": rng, "world_size": self._reducer.comm.size,
                "callbacks": [[type(cb).__name__, cb.get_state(),
                               len(cb.get_arrays()) if hasattr(cb, "get_arrays") else 0] for cb in stateful]}
        return arrays, meta

    def _apply_resume(self, resume, callbacks):
        """Load a training state found by BackupAndRestore (read on rank 0), share it with every rank, and return
        where to continue, ((epoch, step, running totals of that epoch or None), data seed)."""
        comm = self._reducer.comm
        meta = comm.allgather(resume.get("meta") if comm.rank == 0 else None)[0]
        if meta["signature"] != self._signature(names=False):
            raise checkpoint.CheckpointError(f"the checkpoint in {resume.get('path')!r} was written by a different "
                                             "model architecture; delete it or point BackupAndRestore elsewhere")
        arrays = resume.get("arrays") or {}
        if comm.rank == 0:
            self._params[...] = arrays["params"]
            self._state[...] = arrays["state"]
            self.optimizer.set_state({"iterations": meta["iterations"],
                                      "slots": {k[5:]: v for k, v in arrays.items() if k.startswith("slot/")}})
        if meta["learning_rate"] is not None:
            self.optimizer.learning_rate = meta["learning_rate"]
        self._broadcast_state()
        mine = meta["rng"][comm.rank % len(meta["rng"])]     # same world size: exactly this rank's generators
        for i, la in enumerate(self._layers):
            if str(i) in mine:
                la._rng.bit_generator.state = mine[str(i)]
        stateful = [cb for cb in callbacks if hasattr(cb, "set_state")]
        for k, ((name, state, n_arrays), cb) in enumerate(zip(meta["callbacks"], stateful)):
            if type(cb).__name__ != name:
                continue
            cb.set_state(state)
            if n_arrays:       # e.g. EarlyStopping's best weights: rank 0 read them, everyone receives them
                values = [arrays[f"callback{k:02d}/{j:04d}"].copy() if comm.rank == 0 else np.empty_like(w.value)
                          for j, w in zip(range(n_arrays), self.weights)]
                for v in values:
                    comm.broadcast_(v)
                cb.set_arrays(values)
        self.history.history = {k: list(v) for k, v in meta["history"].items()}
        self.history.epoch = list(meta["history_epochs"])
        totals = None
        if meta["step"] > 0:
            totals = np.zeros(self._stats.size + 1, dtype=np.float64)
            if comm.rank == 0:
                totals[...] = arrays["totals"]
            comm.broadcast_(totals)
        return (meta["epoch"], meta["step"], totals), meta["seed"]

    def _data_seed(self, comm):
        """The seed of the epoch orders: the user's global seed, else one drawn on rank 0 and shared."""
        seed = utils.get_seed()
        if seed is None:
            s = np.array([np.random.default_rng().integers(2**31)], dtype=np.int64)
            comm.broadcast_(s)
            seed = int(s[0])
        return seed

    def _validation_arrays(self, validation_data):
        if validation_data is None:
            return None
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight), "
                             f"received {type(validation_data).__name__}")
        xv = self._as_inputs(validation_data[0], "validation")
        self._ensure_built(xv, "validation_data")
        yv = self._as_targets(validation_data[1], xv.shape[0], "validation")
        wv = self._sample_weights(yv, xv.shape[0], validation_data[2] if len(validation_data) == 3 else None, None)
        return xv, yv, wv

    def _logs(self, totals):
        count = totals[0]
        logs = {"loss": float((totals[1] + totals[-1]) / count) if count else 0.0}
        for i, m in enumerate(self._metrics):
            weight = totals[3 + 2 * i]
            logs[m.name] = float(totals[2 + 2 * i] / weight) if weight else 0.0
        return logs

    def _average_state(self):
        """Make non-trainable state (BatchNormalization moving statistics) the mean over workers."""
        comm = self._reducer.comm
        if comm.size > 1 and self._state.size:
            comm.allreduce_(self._state)
            self._state *= self._state.dtype.type(1.0 / comm.size)

    def _evaluate_arrays(self, x, y, w, batch_size, callbacks=None):
        """Sharded over workers: each evaluates its slice of every batch; sums are combined once at the end."""
        comm = self._reducer.comm
        n = x.shape[0]
        totals = np.zeros(self._stats.size + 1, dtype=np.float64)
        stats = np.zeros(self._stats.size, dtype=np.float64)
        order = np.arange(n)
        for step in range(sharding.num_steps(n, batch_size)):
            if callbacks:
                callbacks.on_test_batch_begin(step)
            idx = sharding.local_batch(order, step, batch_size, comm.rank, comm.size)
            xb = self._batch(x, idx, "evaluate")
            out = self._forward(xb, training=False)
            losses = (self.loss.from_logits_pair(y[idx], self._layers[-1].preactivation)[0] if self._fused
                      else self.loss.per_sample(y[idx], out))
            wb = None if w is None else w[idx]
            stats[0] = len(idx)
            stats[1] = losses.sum() if wb is None else np.dot(losses, wb)
            self._fill_metric_stats(stats, y[idx], out, wb)
            totals[:-1] += stats
            if callbacks:
                callbacks.on_test_batch_end(step, self._logs(totals))
        comm.allreduce_(totals)
        totals[-1] = (self._penalty() if self._regularized else 0.0) * totals[0]
        return self._logs(totals)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Loss (and metrics) over (x, y): a float when there are no metrics, else [loss, *metrics].

        Collective under data parallelism: every rank must call it (each evaluates its slice of every batch;
        the sums are combined once at the end, so on_test_batch_end sees this rank's running values)."""
        self._require_compiled("evaluate")
        x = self._as_inputs(x, "evaluate")
        batch_size = _check_batch_size(batch_size, "evaluate")
        self._ensure_built(x, "evaluate")
        y = self._as_targets(y, x.shape[0], "evaluate")
        self._prepare_outputs(y)
        if self._reducer is None:
            self._reducer = Reducer(world.communicator(), **self._reducer_options)
        w = self._sample_weights(y, x.shape[0], sample_weight, None)
        cbs = CallbackList(callbacks or [], self, {"steps": sharding.num_steps(x.shape[0], batch_size)})
        cbs.on_test_begin()
        t0 = time.perf_counter()
        logs = self._evaluate_arrays(x, y, w, batch_size, cbs)
        cbs.on_test_end(logs)
        verbose = 1 if verbose == "auto" else verbose
        if verbose and world.is_main():
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            steps_done = sharding.num_steps(x.shape[0], batch_size)
            print(f"{steps_done}/{steps_done} - {time.perf_counter() - t0:.0f}s - {items}")
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs for x, computed in batches (inference mode: no dropout, moving BN statistics).
        Local: no communication, so any rank may call it alone."""
        x = self._as_inputs(x, "predict")
        batch_size = _check_batch_size(batch_size, "predict")
        self._ensure_built(x, "predict")
        cbs = CallbackList(callbacks or [], self, {})
        cbs.on_predict_begin()
        out = np.empty((x.shape[0],) + self.output_shape[1:], dtype=self._params.dtype)
        for step, start in enumerate(range(0, x.shape[0], batch_size)):
            cbs.on_predict_batch_begin(step)
            idx = np.arange(start, min(start + batch_size, x.shape[0]))
            out[start:start + len(idx)] = self._forward(self._batch(x, idx, "predict"), training=False)
            cbs.on_predict_batch_end(step, {"outputs": out[start:start + len(idx)]})
        cbs.on_predict_end()
        return out

    def __call__(self, x, training=False):
        x = np.asarray(x)
        self._ensure_built(x, "call")
        return np.array(self._forward(x.astype(self._params.dtype, copy=False), training=training))

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=max(len(x), 1), verbose=0)

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on (x, y) as one global batch."""
        self._require_compiled("train_on_batch")
        x = self._as_inputs(x, "train_on_batch")
        self._ensure_built(x, "train_on_batch")
        y = self._as_targets(y, x.shape[0], "train_on_batch")
        self._prepare_outputs(y)
        if not self._synced:          # the first call checks the replicas agree and shares rank 0's weights
            self._sync_world(x.shape[0], x.shape[0])
            self._synced = True
        comm = self._reducer.comm
        sw = self._sample_weights(y, x.shape[0], sample_weight, class_weight)
        idx = sharding.local_batch(np.arange(x.shape[0]), 0, x.shape[0], comm.rank, comm.size)
        penalty = self._penalty() if self._regularized else 0.0
        stats = self._train_step(self._batch(x, idx, "train_on_batch"), y[idx], None if sw is None else sw[idx])
        totals = np.append(stats.astype(np.float64), penalty * stats[0])
        logs = self._logs(totals)
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])

    # -- weights ------------------------------------------------------------------------------------------
    @property
    def weights(self):
        return [w for la in self._layers for w in la.weights]

    @property
    def trainable_weights(self):
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self):
        return [w for w in self.weights if not w.trainable]

    def get_weights(self):
        """Copies of every weight, layer by layer ([kernel, bias, ...]), in Keras's order and shapes."""
        return [w.value.copy() for w in self.weights]

    def set_weights(self, weights):
        mine = self.weights
        if len(weights) != len(mine):
            raise ValueError(f"Model '{self.name}' has {len(mine)} weight arrays, received a list of {len(weights)}")
        for w, v in zip(mine, weights):
            v = np.asarray(v)
            if v.shape != w.value.shape:
                raise ValueError(f"Weight '{w.name}' has shape {w.value.shape}, received shape {v.shape}")
            w.value[...] = v

    def count_params(self):
        return int(sum(w.value.size for w in self.weights))

    def summary(self, print_fn=None):
        if not self.built:
            raise ValueError(f"Model '{self.name}' has not been built yet: give the first layer an input_shape "
                             "(or add an Input), or call build() or fit() first")
        print_fn = print_fn or print
        rows = [(f"{la.name} ({type(la).__name__})", str((None,) + tuple(la.output_shape)), str(la.count_params()))
                for la in self.layers]
        widths = [max(30, max(len(r[0]) for r in rows) + 2), 26, 12]
        line = "_" * sum(widths)

        def fmt(cols):
            return "".join(c.ljust(w) for c, w in zip(cols, widths))
        trainable = sum(w.value.size for w in self.trainable_weights)
        total = self.count_params()
        out = [f'Model: "{self.name}"', line, fmt(("Layer (type)", "Output Shape", "Param #")), "=" * sum(widths)]
        for i, r in enumerate(rows):
            out.append(fmt(r))
            out.append(line if i < len(rows) - 1 else "=" * sum(widths))
        out += [f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                f"Non-trainable params: {total - trainable:,}", line]
        print_fn("\n".join(out))

    # -- saving -------------------------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "layers": [{"class_name": type(la).__name__, "config": la.get_config()}
                                              for la in self._layers],
                "input_shape": list(self._input_shape) if self.built else None}

    def save(self, filepath):
        """Architecture + weights + compile settings + optimizer state in one pickle-free .npz file (see
        distnet.checkpoint); written atomically. Load with distnet.models.load_model."""
        arrays = {f"weights/{i:04d}": v for i, v in enumerate(self.get_weights())}
        meta = {"format": "distnet.model", "config": self.get_config(), "compile": None}
        if self.compiled:
            meta["compile"] = {"loss": losses_mod.serialize(self.loss),
                               "optimizer": optimizers_mod.serialize(self.optimizer),
                               "metrics": [m for m in self._metric_ids if isinstance(m, str)],
                               "reducer": self._reducer_options, "steps_per_sync": self._steps_per_sync}
            meta["optimizer_iterations"] = self.optimizer.iterations
            arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.slots.items()})
        return checkpoint.save_arrays(filepath, arrays, _jsonable(meta))

    def save_weights(self, filepath):
        arrays = {f"weights/{i:04d}": v for i, v in enumerate(self.get_weights())}
        return checkpoint.save_arrays(filepath, arrays, {"format": "distnet.weights",
                                                         "signature": self._signature()})

    def load_weights(self, filepath):
        arrays, meta = checkpoint.load_arrays(filepath)
        if meta.get("format") not in ("distnet.weights", "distnet.model"):
            raise checkpoint.CheckpointError(f"{filepath!r} is not a distnet weights file")
        weights = [arrays[k] for k in sorted(k for k in arrays if k.startswith("weights/"))]
        if len(weights) != len(self.weights):
            raise checkpoint.CheckpointError(f"{filepath!r} holds {len(weights)} weight arrays, but model "
                                             f"'{self.name}' has {len(self.weights)}; was it saved from a different "
                                             "architecture?")
        self.set_weights(weights)


def load_model(filepath, compile=True):
    """Rebuild a model saved with `model.save`: architecture, weights, and (if compiled) optimizer state."""
    arrays, meta = checkpoint.load_arrays(filepath)
    if meta.get("format") != "distnet.model":
        raise checkpoint.CheckpointError(f"{filepath!r} is not a distnet model file (format {meta.get('format')!r})")
    config = meta["config"]
    model = Sequential(name=config["name"])
    for spec in config["layers"]:
        cls = get_layer_class(spec["class_name"])
        model.add(cls.from_config(dict(spec["config"])))
    if not model.built and config.get("input_shape") is not None:
        model._build(tuple(config["input_shape"]))
    model.load_weights(filepath)
    comp = meta.get("compile")
    if compile and comp:
        model.compile(optimizer=optimizers_mod.get(comp["optimizer"]), loss=losses_mod.get(comp["loss"]),
                      metrics=comp["metrics"], allreduce=comp["reducer"]["algorithm"],
                      steps_per_sync=comp.get("steps_per_sync", 1),
                      **{k: v for k, v in comp["reducer"].items() if k != "algorithm"})
        model.optimizer.set_state({"iterations": meta.get("optimizer_iterations", 0),
                                   "slots": {k.split("/", 1)[1]: v for k, v in arrays.items()
                                             if k.startswith("optimizer/")}})
    return model


def _check_batch_size(batch_size, what):
    if batch_size is None:
        return 32
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"{what}() expects batch_size to be a positive int, received {batch_size!r}")
    return int(batch_size)


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


__all__ = ["Sequential", "load_model"]
