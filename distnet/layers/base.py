"""The Layer base class: Keras's build/call split plus an explicit backward.

A layer owns `Weight`s. Until a model adopts them, each weight is its own array; a model then moves every
trainable weight into ONE flat parameter buffer and points `weight.value` / `weight.grad` at views of it, so
an optimizer step or an allreduce is a single operation over the whole model (see `flatten_values`, `flatten_grads`).
"""
import math
import re
import threading
from collections import defaultdict

import numpy as np

from .. import activations, backend, initializers, regularizers
from . import symbolic

_name_counts = defaultdict(int)
_scratch = threading.local()       # the buffers Layer.scratch shares between layers, one set per calling thread
_HUGE_PAGE = 1 << 21


def _huge_page_bytes(span):
    """span bytes (a multiple of 2 MiB) starting on a 2 MiB boundary, in an allocation NumPy advises the kernel
    to back with transparent huge pages (it does so from 4 MiB on); its untouched pages stay virtual."""
    raw = np.empty(span + _HUGE_PAGE, np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    return raw[start:start + span]


class _Arena:
    """Buffers of 128 KiB - 1 MiB packed one after another into 8 MiB huge-page spans (rounding each up to a
    page of its own would take up to 16x its size). A span is freed when the last buffer in it is."""
    span = 8 << 20

    def __init__(self):
        self._bytes, self._used, self._lock = None, 0, threading.Lock()

    def take(self, nbytes):
        nbytes = -(-nbytes // 64) * 64              # each buffer on a cache line of its own
        with self._lock:
            if self._bytes is None or self._used + nbytes > self._bytes.size:
                self._bytes, self._used = _huge_page_bytes(self.span), 0
            out = self._bytes[self._used:self._used + nbytes]
            self._used += nbytes
        return out


_arena = _Arena()


def page_aligned_empty(size, dtype, small=1 << 17, large=1 << 20):
    """np.empty(size, dtype) in memory the kernel may back with 2 MiB (transparent huge) pages: from `large`
    bytes on a span of whole pages of its own, from `small` bytes packed with others in a shared span. A
    layer's buffers are walked once per step, long after their pages left the TLB, and with 4 KiB pages (in a
    VM, two-level page walks) that cost the ResNet-20 step ~10% (one thread, batch 32: 156 -> 150 ms with the
    buffers of >= 1 MiB on huge pages, then -> 147 with those of >= 128 KiB). Without huge pages nothing
    changes."""
    dtype = np.dtype(dtype)
    nbytes = size * dtype.itemsize
    if nbytes < small:
        return np.empty(size, dtype)
    if nbytes < large:
        return _arena.take(nbytes)[:nbytes].view(dtype)
    return _huge_page_bytes(-(-nbytes // _HUGE_PAGE) * _HUGE_PAGE)[:nbytes].view(dtype)


def page_aligned_zeros(size, dtype):
    """np.zeros(size, dtype) in memory the kernel may back with huge pages (page_aligned_empty)."""
    out = page_aligned_empty(size, dtype)
    out.fill(0)
    return out


def unique_name(prefix):
    """Keras-style automatic names: dense, dense_1, dense_2, ..."""
    n = _name_counts[prefix]
    _name_counts[prefix] += 1
    return prefix if n == 0 else f"{prefix}_{n}"


def snake_case(name):
    """Keras's to_snake_case: Conv2D -> conv2d, MaxPooling2D -> max_pooling2d."""
    s = re.sub(r"(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


class Weight:
    """One named tensor of a layer: `value`, its gradient `grad` (None when frozen), and its penalty.
    `declared`: whether the layer made it trainable (a kernel; not BatchNormalization's moving statistics), so
    that freezing and unfreezing the layer (Layer.trainable) never makes such statistics trainable."""
    __slots__ = ("name", "value", "grad", "trainable", "regularizer", "declared")

    def __init__(self, name, value, trainable=True, regularizer=None, declared=None):
        self.name, self.value, self.trainable, self.regularizer = name, value, trainable, regularizer
        self.declared = trainable if declared is None else declared
        self.grad = np.zeros_like(value) if trainable else None

    def set_trainable(self, trainable):
        """Whether the optimizer updates it (a model's flat buffers follow at its next compile())."""
        if trainable != self.trainable:
            self.trainable, self.grad = trainable, (np.zeros_like(self.value) if trainable else None)

    @property
    def shape(self):
        return self.value.shape

    def __repr__(self):
        return f"<Weight {self.name} shape={self.value.shape} dtype={self.value.dtype}>"


def flatten_values(weights, dtype):
    """Move the values of `weights` into ONE flat buffer and point each `weight.value` at its view of it."""
    flat = page_aligned_empty(sum(w.value.size for w in weights), dtype)
    offset = 0
    for w in weights:
        size, shape = w.value.size, w.value.shape
        flat[offset:offset + size] = w.value.ravel()
        w.value = flat[offset:offset + size].reshape(shape)
        offset += size
    return flat


def flatten_grads(weights, dtype, extra=0):
    """One flat gradient buffer for `weights` (views bound to `weight.grad`), plus `extra` trailing slots: the
    reducer carries the step's sample count and metric sums there, in the same allreduce as the gradients."""
    flat = page_aligned_zeros(sum(w.value.size for w in weights) + extra, dtype)
    offset = 0
    for w in weights:
        size = w.value.size
        w.grad = flat[offset:offset + size].reshape(w.value.shape)
        offset += size
    return flat


def weights_by_flag(owner, trainable):
    """owner.weights (a layer's or a model's) that its trainable flags train (trainable=True) or not."""
    wanted = {id(w) for w, want in owner.wanted_trainable() if want}
    return [w for w in owner.weights if (id(w) in wanted) == trainable]


def segments(weights):
    """[(offset, size)] of each weight inside the flat buffer built from `weights`."""
    out, offset = [], 0
    for w in weights:
        out.append((offset, w.value.size))
        offset += w.value.size
    return out


def normalize_tuple(value, n, arg, layer):
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, (int, np.integer)) and v > 0 for v in value):
        raise ValueError(f"{layer} expects {arg} to be an int or a tuple of {n} positive ints, received {value!r}")
    return tuple(int(v) for v in value)


class Layer:
    """Base layer. Subclasses implement `build(input_shape)`, `call(x, training)`, `backward(grad)` and
    `compute_output_shape(input_shape)`; shapes exclude the batch dimension, as Keras's `input_shape` does.

    Several inputs or outputs: a layer with `multi_input = True` (a class attribute: the merge layers) takes a
    list of shapes in `build_for`, a list of arrays in `call`, and returns a list of input gradients from
    `backward`. A layer whose `multi_output` is True (an instance attribute: an RNN with return_state=True)
    returns a list of shapes from `compute_output_shape`/`build_for` and a list of arrays from `call`, and its
    `backward` receives a list with one gradient per output, None for an output that got none (zero)."""
    multi_input = False     # True for layers that take a list of tensors (merge layers)
    multi_output = False    # True for layers that return a list of tensors (an RNN with return_state)
    uses_sample_ids = False     # True for layers whose randomness follows the samples (set_batch_context)
    # True for layers whose output for a sample depends on that sample alone, the same however the batch is cut
    # (no batch statistics, no random draws): a model of such layers may run a large batch in cache-sized blocks
    per_sample = False
    integer_input = False   # True for layers that read integer ids (Embedding): their input is not cast to float
    generator = None    # a layer that draws random numbers in training (Dropout) keeps its np.random.Generator
    # here, so that checkpoints can save and restore where it is
    # True for layers whose backward never reads the array their call returned (a model may then let that
    # array's only reader overwrite it), and for layers with a `call_in_place` that may overwrite their input
    output_reusable = False
    overwrites_input = False

    def __init__(self, name=None, trainable=True, input_shape=None, input_dim=None, batch_input_shape=None,
                 dtype=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword argument(s): {sorted(kwargs)}")
        self.name = name or unique_name(snake_case(type(self).__name__))
        self.trainable = trainable
        self.dtype = dtype or backend.floatx()
        self._weights = []
        self.built = False
        self.input_shape = None   # without the batch dimension
        self.output_shape = None
        if batch_input_shape is not None:
            input_shape = tuple(batch_input_shape)[1:]
        if input_dim is not None:
            input_shape = (input_dim,)
        self.declared_input_shape = None if input_shape is None else _check_shape(input_shape, self)

    # -- construction -------------------------------------------------------------------------------------
    def add_weight(self, name, shape, initializer="zeros", regularizer=None, trainable=True):
        # C order, so a reshape of value is a view (orthogonal init of a wide matrix comes out transposed)
        value = np.ascontiguousarray(initializers.get(initializer)(tuple(shape), self.dtype))
        w = Weight(f"{self.name}/{name}", value, trainable=trainable and self.trainable,
                   regularizer=regularizers.get(regularizer), declared=trainable)
        self._weights.append(w)
        return w

    def build(self, input_shape):
        pass

    def build_for(self, input_shape):
        """Build once for `input_shape` (no batch dim; a list of shapes for a multi-input layer); return the
        output shape (a list of shapes for a multi-output layer)."""
        input_shape = tuple(tuple(s) for s in input_shape) if self.multi_input else tuple(input_shape)
        if not self.built:
            self.validate_input_shape(input_shape)
            self.input_shape = input_shape
            self.build(input_shape)
            self.built = True
            shape = self.compute_output_shape(input_shape)
            self.output_shape = [tuple(s) for s in shape] if self.multi_output else tuple(shape)
        elif input_shape != self.input_shape:
            self._shape_error(input_shape)
        return self.output_shape

    def validate_input_shape(self, input_shape):
        """Raise a clear error if the layer cannot take inputs of this shape (no batch dim)."""

    def compute_output_shape(self, input_shape):
        return input_shape

    # -- running ------------------------------------------------------------------------------------------
    inbound = None      # in a functional graph: the SymbolicTensor(s) this layer reads (see symbolic.py)

    def __call__(self, x, training=False):
        """On symbolic tensors: add this layer to a functional graph. On arrays: run it once (a copy)."""
        if symbolic.is_symbolic(x):
            return symbolic.connect(self, x)
        x = [np.asarray(a) for a in x] if self.multi_input else np.asarray(x)
        if not self.built:
            self.build_for([a.shape[1:] for a in x] if self.multi_input else x.shape[1:])
        self.check_input(x)
        out = self.call(x, training=training)
        # a copy: call() may return a reused workspace
        return [np.array(o) for o in out] if self.multi_output else np.array(out)

    def workspace(self, name, shape, dtype=None):
        """A buffer owned by this layer, reused step after step (no per-step allocation or page faults in steady
        state): a view of the first elements of the largest one asked for under this name, so batches (or
        blocks of a batch) of several sizes share it. Valid until the layer's next call/backward; `_ws[name]`
        is the view last handed out."""
        ws = self.__dict__.setdefault("_ws", {})
        buf = ws.get(name)
        if buf is not None and buf.shape == shape and (dtype is None or buf.dtype == dtype):
            return buf                # (dtype None: the layer's own, which every buffer of it was made in)
        store = self.__dict__.setdefault("_ws_store", {})
        dtype = np.dtype(dtype or self.dtype)
        size = math.prod(shape)
        flat = store.get(name)
        if flat is None or flat.size < size or flat.dtype != dtype:
            flat = store[name] = page_aligned_empty(size, dtype)
        buf = ws[name] = flat[:size].reshape(shape)
        return buf

    def scratch(self, name, shape, dtype=None):
        """A buffer for use within ONE call or backward of a layer (not kept in between), shared under `name` by
        every layer that runs in this thread: the layers of a model take turns with it, so it is still in the
        cache when the next layer writes it, where a buffer of each layer's own has not been touched since the
        step before (measured: a convolution's padded output gradient, 2.4 MB per ResNet stage-1 layer). A view
        of the first elements of the largest buffer asked for under the name and type."""
        local = _scratch.__dict__
        if "views" not in local:
            local["views"], local["buffers"] = {}, {}
        views, store = local["views"], local["buffers"]
        key = (name, shape, dtype or self.dtype)
        hit = views.get(key)          # the view handed out last time, while its buffer is still the current one
        if hit is not None and store.get(hit[0]) is hit[1]:
            return hit[2]
        dt = np.dtype(key[2])
        size = math.prod(shape)
        flat = store.get((name, dt))
        if flat is None or flat.size < size:
            flat = store[(name, dt)] = page_aligned_empty(size, dt)
        view = flat[:size].reshape(shape)
        views[key] = ((name, dt), flat, view)
        return view

    def tiled(self, name, v, k):
        """The per-channel vector v repeated k times, in a workspace (np.tile allocates, ~30 us a call)."""
        buf = self.workspace("tiled_" + name, (k, v.shape[-1]))
        buf[...] = v
        return buf.reshape(-1)

    def add_channels(self, z, v, name="bias"):
        """z[..., c] += v for a C-contiguous z: seen as rows of k*c elements with v tiled k times, so NumPy's
        inner loops run over long rows (over a convolution's 16-64 channels alone they are ~4x slower)."""
        c = v.shape[0]
        positions = z.size // c
        cache = self.__dict__.setdefault("_row_positions", {})
        k = cache.get(positions)
        if k is None:                 # the largest divisor of `positions` with rows of at most 8192 elements
            k = cache[positions] = next(d for d in range(max(1, min(positions, 8192 // c)), 0, -1)
                                        if positions % d == 0)
        rows = z.reshape(-1, k * c)
        np.add(rows, self.tiled(name, v, k), out=rows)
        return z

    def check_input(self, x):
        if self.multi_input:
            if tuple(a.shape[1:] for a in x) != self.input_shape:
                self._shape_error([a.shape[1:] for a in x], [a.shape for a in x])
        elif x.shape[1:] != self.input_shape:
            self._shape_error(x.shape[1:], x.shape)

    def _shape_error(self, got, full=None):
        if self.multi_input:
            want = [(None,) + tuple(s) for s in self.input_shape]
            full = [tuple(f) for f in full] if full is not None else [(None,) + tuple(g) for g in got]
            raise ValueError(f"{type(self).__name__} layer '{self.name}' expects inputs of shapes {want}, "
                             f"received shapes {full}")
        full = full if full is not None else (None,) + tuple(got)
        raise ValueError(f"{type(self).__name__} layer '{self.name}' expects input of shape "
                         f"{(None,) + tuple(self.input_shape)}, received shape {tuple(full)}")

    def call(self, x, training=False):
        raise NotImplementedError  # abstract

    def call_in_place(self, x, training, owned):
        """call(x) that may overwrite the inputs at positions `owned` (0 for a single-input layer): the model
        passes those it knows no other layer reads (see `Model._owned_inputs`)."""
        return self.call(x, training=training)

    def backward(self, grad, need_input_grad=True):
        """grad: d(sum of losses)/d(output); the layer may overwrite it. Writes parameter grads into
        weight.grad (overwriting) and returns d/d(input), or None when need_input_grad is False."""
        raise NotImplementedError  # abstract

    # -- weights ------------------------------------------------------------------------------------------
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        """Freeze (False) or unfreeze the layer, as Keras: the model that holds it updates its weights, or stops,
        from its next compile() on (a model compiled before keeps what it was compiled with, as in Keras; two
        models over the same layers, an encoder made beside its autoencoder, each train what they were compiled
        with). A wrapper sets the layers it wraps too."""
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{type(self).__name__} layer '{self.name}': trainable must be True or False, "
                            f"received {value!r}")
        self._trainable = bool(value)
        for inner in self.inner_layers():
            inner.trainable = value

    def inner_layers(self):
        """The layers a wrapper runs (their weights are in its `weights`); none for other layers."""
        return []

    def wanted_trainable(self):
        """[(weight, whether it should train)] by the trainable flags of this layer and any it wraps."""
        own = [(w, w.declared and self.trainable) for w in self._weights]
        return own + [(w, t and self.trainable) for inner in self.inner_layers() for w, t in inner.wanted_trainable()]

    @property
    def weights(self):
        """Every Weight of the layer in Keras's order; a wrapper lists its inner layers' (the rest follows)."""
        return list(self._weights)

    @property
    def trainable_weights(self):
        """As Keras: the weights the trainable flags (this layer's, and any it wraps) train, from the moment they
        are set; a model takes them at its next compile() (each Weight's `trainable` is what it trains now)."""
        return weights_by_flag(self, True)

    @property
    def non_trainable_weights(self):
        return weights_by_flag(self, False)

    def get_weights(self):
        return [w.value.copy() for w in self.weights]

    def set_weights(self, values):
        mine = self.weights
        if len(values) != len(mine):
            raise ValueError(f"Layer '{self.name}' has {len(mine)} weights, received a list of {len(values)}")
        for w, v in zip(mine, values):
            v = np.asarray(v)
            if v.shape != w.value.shape:
                raise ValueError(f"Layer '{self.name}' weight '{w.name}' has shape {w.value.shape}, "
                                 f"received shape {v.shape}")
            w.value[...] = v

    def count_params(self):
        return int(sum(w.value.size for w in self.weights))

    # -- config -------------------------------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self.dtype}
        if self.declared_input_shape is not None:
            config["input_shape"] = list(self.declared_input_shape)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name!r} built={self.built}>"


def sum_rows(g2, out, layer, slot=0):
    """out[...] = g2.sum(axis=0) for g2: (rows, cols), as a BLAS matrix-vector product with a ones vector:
    ~8x faster than NumPy's axis-0 reduction on the (batch*h*w, filters) gradients of a convolution. The ones
    vector is cached on the layer, one per `slot` (one per intra-op thread), as long as the longest asked for."""
    cache = layer.__dict__.setdefault("_ones", {})
    ones = cache.get(slot)
    if ones is None or ones.shape[0] < g2.shape[0] or ones.dtype != g2.dtype:
        ones = cache[slot] = np.ones(g2.shape[0], g2.dtype)
    return np.dot(ones if ones.shape[0] == g2.shape[0] else ones[:g2.shape[0]], g2, out=out)


class ActivatedLayer(Layer):
    """A layer computing z = f(x) then a = activation(z). The model can ask for the gradient to enter at z
    (`backward_preactivation`) so softmax/sigmoid + cross-entropy are differentiated as one stable unit."""
    keep_preactivation = False     # set by the model on an output layer whose logits feed the loss

    def _kernel_options(self, activation, use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
                        bias_regularizer):
        """The Keras arguments shared by layers with a kernel and a bias (Dense, Conv2D)."""
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)

    def _kernel_config(self):
        return {"activation": activations.serialize(self.activation), "use_bias": self.use_bias,
                "kernel_initializer": initializers.serialize(self.kernel_initializer),
                "bias_initializer": initializers.serialize(self.bias_initializer),
                "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": regularizers.serialize(self.bias_regularizer)}

    def _activate(self, z, owned=True):
        """a = activation(z). When the layer owns z's buffer and the activation's derivative needs only its
        output, a overwrites z in place (one buffer, no temporary)."""
        act = self.activation
        if act.from_output and not self.keep_preactivation:
            self._z = None
            self._a = act.forward(z, out=z if owned else self.workspace("a", z.shape, z.dtype))
        else:
            self._z = z
            self._a = act.forward(z)
        return self._a

    @property
    def preactivation(self):
        return self._z

    def backward(self, grad, need_input_grad=True):
        act = self.activation
        if act.name == "relu":
            grad = act.backward(None, self._a, grad, mask=self.scratch("relu_mask", self._a.shape, bool))
        else:
            grad = act.backward(self._z, self._a, grad)
        return self.backward_preactivation(grad, need_input_grad)

    def backward_preactivation(self, grad_z, need_input_grad=True):
        raise NotImplementedError  # abstract


def _check_shape(shape, layer):
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"{type(layer).__name__} expects input_shape as a tuple of positive ints "
                         f"(without the batch dimension), received {shape!r}")
    return tuple(int(d) for d in shape)
