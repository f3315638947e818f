"""What `compile` was given (losses, loss weights, metrics, weighted metrics), checked at once and resolved per
model output when the outputs and the targets are known. A one-output model takes single values; a model with
several outputs takes a list (in output order) or a dict by output name for each, or one value for all."""
import numpy as np

from .. import losses as losses_mod, metrics as metrics_mod
from . import adapter
from .step import Head


def _metric_list(metrics, what):
    """Keras accepts one metric or a list: metrics='accuracy' is ['accuracy'], not ['a', 'c', ...]."""
    if metrics is None:
        return []
    if isinstance(metrics, (str, metrics_mod.Metric)):
        return [metrics]
    if not isinstance(metrics, (list, tuple)):
        raise ValueError(f"{what} must be a metric name, a list of them, or (several outputs) a dict by output "
                         f"name, received {metrics!r}")
    return list(metrics)


def _weight(value, what):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a number (or one per output), received {value!r}")
    return float(value)


class CompileConfig:
    def __init__(self, loss, loss_weights=None, metrics=None, weighted_metrics=None, model_name="model"):
        if loss is None:
            raise ValueError(f"compile of model '{model_name}' needs a loss, received loss=None")
        self.loss = {k: losses_mod.get(v) for k, v in loss.items()} if isinstance(loss, dict) else \
            [losses_mod.get(v) for v in loss] if isinstance(loss, (list, tuple)) else losses_mod.get(loss)
        self.loss_weights = loss_weights
        if loss_weights is not None:
            for v in (loss_weights.values() if isinstance(loss_weights, dict) else
                      loss_weights if isinstance(loss_weights, (list, tuple)) else [loss_weights]):
                _weight(v, "loss_weights")
        self.metrics, self.weighted_metrics = metrics, weighted_metrics
        for spec, what in ((metrics, "metrics"), (weighted_metrics, "weighted_metrics")):
            for entry in (spec.values() if isinstance(spec, dict) else [spec]):
                if isinstance(entry, (list, tuple)) and entry and isinstance(entry[0], (list, tuple)):
                    for sub in entry:
                        metrics_mod.validate_names(_metric_list(sub, what))
                else:
                    metrics_mod.validate_names(_metric_list(entry, what))

    # -- per output -------------------------------------------------------------------------------------------
    def _per_output(self, value, names, what, default):
        if value is None:
            return [default] * len(names)
        if isinstance(value, dict) or (isinstance(value, (list, tuple)) and len(names) > 1
                                       and len(value) == len(names) and what != "metrics"):
            return adapter.structure(value, names, what)
        return [value] * len(names)

    def losses(self, names):
        if isinstance(self.loss, (dict, list)):
            return adapter.structure(self.loss, names, "loss")
        return [self.loss] * len(names)

    def heads(self, names, layers, output_shapes, ys):
        """One Head per output; 'accuracy' is resolved against each output's loss, shape and labels."""
        losses = self.losses(names)
        weights = [_weight(w, "loss_weights") for w in self._per_output(
            self.loss_weights if not (isinstance(self.loss_weights, (list, tuple)) and len(names) == 1)
            else self.loss_weights[0], names, "loss_weights", 1.0)]
        plain = self._metric_specs(self.metrics, names, "metrics")
        weighted = self._metric_specs(self.weighted_metrics, names, "weighted_metrics")
        heads = []
        for name, layer, loss, weight, shape, y, m_plain, m_weighted in zip(names, layers, losses, weights,
                                                                            output_shapes, ys, plain, weighted):
            sparse = y is not None and (y.ndim == 1 or y.shape[1:] == (1,)) and tuple(shape[-1:]) != (1,)
            ms = [metrics_mod.get(m, loss, shape, sparse) for m in m_plain + m_weighted]
            flags = [False] * len(m_plain) + [True] * len(m_weighted)
            resolved = [m.name for m in ms]
            for i, (m, flag) in enumerate(zip(ms, flags)):
                if flag and resolved.count(m.name) > 1:      # Keras's name for a metric asked for both ways
                    ms[i] = metrics_mod.Metric("weighted_" + m.name, m.fn)
            heads.append(Head(name, layer, loss, weight, ms, flags))
        return heads

    def _metric_specs(self, spec, names, what):
        if isinstance(spec, dict):
            return [_metric_list(spec.get(n), what) for n in names] if set(spec) <= set(names) else \
                adapter.structure(spec, names, what)
        if (isinstance(spec, (list, tuple)) and len(names) > 1 and len(spec) == len(names)
                and all(isinstance(s, (list, tuple)) or s is None for s in spec)):
            return [_metric_list(s, what) for s in spec]          # a list of lists: one per output
        return [_metric_list(spec, what)] * len(names)             # one list for every output

    # -- files ----------------------------------------------------------------------------------------------
    def to_json(self):
        def loss_json(v):
            if isinstance(v, dict):
                return {k: losses_mod.serialize(x) for k, x in v.items()}
            if isinstance(v, list):
                return [losses_mod.serialize(x) for x in v]
            return losses_mod.serialize(v)

        def names_only(spec):
            if isinstance(spec, dict):
                return {k: names_only(v) for k, v in spec.items()}
            if isinstance(spec, (list, tuple)):
                return [names_only(v) for v in spec if isinstance(v, (str, list, tuple, dict))]
            return spec if isinstance(spec, str) or spec is None else None
        return {"loss": loss_json(self.loss), "loss_weights": self.loss_weights,
                "metrics": names_only(self.metrics), "weighted_metrics": names_only(self.weighted_metrics)}

    @staticmethod
    def loss_from_json(v):
        if isinstance(v, dict) and "class_name" not in v:
            return {k: losses_mod.get(x) for k, x in v.items()}
        if isinstance(v, list):
            return [losses_mod.get(x) for x in v]
        return losses_mod.get(v)
