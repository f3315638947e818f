"""The functional API: `Model(inputs, outputs)` over a graph of layers (Keras's functional Model).

    inputs = distnet.Input((28, 28, 1))
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    h = layers.Add()([h, layers.Conv2D(16, 3, padding="same")(h)])      # a skip connection
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(h))
    model = distnet.Model(inputs, outputs)

The layers run in a topological order (also the order of their weights in the flat buffers, so that an
overlapped allreduce can send the gradients of the last layers while backward continues). Backward visits them
in reverse, summing the gradients of a tensor that feeds several layers.
"""
import numpy as np

from .. import backend
from ..layers import InputLayer
from ..layers.symbolic import SymbolicTensor
from . import summary
from .model import Model as BaseModel


def _as_list(tensors, what):
    many = isinstance(tensors, (list, tuple))
    items = list(tensors) if many else [tensors]
    if not items or not all(isinstance(t, SymbolicTensor) for t in items):
        raise TypeError(f"Model {what} must be symbolic tensors (from distnet.Input(...) and layer calls), "
                        f"received {tensors!r}")
    return items, many


class Model(BaseModel):
    """A model from its input tensor(s) to its output tensor(s); a list of several gives several."""
    default_name = "functional"
    implicit_input = False     # a Sequential without an Input layer makes its own
    def __init__(self, inputs=None, outputs=None, name=None, trainable=True):
        if inputs is None or outputs is None:
            raise TypeError("Model(inputs, outputs) needs both: the Input tensor(s) and the output tensor(s) of a "
                            f"graph of layer calls; received inputs={inputs!r}, outputs={outputs!r}")
        super().__init__(name=name, trainable=trainable)
        self.inputs, self.multiple_inputs = _as_list(inputs, "inputs")
        self.outputs, self.multiple_outputs = _as_list(outputs, "outputs")
        for t in self.inputs:
            if not isinstance(t.layer, InputLayer):
                raise ValueError(f"Model inputs must come from distnet.Input(...); {t.name} is made by "
                                 f"{type(t.layer).__name__} layer '{t.layer.name}'")
        self.order = self._topological_order()
        names = [la.name for la in self.order]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"All layers in a model must have unique names; repeated: {dup}")
        self.build_for(None)

    # -- the graph ----------------------------------------------------------------------------------------
    def _topological_order(self):
        order, state = [], {}

        def visit(layer):
            mark = state.get(id(layer))
            if mark == "done":
                return
            if mark == "open":
                raise ValueError(f"The graph has a cycle through layer '{layer.name}'")
            state[id(layer)] = "open"
            if isinstance(layer, InputLayer):
                if not any(t.layer is layer for t in self.inputs):
                    raise ValueError(f"Graph disconnected: the outputs need Input '{layer.name}', which is not "
                                     f"among the model's inputs {[t.name for t in self.inputs]}")
            else:
                inbound = layer.inbound if isinstance(layer.inbound, list) else [layer.inbound]
                for t in inbound:
                    visit(t.layer)
            state[id(layer)] = "done"
            order.append(layer)

        for t in self.outputs:
            visit(t.layer)
        for t in self.inputs:                     # inputs first, in the order given (unused ones too)
            if id(t.layer) not in state:
                visit(t.layer)
        inputs = [t.layer for t in self.inputs]
        return inputs + [la for la in order if not isinstance(la, InputLayer)]

    @property
    def all_layers(self):
        return self.order

    @property
    def output_layers(self):
        return [t.layer for t in self.outputs]

    @property
    def output_layer(self):
        return self.outputs[-1].layer

    def build_layers(self, input_shape):
        # every layer was built when it was called on symbolic tensors
        shapes = [t.shape[1:] for t in self.outputs]
        return shapes if self.multiple_outputs else shapes[0]

    def build_for(self, input_shape):
        super().build_for(tuple(t.shape[1:] for t in self.inputs) if self.multiple_inputs
                          else self.inputs[0].shape[1:])
        self.input_shape = [t.shape for t in self.inputs] if self.multiple_inputs else self.inputs[0].shape
        self.output_shape = [t.shape for t in self.outputs] if self.multiple_outputs else self.outputs[0].shape
        self.plan()

    def plan(self):
        first_trainable = {}
        seen = False
        for la in self.order:                      # does any layer before this one hold trainable weights?
            first_trainable[id(la)] = seen
            seen = seen or any(w.trainable for w in la.weights)     # as compiled, not as flagged since
        self.upstream_trainable = first_trainable
        self.body = self.order[len(self.inputs):]
        self.chain = self._is_chain()
        self.body_needs = [first_trainable[id(la)] for la in self.body]     # the chain's per-layer need flags
        # a ReLU layer followed only by a max pooling: the pooling masks its (4x smaller) gradient with the
        # ReLU's derivative at each window's maximum, and the ReLU layer's own mask pass over its output is skipped
        self.relu_pools = {j for j in range(1, len(self.body)) if self.chain
                           and getattr(self.body[j], "takes_relu_gradient", False)
                           and getattr(self.body[j - 1], "activation", None) is not None
                           and self.body[j - 1].activation.name == "relu"
                           and hasattr(self.body[j - 1], "backward_preactivation")
                           and not self.body[j - 1].keep_preactivation}
        # a convolution whose output only a disjoint max pooling reads: the two run as one (index of the conv)
        self.pooled_convs = {j for j in range(len(self.body) - 1) if self.chain
                             and hasattr(self.body[j], "pools_with") and self.body[j].pools_with(self.body[j + 1])}
        self.owned_inputs = self._owned_inputs()

    def _owned_inputs(self):
        """{index in self.order: positions of the inputs that layer may overwrite}: the inputs it is the only
        reader of, made by a layer whose backward does not read that output (`output_reusable`: a linear
        convolution, BatchNormalization, Add), and not a model output. Such a layer then runs `call_in_place`
        (a ReLU over its input's buffer, BatchNormalization centring its input in place, Add summing into an
        input): fewer buffers written cold, a smaller working set. Decided here, per model, because a layer may
        also be used in models where another layer reads the same tensor."""
        readers = {}
        for la in self.body:
            for t in _inbound(la):
                readers[(id(t.layer), t.index)] = readers.get((id(t.layer), t.index), 0) + 1
        for t in self.outputs:
            readers[(id(t.layer), t.index)] = readers.get((id(t.layer), t.index), 0) + 2     # never overwritten
        owned = {}
        for i, la in enumerate(self.order):
            if not getattr(la, "overwrites_input", False) or isinstance(la, InputLayer):
                continue
            free = tuple(k for k, t in enumerate(_inbound(la)) if readers[(id(t.layer), t.index)] == 1
                         and not t.layer.multi_output and getattr(t.layer, "output_reusable", False))
            if free:
                owned[i] = free
        return owned

    def ensure_built(self, xs, what):
        if not self.built:                  # a Sequential without a declared input shape builds on first data
            if len(xs) != 1:
                raise ValueError(f"Model '{self.name}' has one input, received {len(xs)} input arrays")
            self.build_for(xs[0].shape[1:])
            return
        if len(xs) != len(self.inputs):
            raise ValueError(f"Model '{self.name}' has {len(self.inputs)} input(s) {[t.name for t in self.inputs]}, "
                             f"received {len(xs)} input array(s) in {what}")
        for t, x in zip(self.inputs, xs):
            if x.shape[1:] != t.shape[1:]:
                self.shape_error(t, x, what)

    def shape_error(self, t, x, what):
        """Name the first layer that reads this input when only the last dimension is off (Keras's message)."""
        readers = [la for la in self.order if la.inbound is t]
        expected = t.shape[1:]
        if self.implicit_input and readers and x.ndim >= 2 and x.shape[-1] != expected[-1]:
            first = readers[0]
            raise ValueError(f"{type(first).__name__} layer '{first.name}' expects input with last dimension "
                             f"{expected[-1]}, received shape {x.shape}")
        raise ValueError(f"Model '{self.name}' expects input of shape {t.shape} (Input '{t.name}') in {what}, "
                         f"received shape {x.shape}")

    def input_keeps_integers(self):
        """Per input: True when every layer reading it takes integer ids (Embedding), so integer data is passed
        as it is instead of being cast to float (exact beyond 2**24)."""
        out = []
        for t in self.inputs:
            readers = [la for la in self.order
                       if la.inbound is t or (isinstance(la.inbound, list) and any(u is t for u in la.inbound))]
            out.append(bool(readers) and all(la.integer_input for la in readers))
        return out

    # -- running ------------------------------------------------------------------------------------------
    def _is_chain(self):
        """True when every layer reads the one before it (a Sequential, or a graph shaped like one): forward and
        backward then take a plain loop, with no per-step bookkeeping of tensors."""
        body = self.order[len(self.inputs):]
        if self.multiple_inputs or self.multiple_outputs or not body or self.outputs[0].layer is not body[-1]:
            return False
        prev = self.order[:len(self.inputs)] + body
        return all(not la.multi_input and not la.multi_output and isinstance(la.inbound, SymbolicTensor)
                   and la.inbound.layer is prev[i] for i, la in enumerate(body))

    def forward(self, x, training=False):
        """x: one array, or a list with one array per input -> one array, or a list per output."""
        with backend.ufunc_buffer():
            return self._forward(x, training)

    def _forward(self, x, training):
        if self.chain:
            if self.pooled_convs:
                return self._chain_forward_pooled(x, training)
            owned, first = self.owned_inputs, len(self.inputs)
            for j, la in enumerate(self.body):
                x = la.call_in_place(x, training, owned[j + first]) if j + first in owned else \
                    la.call(x, training=training)
            return x
        xs = x if self.multiple_inputs else [x]
        values = {}
        for t, v in zip(self.inputs, xs):
            values[(id(t.layer), 0)] = v
        owned = self.owned_inputs
        for i in range(len(self.inputs), len(self.order)):
            la = self.order[i]
            inbound = la.inbound
            args = [values[(id(t.layer), t.index)] for t in inbound] if la.multi_input \
                else values[(id(inbound.layer), inbound.index)]
            out = la.call_in_place(args, training, owned[i]) if i in owned else la.call(args, training=training)
            for i, o in enumerate(out if la.multi_output else [out]):
                values[(id(la), i)] = o
        outs = [values[(id(t.layer), t.index)] for t in self.outputs]
        return outs if self.multiple_outputs else outs[0]

    def backward(self, grad, fused=False, ready=None):
        """grad: d(loss)/d(output) (a list per output for several); fused: per output, whether the gradient
        enters at the output layer's logits."""
        with backend.ufunc_buffer():
            self._backward(grad, fused, ready)

    def _backward(self, grad, fused, ready):
        if self.chain:
            self._chain_backward(grad, fused, ready)
            return
        grads = grad if self.multiple_outputs else [grad]
        fused = fused if isinstance(fused, (list, tuple)) else [fused] * len(grads)
        pending, entry = {}, {}
        for t, g, f in zip(self.outputs, grads, fused):
            if f:
                entry[id(t.layer)] = g          # enters at the logits: the layer's activation is skipped
            else:
                _accumulate(pending, (id(t.layer), t.index), g)
        offsets = self.flat_state.layer_offsets
        for i in range(len(self.order) - 1, len(self.inputs) - 1, -1):
            la = self.order[i]
            need = self.upstream_trainable[id(la)]
            if id(la) in entry:
                g_in = la.backward_preactivation(entry[id(la)], need)
            else:
                outs = [pending.pop((id(la), k), None) for k in range(len(la.output_shape) if la.multi_output
                                                                       else 1)]
                if all(g is None for g in outs):
                    g_in = None                  # nothing downstream needs this layer (cannot happen in a model)
                else:
                    g_in = la.backward(outs if la.multi_output else outs[0], need)
            if ready is not None and i in offsets:
                ready(offsets[i])
            if not need or g_in is None:
                continue
            inbound = la.inbound if la.multi_input else [la.inbound]
            g_list = g_in if la.multi_input else [g_in]
            for k, (t, g) in enumerate(zip(inbound, g_list)):
                if g is not None and not isinstance(t.layer, InputLayer):
                    # a merge layer may hand one array to several inputs (each producer may overwrite it): copy it
                    # then; Add and the others return a buffer per input, which need no second copy
                    shared = any(h is not None and np.may_share_memory(g, h) for h in g_list[:k])
                    _accumulate(pending, (id(t.layer), t.index), np.array(g) if shared else g)

    def _chain_forward_pooled(self, x, training):
        body, pooled, j = self.body, self.pooled_convs, 0
        while j < len(body):
            if j in pooled:
                x = body[j].call_pooled(x, body[j + 1], training)
                j += 2
            else:
                x = body[j].call(x, training=training)
                j += 1
        return x

    def _chain_backward(self, grad, fused, ready):
        body, needs, first = self.body, self.body_needs, len(self.inputs)
        offsets = self.flat_state.layer_offsets if ready is not None else None
        last, relu_pools, pooled = len(body) - 1, self.relu_pools, self.pooled_convs
        j = last
        while j >= 0:
            la, need = body[j], needs[j]
            if j - 1 in pooled:                 # the pooling of a fused pair: both layers' backward at once
                j -= 1
                la, need = body[j], needs[j]
                grad = la.backward_pooled(grad, body[j + 1], need)
            elif (j == last and fused) or j + 1 in relu_pools:
                grad = la.backward_preactivation(grad, need)
            elif j in relu_pools and need:
                grad = la.backward_relu_input(grad)
            else:
                grad = la.backward(grad, need)
            if ready is not None and j + first in offsets:
                ready(offsets[j + first])
            if not need:
                return
            j -= 1

    # -- description --------------------------------------------------------------------------------------
    def layers_by_depth(self):
        """[(layer, depth)] in the order of Keras's `model.layers` for this graph (map_graph in Keras's
        ops/function.py), Input layers included: depth is the longest path from the layer to an output; deepest
        first, ties in the order a depth-first walk from the outputs first reaches them. Keras numbers the groups
        of a weights file and lists a summary in this order, which is not distnet's run order."""
        first_seen, post, done = {}, [], set()

        def walk(layer):
            if id(layer) in done:
                return
            first_seen.setdefault(id(layer), len(first_seen))
            for t in _inbound(layer):
                walk(t.layer)
            done.add(id(layer))
            post.append(layer)
        for t in self.outputs:
            walk(t.layer)
        depth = {}
        for layer in reversed(post):             # every reader of a layer comes before it
            d = depth.setdefault(id(layer), 0)
            for t in _inbound(layer):
                depth[id(t.layer)] = max(depth.get(id(t.layer), 0), d + 1)
        for t in self.inputs:                    # inputs no output needs: depth 0, first among depth 0
            if id(t.layer) not in depth:
                depth[id(t.layer)], first_seen[id(t.layer)] = 0, -1
                post.append(t.layer)
        return [(la, depth[id(la)]) for la in sorted(post, key=lambda la: (-depth[id(la)], first_seen[id(la)]))]

    def summary_rows(self):
        """Keras's rows for a graph, in its layer order: with a Connected-to column, unless the graph is a chain
        (one layer per depth, none reading several tensors), which Keras prints as a Sequential's table."""
        ranked = self.layers_by_depth()
        depths = [d for _, d in ranked]
        chain = len(set(depths)) == len(depths) and all(len(_inbound(la)) <= 1 for la, _ in ranked)
        rows = []
        for la, _ in ranked:
            row = summary.layer_row(la)
            connected = ", ".join(f"{t.layer.name}[0][{t.index}]" for t in _inbound(la)) or "-"
            rows.append(row if chain else row + (connected,))
        return rows

    def get_config(self):
        def ref(t):
            return [t.layer.name, 0, t.index]
        layers = []
        for la in self.order:
            layers.append({"class_name": type(la).__name__, "name": la.name, "config": la.get_config(),
                           "inbound": [ref(t) for t in _inbound(la)], "multi_input": bool(la.multi_input)})
        return {"name": self.name, "trainable": self.trainable, "layers": layers,
                "input_layers": [ref(t) for t in self.inputs], "output_layers": [ref(t) for t in self.outputs],
                "multiple_inputs": self.multiple_inputs, "multiple_outputs": self.multiple_outputs}

    @classmethod
    def from_config(cls, config):
        """A model from get_config()'s dict, or from a Keras 3 functional model's get_config() (translated)."""
        from ..layers import get_layer_class
        from ..layers.core import Input
        if any("inbound_nodes" in spec for spec in config.get("layers", [])):
            from .keras_graph import functional_from_keras
            return functional_from_keras(config)
        made = {}
        for spec in config["layers"]:
            cfg = dict(spec["config"])
            if spec["class_name"] == "InputLayer":
                made[spec["name"]] = [Input(shape=tuple(cfg["shape"]), name=cfg.get("name"), dtype=cfg.get("dtype"))]
                continue
            layer = get_layer_class(spec["class_name"]).from_config(cfg)
            inbound = [made[n][i] for n, _, i in spec["inbound"]]
            out = layer(inbound if spec["multi_input"] else inbound[0])
            made[spec["name"]] = out if isinstance(out, list) else [out]

        def pick(refs, many):
            tensors = [made[n][i] for n, _, i in refs]
            return tensors if many else tensors[0]
        return cls(pick(config["input_layers"], config["multiple_inputs"]),
                   pick(config["output_layers"], config["multiple_outputs"]),
                   name=config.get("name"), trainable=config.get("trainable", True))


def _inbound(layer):
    """The tensors a layer reads in its graph, as a list (none for an Input layer)."""
    return [] if layer.inbound is None else layer.inbound if isinstance(layer.inbound, list) else [layer.inbound]


def _accumulate(pending, key, g):
    """Add a gradient for one tensor: the first is kept as is, later ones are summed into it in place (it
    belongs to the tensor's producer, which may overwrite it anyway), or into a new array when it is read-only
    (a broadcast view) or of another shape or type."""
    have = pending.get(key)
    if have is None:
        pending[key] = g
    elif have.flags.writeable and have.shape == np.broadcast_shapes(have.shape, g.shape) and \
            have.dtype == np.result_type(have, g):
        np.add(have, g, out=have)
    else:
        pending[key] = have + g
