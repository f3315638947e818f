"""The Trainer: Keras's compile / fit / evaluate / predict / train_on_batch for any distnet Model, data-parallel
whenever the process belongs to a job with more than one worker (through its DataParallel strategy)."""
import time
import warnings

import numpy as np

from .. import optimizers as optimizers_mod
from ..callbacks import CallbackList
from ..data import sharding
from ..parallel.strategy import DataParallel
from . import adapter, sources
from .fit_loop import FitLoop, evaluate_data
from .compile_config import CompileConfig
from .step import Step

class Trainer:
    def __init__(self):
        self.optimizer = self.loss = None
        self.compiled = False
        self.stop_training = False
        self.history = None
        self.timeline = None       # a distnet.timeline.Timeline recording every step's phases (or DISTNET_TIMELINE)
        self.distribute_strategy = None
        self.fit_state = None      # where a running fit is (distnet.training.resume.FitState), for callbacks
        self.step = None
        self.replicas_synced = False

    # -- compile ------------------------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True,
                allreduce="auto", bucket_bytes=None, compression=None, topk_ratio=0.01, overlap=False,
                steps_per_sync=1):
        """Keras's compile, plus how gradients are combined when training data-parallel:
        allreduce: 'auto' | 'ring' | 'native' | 'hierarchical' (MPI, several nodes);
        bucket_bytes: sum the gradient in slices of this size;
        compression: None | 'fp16' | 'bf16' | 'topk' (with topk_ratio, error feedback);
        overlap: sum the last layers' gradients while backward continues on the earlier ones;
        steps_per_sync=K: accumulate K micro-batches per update (an update then covers K * batch_size samples).
        With several outputs, loss / loss_weights / metrics may be lists (output order) or dicts by output name.
        run_eagerly, jit_compile and auto_scale_loss are accepted and have no effect (distnet always runs eagerly
        in float32); steps_per_execution must be 1."""
        if isinstance(steps_per_sync, bool) or not isinstance(steps_per_sync, (int, np.integer)) or steps_per_sync < 1:
            raise ValueError(f"steps_per_sync must be a positive int, received {steps_per_sync!r}")
        if steps_per_execution != 1:
            raise ValueError(f"steps_per_execution={steps_per_execution!r} is not supported: distnet runs one step "
                             "per call and calls batch callbacks after every step; use steps_per_execution=1")
        self.compile_settings = CompileConfig(loss, loss_weights, metrics, weighted_metrics, self.name)
        self.loss = self.compile_settings.loss
        self.optimizer = optimizers_mod.get(optimizer)
        self.distribute_strategy = DataParallel(allreduce, bucket_bytes, compression, topk_ratio, overlap)
        self.steps_per_sync = int(steps_per_sync)
        self.compiled = True
        self.step = None
        self.replicas_synced = False
        self.trainable_warned = False
        # trainable flags set since the build take effect now, as Keras (a change rebuilds the optimizer's slots)
        if self.built and not self.apply_trainable():
            self.optimizer.build(self.flat_state.params, self.flat_state.segments)

    def compile_config(self):
        """The compile settings as JSON (for model files), or None before compile."""
        if not self.compiled:
            return None
        return {**self.compile_settings.to_json(), "optimizer": optimizers_mod.serialize(self.optimizer),
                "reducer": self.distribute_strategy.options, "steps_per_sync": self.steps_per_sync}

    def compile_from_config(self, config):
        reducer = dict(config["reducer"])
        self.compile(optimizer=optimizers_mod.get(config["optimizer"]),
                     loss=CompileConfig.loss_from_json(config["loss"]), metrics=config.get("metrics"),
                     weighted_metrics=config.get("weighted_metrics"), loss_weights=config.get("loss_weights"),
                     allreduce=reducer.pop("algorithm"), steps_per_sync=config.get("steps_per_sync", 1), **reducer)

    def on_built(self):
        """The model (re)built its flat buffers: the optimizer's slots follow, the replicas must sync again."""
        self.step = None
        self.replicas_synced = False
        if self.compiled:
            self.optimizer.build(self.flat_state.params, self.flat_state.segments)

    def _require_compiled(self, what):
        if not self.compiled:
            raise RuntimeError(f"You must call compile() on model '{self.name}' before {what}()")

    def _take_weights(self, training):
        """Before fit, train_on_batch and evaluate: the weights back in this model's buffers, where another model
        over the same layers may have taken them (evaluate: its replicas start from rank 0's values of them);
        in training, say once if a trainable flag changed since compile() (Keras keeps the compiled behaviour
        silently)."""
        if not self.built:
            return
        self.flat_state.own()
        pending = training and not self.trainable_warned and self.trainable_pending()
        if pending:
            self.trainable_warned = True
            warnings.warn(f"model '{self.name}': the trainable flag of {pending} changed after compile(); as in "
                          "Keras, it takes effect at the next compile() — this training keeps the trainable "
                          "weights it was compiled with", stacklevel=3)

    # -- the pieces every entry point shares --------------------------------------------------------------
    @property
    def output_names(self):
        return [la.name for la in self.output_layers]

    def make_step(self, ys):
        """The Step for targets like ys (one per output): metrics resolved ('accuracy' depends on the labels),
        loss fusion set."""
        ys = ys if self.multiple_outputs else [ys]
        shapes = [s[1:] for s in (self.output_shape if self.multiple_outputs else [self.output_shape])]
        heads = self.compile_settings.heads(self.output_names, self.output_layers, shapes, ys)
        self.step = Step(self, heads, self.optimizer, self.distribute_strategy, self.steps_per_sync)
        return self.step

    def arrays(self, x, y, what, sample_weight=None, class_weight=None, steps=None):
        """Checked data of one call (arrays, a row reader, a PyDataset or a generator), the model built for it."""
        if sources.is_reader(x) or sources.is_batches(x):
            return self._source(x, y, what, sample_weight, class_weight, steps)
        xs = self.input_arrays(x, what)
        n = xs[0].shape[0]
        names = self.output_names
        losses = self.compile_settings.losses(names)
        shapes = [s[1:] for s in (self.output_shape if self.multiple_outputs else [self.output_shape])]
        if y is None:
            raise ValueError(f"{what}() of model '{self.name}' needs targets y, received None")
        ys = [adapter.as_targets(v, n, what, self.name, loss, shape)
              for v, loss, shape in zip(adapter.structure(y, names, "y"), losses, shapes)]
        if class_weight is not None and len(ys) > 1:
            raise ValueError("class_weight is only supported for models with one output; pass sample_weight")
        w = adapter.sample_weights(ys[0], n, sample_weight, class_weight, self.flat_state.params.dtype)
        return adapter.ArrayData(xs, ys, w, self.flat_state.params.dtype, self.multiple_inputs,
                                 self.multiple_outputs, self.input_keeps_integers())

    def _source(self, x, y, what, sample_weight, class_weight, steps):
        if y is not None or sample_weight is not None or class_weight is not None:
            raise ValueError(f"{what}(): when x is a {type(x).__name__}, it provides the targets (and sample "
                             "weights) itself: leave y, sample_weight and class_weight out")
        if self.multiple_inputs or self.multiple_outputs:
            raise ValueError(f"{what}(): a {type(x).__name__} feeds models with one input and one output")
        dtype = self.flat_state.params.dtype if self.built else np.float32
        if sources.is_reader(x):
            if not self.built:
                self.build_for(tuple(x.shapes[0]))
            data = sources.ReaderData(x, self.compile_settings.losses(self.output_names)[0], self.output_shape[1:],
                                      dtype, what)
        else:
            data = sources.BatchesData(x, None, None, dtype, steps)
            if not self.built:
                self.build_for(data.input_shapes[0])
            data.bind(self.compile_settings.losses(self.output_names)[0], self.output_shape[1:])
        shape = tuple(data.input_shapes[0])
        if shape != tuple(self.input_shape[1:]):
            raise ValueError(f"Model '{self.name}' expects input of shape {self.input_shape} in {what}, received "
                             f"samples of shape {(None,) + shape} from {x!r}")
        return data

    def set_batch_context(self, epoch, sample_ids):
        """Tell the layers whose randomness follows the samples (preprocessing augmentation) which global samples
        the next training forward holds, so the augmented stream is the same for any number of workers."""
        for layer in self.step.sample_id_layers if self.step is not None else ():
            layer.set_batch_context(epoch, sample_ids)

    def input_arrays(self, x, what):
        """x as a list of checked arrays, one per model input (a list in input order or a dict by name)."""
        if self.built and self.multiple_inputs:
            names = [t.name for t in self.inputs]
            xs = [adapter.as_inputs(v, what, self.name) for v in adapter.structure(x, names, "x")]
        else:
            xs = [adapter.as_inputs(x[0] if isinstance(x, (list, tuple)) and len(x) == 1
                                    and isinstance(x[0], np.ndarray) else x, what, self.name)]
        self.ensure_built(xs, what)
        return xs

    def sync_replicas(self, facts):
        """Collective: join the job, check every worker agrees (model architecture and `facts`), then give every
        replica rank 0's weights, state and optimizer state (once per build, and whenever weights were set)."""
        strategy = self.distribute_strategy
        strategy.join()
        strategy.check_same({"model": self.architecture(), **facts})
        if strategy.num_workers > 1 and not self.replicas_synced:
            flat = self.flat_state
            strategy.broadcast_(flat.params, flat.state, *self.optimizer.slots.values())
            self.optimizer.iterations = strategy.broadcast_int(self.optimizer.iterations)
        self.replicas_synced = True

    # -- fit / evaluate / predict -------------------------------------------------------------------------
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        """Train for `epochs`. `batch_size` (default 32) is the GLOBAL batch: with N workers each step uses
        batch_size samples in total, split across workers, and gives the same update as one worker would.
        Collective: every rank calls it."""
        self._require_compiled("fit")
        self._take_weights(training=True)
        loop = FitLoop(self, batch_size, epochs, verbose, shuffle, initial_epoch, steps_per_epoch,
                       validation_steps, validation_batch_size, validation_freq)
        data = self.arrays(x, y, "fit", sample_weight, class_weight, steps=steps_per_epoch)
        val = None
        if validation_data is None and validation_split:
            data, val = data.split(validation_split)
        elif validation_data is not None:
            val = self._validation_source(validation_data, validation_steps)
        return loop.run(data, val, callbacks)

    def _validation_arrays(self, validation_data):
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data must be a tuple (x_val, y_val) or (x_val, y_val, sample_weight), "
                             f"received {type(validation_data).__name__}")
        sw = validation_data[2] if len(validation_data) == 3 else None
        return self.arrays(validation_data[0], validation_data[1], "validation", sw)

    def _validation_source(self, validation_data, steps):
        if sources.is_reader(validation_data) or sources.is_batches(validation_data):
            return self.arrays(validation_data, None, "validation", steps=steps)
        return self._validation_arrays(validation_data)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Loss (and metrics) over (x, y): a float when there are no metrics, else [loss, *metrics].

        Collective under data parallelism: every rank must call it with data of the same size; every rank starts
        from rank 0's weights (as in fit), evaluates its slice of every batch, and the sums are combined once at
        the end (so on_test_batch_end sees this rank's running values)."""
        self._require_compiled("evaluate")
        self._take_weights(training=False)
        batch_size = adapter.check_batch_size(batch_size, "evaluate")
        data = self.arrays(x, y, "evaluate", sample_weight, steps=steps)
        num_steps = _limit_steps(data.num_steps(batch_size), steps, "steps")
        self.sync_replicas({"evaluate data (samples)": data.num_samples, "evaluate batch_size": batch_size})
        step = self.make_step(data.y)
        cbs = CallbackList(callbacks or [], self, {"steps": num_steps})
        cbs.on_test_begin()
        t0 = time.perf_counter()
        logs = evaluate_data(self, step, data, batch_size, num_steps, cbs)
        cbs.on_test_end(logs)
        verbose = 1 if verbose == "auto" else verbose
        if verbose and self.distribute_strategy.is_main:
            items = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"{num_steps}/{num_steps} - {time.perf_counter() - t0:.0f}s - {items}")
        if return_dict:
            return logs
        values = list(logs.values())
        return values[0] if len(values) == 1 else values

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Model outputs for x, computed in batches (inference mode: no dropout, moving BN statistics); a list
        per output for several. Local: no communication, so any rank may call it alone."""
        batch_size = adapter.check_batch_size(batch_size, "predict")
        xs = self.input_arrays(x, "predict")
        total = xs[0].shape[0]
        n = min(total, _limit_steps(sharding.num_steps(total, batch_size), steps, "steps") * batch_size)
        data = adapter.ArrayData(xs, dtype=self.flat_state.params.dtype, many_inputs=self.multiple_inputs,
                                 keep_integers=self.input_keeps_integers())
        cbs = CallbackList(callbacks or [], self, {})
        cbs.on_predict_begin()
        shapes = self.output_shape if self.multiple_outputs else [self.output_shape]
        outs = [np.empty((n,) + tuple(s[1:]), dtype=self.flat_state.params.dtype) for s in shapes]
        for step, start in enumerate(range(0, n, batch_size)):
            cbs.on_predict_batch_begin(step)
            idx = np.arange(start, min(start + batch_size, n))
            got = self.forward(data.inputs(idx, "predict"), training=False)
            for o, g in zip(outs, got if self.multiple_outputs else [got]):
                o[start:start + len(idx)] = g
            cbs.on_predict_batch_end(step, {"outputs": [o[start:start + len(idx)] for o in outs]
                                            if self.multiple_outputs else outs[0][start:start + len(idx)]})
        cbs.on_predict_end()
        return outs if self.multiple_outputs else outs[0]

    def __call__(self, x, training=False):
        xs = [np.asarray(v).astype(self.flat_state.params.dtype if self.built else np.float32, copy=False)
              for v in (x if self.multiple_inputs else [x])]
        self.ensure_built(xs, "call")
        out = self.forward(xs if self.multiple_inputs else xs[0], training=training)
        return [np.array(o) for o in out] if self.multiple_outputs else np.array(out)

    def predict_on_batch(self, x):
        n = len(x[0]) if self.multiple_inputs and isinstance(x, (list, tuple)) else len(x)
        return self.predict(x, batch_size=max(n, 1), verbose=0)

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        """One optimizer step on (x, y) as one global batch. Collective."""
        self._require_compiled("train_on_batch")
        self._take_weights(training=True)
        data = self.arrays(x, y, "train_on_batch", sample_weight, class_weight)
        n = data.num_samples
        self.sync_replicas({"train_on_batch data (samples)": n})
        step = self.step if self.step is not None else self.make_step(data.y)
        strategy = self.distribute_strategy
        idx = sharding.local_batch(np.arange(n), 0, n, strategy.rank, strategy.num_workers)
        from ..timeline import NULL
        penalty = self.flat_state.penalty()
        slots = step.train(*data.batch(idx, "train_on_batch"), NULL)
        totals = step.stats.new_totals()
        step.stats.add(totals, slots, penalty)
        logs = step.stats.logs(totals)
        return logs if return_dict else (list(logs.values()) if len(logs) > 1 else logs["loss"])


def _limit_steps(available, steps, name):
    if steps is None:
        return available
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"{name} must be a positive int or None, received {steps!r}")
    return min(int(steps), available)
