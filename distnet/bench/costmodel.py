"""The alpha-beta cost model of a data-parallel step, fitted on this machine and projected onto real networks.

Ring allreduce of m bytes over n workers: T(n, m) = 2(n-1)*alpha + 2(n-1)/n * m * beta
(alpha: per-message latency; beta: seconds per byte, including the reduction). A weak-scaling step on n workers
takes t_compute + T(n, gradient bytes) without overlap, so efficiency(n) = t_compute / (t_compute + T).
"""
import numpy as np

# Typical per-message latency (s) and inverse bandwidth (s/byte) of TCP over Ethernet at these line rates;
# numbers to make predictions comparable, not measurements.
NETWORKS = {
    "10gbit": {"alpha": 50e-6, "beta": 1 / 1.25e9},
    "25gbit": {"alpha": 25e-6, "beta": 1 / 3.125e9},
    "100gbit": {"alpha": 10e-6, "beta": 1 / 12.5e9},
}
COMPRESSION = {None: 1.0, "none": 1.0, "fp16": 0.5, "bf16": 0.5}


def ring_time(n, nbytes, alpha, beta):
    if n <= 1:
        return 0.0
    return 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes * beta


def fit_alpha_beta(records):
    """Least-squares alpha, beta from allreduce records (n, bytes, seconds) of one implementation."""
    rows = [(2 * (r["n"] - 1), 2 * (r["n"] - 1) / r["n"] * r["bytes"], r["seconds"]) for r in records if r["n"] > 1]
    if len(rows) < 2:
        raise ValueError(f"fitting alpha and beta needs allreduce measurements at 2+ sizes, received {len(rows)}")
    a = np.array([[x, y] for x, y, _ in rows])
    t = np.array([s for _, _, s in rows])
    (alpha, beta), *_ = np.linalg.lstsq(a, t, rcond=None)
    return {"alpha": max(float(alpha), 0.0), "beta": max(float(beta), 1e-15)}


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
