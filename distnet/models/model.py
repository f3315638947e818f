"""Model: the structure shared by every model (layers, build, flat buffers, weights, summary, config, saving);
training comes from the Trainer mixin. A subclass says how data flows through its layers: `build_layers`,
`forward` and `backward` (Sequential: a chain; the functional Model: a graph)."""
import numpy as np

from ..layers import InputLayer
from ..layers.base import unique_name, weights_by_flag
from ..training.step import FlatState
from ..training.trainer import Trainer
from . import saving, summary


class Model(Trainer):
    def __init__(self, name=None, trainable=True):
        if not isinstance(trainable, (bool, np.bool_)):
            raise TypeError(f"trainable must be True or False, received {trainable!r}")
        self.name = name or unique_name(self.default_name)
        self._trainable = bool(trainable)
        self.built = False
        self.flat_state = None
        self.input_shape = self.output_shape = None
        Trainer.__init__(self)

    default_name = "model"

    # -- structure (subclasses) ---------------------------------------------------------------------------
    @property
    def all_layers(self):
        """Every layer in execution order, Input layers included."""
        raise NotImplementedError  # abstract

    def build_layers(self, input_shape):
        """Build every layer for input_shape (no batch dim); return the output shape (no batch dim)."""
        raise NotImplementedError  # abstract

    def forward(self, x, training=False):
        """x: (batch, *input_shape) -> (batch, *output_shape), through every layer."""
        raise NotImplementedError  # abstract

    def backward(self, grad, fused=False, ready=None):
        """grad: d(sum of losses)/d(output) (d/d(logits) of the output layer when fused). Fills every weight's
        grad. ready(offset): told, when overlapping communication, that every gradient from offset on is final."""
        raise NotImplementedError  # abstract

    # -- building -----------------------------------------------------------------------------------------
    @property
    def layers(self):
        """The model's layers, without Input layers (as in Keras)."""
        return [la for la in self.all_layers if not isinstance(la, InputLayer)]

    multiple_inputs = multiple_outputs = False     # True for functional models with several

    @property
    def output_layer(self):
        return self.all_layers[-1]

    @property
    def output_layers(self):
        return [self.output_layer]

    def ensure_built(self, xs, what):
        """Build for the inputs' shapes on first use; afterwards, a clear error when they do not fit.
        xs: a list with one array per model input."""
        raise NotImplementedError  # abstract

    def build(self, input_shape):
        """Build for input_shape including the batch dimension, e.g. model.build((None, 8))."""
        self.build_for(tuple(input_shape)[1:])

    def build_for(self, input_shape):
        """Build every layer for input_shape (without the batch dimension) and move the weights into flat
        buffers."""
        if not self.all_layers:
            raise ValueError(f"Model '{self.name}' has no layers; add layers before building or training it")
        input_shape = tuple(input_shape)
        output_shape = self.build_layers(input_shape)
        self.input_shape, self.output_shape = (None,) + input_shape, (None,) + tuple(output_shape)
        if not self.trainable:
            for la in self.all_layers:
                la.trainable = False
        self.apply_trainable()
        # the float type of the weights (an Input may be declared int64 for Embedding ids)
        dtype = next((la.dtype for la in self.layers), self.all_layers[0].dtype)
        self.flat_state = FlatState(self.all_layers, dtype)
        self.built = True
        self.on_built()

    # -- freezing layers (Keras's trainable) -----------------------------------------------------------------
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze (False) or unfreeze every layer, as Keras; takes effect at the next compile()."""
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"trainable must be True or False, received {value!r}")
        self._trainable = bool(value)
        try:
            layers = self.all_layers
        except AttributeError:                  # (a model being constructed)
            layers = []
        for la in layers:
            la.trainable = value

    def wanted_trainable(self):
        """[(weight, whether it should train)] by the model's and its layers' trainable flags now."""
        return [(w, want and self.trainable) for la in self.all_layers for w, want in la.wanted_trainable()]

    def trainable_pending(self):
        """Names of the layers whose trainable flag changed since the model last took them (build or compile)."""
        return sorted({w.name.rsplit("/", 1)[0] for w, want in self.wanted_trainable() if w.trainable != want})

    def apply_trainable(self):
        """Take the trainable flags (compile() calls it, as Keras reads them at compile): the weights that
        now train or stop, and the flat buffers, the optimizer's slots and which layers need input gradients
        rebuilt around them. Values are kept. Returns whether anything changed."""
        changes = [(w, want) for w, want in self.wanted_trainable() if w.trainable != want]
        for w, want in changes:
            w.set_trainable(want)
        if changes and self.built:
            self.flat_state = FlatState(self.all_layers, self.flat_state.params.dtype)
            self.plan()
            self.on_built()
        return bool(changes)

    def plan(self):
        """Decisions taken from the built layers (a graph: which layers need their input gradient)."""

    def architecture(self):
        """Layer classes, configs without names, and weight shapes/dtypes: what two workers (or a checkpoint and
        a model) must agree on. Automatic names are left out: they depend on how many layers a process made."""
        def strip(config):
            return {k: v for k, v in config.items() if k != "name"}
        return [[type(la).__name__, _jsonable(strip(la.get_config())),
                 [[list(w.value.shape), str(w.value.dtype)] for w in la.weights]] for la in self.all_layers]

    # -- weights ------------------------------------------------------------------------------------------
    @property
    def weights(self):
        return [w for la in self.all_layers for w in la.weights]

    @property
    def trainable_weights(self):
        """As Keras: by the trainable flags now (summary() counts these); what trains follows at compile()."""
        return weights_by_flag(self, True)

    @property
    def non_trainable_weights(self):
        return weights_by_flag(self, False)

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
        for w, v in zip(mine, weights):
            w.value[...] = v
        self.replicas_synced = False       # the next collective call shares rank 0's weights again

    def count_params(self):
        return int(sum(w.value.size for w in self.weights))

    def get_layer(self, name=None, index=None):
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"No layer named {name!r} in model '{self.name}'; layers: {[la.name for la in self.layers]}")

    # -- summary ------------------------------------------------------------------------------------------
    def summary_rows(self):
        """(layer column, output shape column, params column[, connected-to column]) per layer."""
        return [summary.layer_row(la) for la in self.layers]

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False, show_trainable=False,
                layer_range=None):
        """Print the layers, their output shapes and parameter counts, and the totals, as Keras 3 prints them
        (print_fn, if given, receives the whole text). expand_nested, show_trainable and layer_range are accepted
        for Keras's sake and change nothing."""
        if not self.built:
            raise ValueError(f"Model '{self.name}' has not been built yet: give the first layer an input_shape "
                             "(or add an Input), or call build() or fit() first")
        text = summary.summary_text(self, line_length, positions)
        if print_fn is None:
            print(text, end="")
        else:
            print_fn(text)

    # -- saving -------------------------------------------------------------------------------------------
    def save(self, filepath, overwrite=True):
        """Architecture + weights + compile settings + optimizer state in one file, written atomically: a Keras 3
        archive for a '.keras' name (Keras's load_model reads it; needs h5py), else distnet's pickle-free .npz
        (see distnet.checkpoint). Load either with distnet.models.load_model. overwrite=False: an existing file
        is an error (Keras would ask)."""
        saving.check_overwrite(filepath, overwrite)
        return saving.save_model(self, filepath)

    def save_weights(self, filepath, overwrite=True):
        """Keras 3's .weights.h5 layout for a '.weights.h5' name (needs h5py), else distnet's .npz."""
        saving.check_overwrite(filepath, overwrite)
        return saving.save_weights(self, filepath)

    def load_weights(self, filepath):
        return saving.load_weights(self, filepath)

    def to_json(self, **kwargs):
        """The model's Keras 3 config as JSON (what a .keras file holds in config.json); kwargs go to json.dumps.
        Rebuild with distnet.models.model_from_json (or Keras's keras.models.model_from_json)."""
        return saving.to_json(self, **kwargs)


def _jsonable(obj):
    return saving.jsonable(obj)
