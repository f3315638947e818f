"""The alpha-beta cost model of a data-parallel step, fitted on this machine and projected onto real networks.

Ring allreduce of m bytes over n workers: T(n, m) = 2(n-1)*alpha + 2(n-1)/n * m * beta
(alpha: per-message latency; beta: seconds per byte, including the reduction). A weak-scaling step on n workers
takes t_compute + T(n, gradient bytes) without overlap, so efficiency(n) = t_compute / (t_compute + T).
"""
import os
import sys

import numpy as np

# Typical per-message latency (s) and inverse bandwidth (s/byte) of TCP over Ethernet at these line rates;
# numbers to make predictions comparable, not measurements.
NETWORKS = {
    "10gbit": {"alpha": 50e-6, "beta": 1 / 1.25e9},
    "25gbit": {"alpha": 25e-6, "beta": 1 / 3.125e9},
    "100gbit": {"alpha": 10e-6, "beta": 1 / 12.5e9},
}
COMPRESSION = {None: 1.0, "none": 1.0, "fp16": 0.5, "bf16": 0.5}


def ring_time(n, nbytes, alpha, beta, host_beta=0.0):
    """Seconds of a ring allreduce. host_beta: seconds per byte that ALL workers together send, for workers that
    share one machine's CPUs for their network stack (the emulated cluster: 2(n-1)*m bytes cross its links per
    allreduce); 0 for real nodes, whose network stacks run side by side."""
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta + 2 * (n - 1) * nbytes * host_beta


def hierarchical_time(nodes, per_node, nbytes, alpha, beta, local_beta):
    """Seconds of the hierarchical allreduce: a reduce and a broadcast inside each node (binary trees over shared
    memory, local_beta seconds per byte per level), and a ring between the `nodes` leaders. Against a flat ring
    over nodes * per_node ranks, whose slowest (network) hops carry 2(P-1)/P of the buffer in 2(P-1) messages,
    the network part shrinks to 2(nodes-1)/nodes of the buffer in 2(nodes-1) messages."""
    levels = int(np.ceil(np.log2(per_node))) if per_node > 1 else 0
    return 2 * levels * nbytes * local_beta + ring_time(nodes, nbytes, alpha, beta)


def _terms(r):
    n, m = r["n"], r["bytes"]
    return [2 * (n - 1), 2 * (n - 1) / n * m, 2 * (n - 1) * m]


def _nonnegative_fit(rows, columns):
    """Least squares over `columns` of the terms with every coefficient >= 0 (the best over column subsets)."""
    import itertools
    t = np.array([r["seconds"] for r in rows])
    best = None
    for k in range(len(columns), 0, -1):
        for subset in itertools.combinations(columns, k):
            a = np.array([[_terms(r)[c] for c in subset] for r in rows])
            coef, *_ = np.linalg.lstsq(a, t, rcond=None)
            if (coef < 0).any():
                continue
            err = float(np.sum(((a @ coef) - t) ** 2 / t ** 2))      # relative: small and large buffers alike
            if best is None or err < best[0]:
                best = (err, dict(zip(subset, map(float, coef))))
    return [best[1].get(c, 0.0) for c in range(3)]


def fit_alpha_beta(records):
    """Least-squares alpha, beta (>= 0) from allreduce records (n, bytes, seconds) of one implementation."""
    rows = [r for r in records if r["n"] > 1]
    if len(rows) < 2:
        raise ValueError(f"fitting alpha and beta needs allreduce measurements at 2+ sizes, received {len(rows)}")
    alpha, beta, _ = _nonnegative_fit(rows, (0, 1))
    return {"alpha": alpha, "beta": max(beta, 1e-15)}


def fit_alpha_beta_host(records):
    """alpha, beta and host_beta (see ring_time) from records at 2+ worker counts and 2+ sizes."""
    rows = [r for r in records if r["n"] > 1]
    if len({r["n"] for r in rows}) < 2 or len({r["bytes"] for r in rows}) < 2:
        raise ValueError("fitting the shared-host term needs allreduce measurements at 2+ worker counts and sizes")
    alpha, beta, host_beta = _nonnegative_fit(rows, (0, 1, 2))
    return {"alpha": alpha, "beta": max(beta, 1e-15), "host_beta": host_beta}


def parse_network(spec):
    """'10gbit' | '25gbit' | '100gbit' | 'alpha=5e-5,beta=8e-10'."""
    if spec in NETWORKS:
        return dict(NETWORKS[spec])
    try:
        values = dict(item.split("=") for item in spec.split(","))
        return {"alpha": float(values["alpha"]), "beta": float(values["beta"])}
    except (ValueError, KeyError):
        raise ValueError(f"network must be one of {', '.join(NETWORKS)} or 'alpha=SECONDS,beta=SECONDS_PER_BYTE', "
                         f"received {spec!r}") from None


def predict(t_compute, grad_bytes, ns, network, compression=None, overlap=0.0):
    """Predicted weak-scaling records for worker counts `ns`. overlap: fraction of the allreduce hidden behind
    backward (0 without overlap)."""
    factor = COMPRESSION[compression]
    out = []
    for n in ns:
        comm = ring_time(n, grad_bytes * factor, network["alpha"], network["beta"]) * (1 - overlap)
        step = t_compute + comm
        out.append({"kind": "prediction", "n": n, "step_s": step, "allreduce_s": comm,
                    "efficiency": t_compute / step, "compression": compression or "none"})
    return out


def predict_levers(t_compute, t_backward, grad_bytes, n, network, topk_ratio=0.01, steps_per_sync=4):
    """Predicted step time and efficiency at n workers for each communication lever (weak scaling):
    none; fp16/bf16 (half the bytes); top-k (an allgather of k indices+values per worker); overlap (the
    allreduce hides behind backward, up to backward's length); steps_per_sync=K (one allreduce per K steps)."""
    a, b = network["alpha"], network["beta"]
    ring = ring_time(n, grad_bytes, a, b)
    k = max(1, int(topk_ratio * grad_bytes / 4))
    comm = {"none": ring, "fp16": ring_time(n, grad_bytes / 2, a, b), "bf16": ring_time(n, grad_bytes / 2, a, b),
            "topk": (n - 1) * (a + 8 * k * b), "overlap": max(0.0, ring - t_backward),
            f"steps_per_sync={steps_per_sync}": ring / steps_per_sync}
    return [{"kind": "prediction", "lever": lever, "n": n, "step_s": t_compute + c, "allreduce_s": c,
             "efficiency": t_compute / (t_compute + c)} for lever, c in comm.items()]


def predictions(rows, networks, measured_ns):
    """Fit alpha/beta of this machine's MPI ring, check the model against the measured points, then predict
    efficiency at 2..256 workers on the named networks, without and with fp16 compression."""
    measured = [r for r in rows if r.get("kind") == "scaling" and r.get("backend", "mpi") == "mpi"]
    base = next((r for r in measured if r["n"] == 1), None)
    if base is None:
        raise SystemExit("predictions need the 1-worker run: include 1 in -n")
    ns = sorted({n for n in measured_ns if n > 1}) or [2]
    print("cost model: measuring this machine's allreduce to fit alpha/beta ...", file=sys.stderr)
    from . import allreduce
    ar = allreduce.run(ns, [64 << 10, 1 << 20, 4 << 20, 16 << 20], impls=("ring",), progress=lambda m: None)
    local = fit_alpha_beta(ar)
    t_compute, grad = base["step_s"], base["gradient_bytes"]
    out = []
    cores = os.cpu_count() or 1
    print(f"\ncost model fitted on this machine: alpha = {local['alpha'] * 1e6:.1f} us, "
          f"beta = {1 / local['beta'] / 1e9:.2f} GB/s; compute {t_compute * 1e3:.2f} ms/step, gradient {grad:,} B")
    for n in ns:
        # more workers than cores: each worker gets cores/n of a core, so its compute takes n/cores longer
        slow = max(1.0, n / cores)
        p = predict(t_compute * slow, grad, [n], local)[0]
        p["efficiency"] /= slow
        m = next((r for r in measured if r["n"] == n), None)
        if m is not None:
            print(f"  n={n}: measured efficiency {m.get('efficiency', float('nan')):.1%}, model {p['efficiency']:.1%}"
                  + (f" ({n} workers on {cores} cores)" if slow > 1 else "")
                  + " (the model has no term for workers sharing caches and memory bandwidth)")
        out.append({**p, "network": "this machine", **local})
    big = [2, 4, 8, 16, 32, 64, 128, 256]
    print("\nPREDICTED weak-scaling efficiency (not measured), compute per step as measured here:")
    header = "network     compression " + " ".join(f"{n:>6}" for n in big)
    print(header)
    for name in networks:
        net = parse_network(name)
        for comp in ("none", "fp16"):
            ps = predict(t_compute, grad, big, net, comp)
            print(f"{name:<11} {comp:<11} " + " ".join(f"{p['efficiency']:6.1%}" for p in ps))
            out += [{**p, "network": name, **net} for p in ps]
    t_backward = base["breakdown_s"].get("backward", t_compute / 2)
    print("\nPREDICTED at 64 workers, per communication lever (allreduce ms per step / efficiency):")
    for name in networks:
        net = parse_network(name)
        levers = predict_levers(t_compute, t_backward, grad, 64, net)
        print(f"{name:<11} " + "  ".join(f"{p['lever']}: {p['allreduce_s'] * 1e3:.2f} ms / {p['efficiency']:.1%}"
                                        for p in levers))
        out += [{**p, "network": name} for p in levers]
    return out
