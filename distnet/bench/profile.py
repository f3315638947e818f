"""Where a training step's time goes: per layer, forward and backward time, FLOPs and GFLOP/s, the time outside
the layers (loss, optimizer, bookkeeping), and this machine's one-core GEMM throughput as the ceiling.

    distnet-bench engine --model cnn --batch 128 --profile
"""
import math
import time

import numpy as np


def gemm_ceiling(n=2048, repeat=5):
    """GFLOP/s of a float32 n x n x n matrix product on this process's BLAS threads (best of `repeat`). At
    1024 with 3 tries the figure moved by 11% between runs (167-186 GFLOP/s on one core); 2048, best of 5:
    ~0.5 s, within a few percent."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b, out = a.copy(), np.empty_like(a)
    np.matmul(a, b, out=out)
    best = min(_timed(lambda: np.matmul(a, b, out=out)) for _ in range(repeat))
    return 2 * n ** 3 / best / 1e9


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def layer_flops(layer, n):
    """Multiply-adds x 2 of one forward pass over n samples (matrix-product layers only; 0 for the others).
    Backward costs twice as much (gradients of the input and of the weights)."""
    kind = type(layer).__name__
    out = layer.output_shape if not layer.multi_output else layer.output_shape[0]
    if kind == "Dense":
        return 2 * n * math.prod(layer.input_shape[:-1]) * layer.input_shape[-1] * layer.units
    if kind in ("Conv2D", "Conv1D"):
        k = layer.kernel.value
        return 2 * n * math.prod(out[:-1]) * math.prod(k.shape[:-1]) * k.shape[-1]
    if kind in ("LSTM", "GRU", "SimpleRNN"):
        t, f = layer.input_shape[0], layer.input_shape[-1]
        return 2 * n * t * (f + layer.units) * layer.gates * layer.units
    return 0


def computed_flops(layer, n, pool=None, input_grad=True):
    """Multiply-adds x 2 of forward + backward that the engine computes, where `layer_flops` x 3 counts the
    model's: the input gradient only when the layer's backward was asked for it (not the first layer's), and a
    convolution computed with the max pooling after it (`pool`: Conv.call_pooled) only at the output positions
    a window reads (conv2d_1 of the seed CNN: 12x12 of 13x13)."""
    fwd = layer_flops(layer, n)
    if not fwd:
        return 0
    kind = type(layer).__name__
    if pool is not None:
        covered = math.prod(p * o for p, o in zip(pool._pool2, pool._out_hw))
        fwd = fwd * covered // math.prod(layer.output_shape[:-1])
    if kind in ("LSTM", "GRU", "SimpleRNN"):      # the recurrent part of the input gradient is always computed
        f = layer.input_shape[-1]
        return 2 * fwd + (fwd if input_grad else fwd * layer.units // (f + layer.units))
    return fwd * (3 if input_grad else 2)


def profile(model, x, y, batch, steps=10, warmup=3):
    """Rows per layer (name, class, forward_ms, backward_ms, gflop, computed_gflop, gflops) and a summary dict."""
    times = {id(la): [0.0, 0.0] for la in model.layers}
    input_grads = {}
    for la in model.layers:
        _wrap(la, times[id(la)], input_grads)
    step_times, layer_times = [], []         # per timed step: the whole step, and the time inside the layers

    from .. import callbacks

    def in_layers_so_far():
        return sum(v[0] + v[1] for v in times.values())

    class Clock(callbacks.Callback):
        def on_train_batch_begin(self, b, logs=None):
            if b == warmup:
                for v in times.values():
                    v[0] = v[1] = 0.0
            self.t0, self.in0 = time.perf_counter(), in_layers_so_far()

        def on_train_batch_end(self, b, logs=None):
            if b >= warmup:
                step_times.append(time.perf_counter() - self.t0)
                layer_times.append(in_layers_so_far() - self.in0)
    model.fit(x[:batch * (steps + warmup)], y[:batch * (steps + warmup)], batch_size=batch, epochs=1, verbose=0,
              callbacks=[Clock()], shuffle=False)
    rows = []
    body = getattr(model, "body", [])
    # a max pooling computed with the convolution before it (call_pooled): its time is in that layer's row
    timed_in = {id(body[j + 1]): body[j].name for j in getattr(model, "pooled_convs", ())}
    pooled_by = {id(body[j]): body[j + 1] for j in getattr(model, "pooled_convs", ())}
    for la in model.layers:
        fwd, bwd = (t / steps * 1e3 for t in times[id(la)])
        flop = layer_flops(la, batch) * 3 / 1e9            # forward + backward
        done = computed_flops(la, batch, pooled_by.get(id(la)), input_grads.get(id(la), True)) / 1e9
        kind = type(la).__name__ + (f" (in {timed_in[id(la)]})" if id(la) in timed_in else "")
        rows.append({"layer": la.name, "class": kind, "forward_ms": fwd, "backward_ms": bwd,
                     "gflop": flop, "computed_gflop": done,
                     "gflops": flop / ((fwd + bwd) / 1e3) if flop and fwd + bwd else None})
    # medians over the timed steps, as the protocol's figures (a step the shared host slowed down moves a mean);
    # the per-layer rows are means (their sum: the mean time inside the layers, in the summary too)
    step_ms = float(np.median(step_times)) * 1e3
    in_layers = float(np.median(layer_times)) * 1e3
    mean_in_layers = sum(r["forward_ms"] + r["backward_ms"] for r in rows)
    gemm_ms = sum(r["forward_ms"] + r["backward_ms"] for r in rows if r["gflop"]) * in_layers / mean_in_layers \
        if mean_in_layers else 0.0
    total_flop = sum(r["gflop"] for r in rows)
    summary = {"step_ms": step_ms, "outside_layers_ms": step_ms - in_layers, "layers_ms": in_layers,
               "mean_step_ms": float(np.mean(step_times)) * 1e3, "mean_layers_ms": mean_in_layers,
               "outside_gemm_layers_share": 1 - gemm_ms / step_ms, "gflop_per_step": total_flop,
               "achieved_gflops": total_flop / (step_ms / 1e3), "gemm_ceiling_gflops": gemm_ceiling()}
    summary["share_of_ceiling"] = summary["achieved_gflops"] / summary["gemm_ceiling_gflops"]
    # forward + backward alone (the layers' time, without the loss, optimizer and bookkeeping)
    summary["layers_gflops"] = total_flop / (in_layers / 1e3) if in_layers else 0.0
    summary["layers_share_of_ceiling"] = summary["layers_gflops"] / summary["gemm_ceiling_gflops"]
    summary["mean_layers_share_of_ceiling"] = (total_flop / (mean_in_layers / 1e3) / summary["gemm_ceiling_gflops"]
                                               if mean_in_layers else 0.0)
    # the same with the FLOPs the engine computes (computed_flops)
    summary["computed_gflop_per_step"] = computed = sum(r["computed_gflop"] for r in rows)
    summary["layers_computed_gflops"] = computed / (in_layers / 1e3) if in_layers else 0.0
    summary["layers_computed_share_of_ceiling"] = summary["layers_computed_gflops"] / summary["gemm_ceiling_gflops"]
    return rows, summary


def _wrap(layer, acc, input_grads=None):
    """Time the layer's call and backward (or backward_preactivation, the entry of a fused output layer, a max
    pooling's backward_relu_input, call_in_place, a convolution's call_pooled and backward_pooled, which include
    the max pooling after it); nested calls (backward calling backward_preactivation) are counted once."""
    depth = [0]

    def timed(fn, slot, grad_arg=None):
        def run(*args, **kwargs):
            if grad_arg is not None and input_grads is not None:     # whether the input gradient was asked for
                asked = args[grad_arg] if len(args) > grad_arg else kwargs.get("need_input_grad", True)
                input_grads[id(layer)] = input_grads.get(id(layer), False) or bool(asked)
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    acc[slot] += time.perf_counter() - t0
        return run
    layer.call = timed(layer.call, 0)
    layer.backward = timed(layer.backward, 1, 1)
    for entry, slot, grad_arg in (("call_in_place", 0, None), ("backward_preactivation", 1, 1),
                                  ("backward_relu_input", 1, None), ("call_pooled", 0, None),
                                  ("backward_pooled", 1, 2)):  # other entries of a forward and backward
        if hasattr(layer, entry):
            setattr(layer, entry, timed(getattr(layer, entry), slot, grad_arg))
