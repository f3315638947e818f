"""Timing helpers shared by the benchmarks: robust summaries of repeated measurements."""
import time

import numpy as np


def summarize(seconds):
    """Median and spread of a list of durations (seconds)."""
    s = np.asarray(seconds, dtype=np.float64)
    return {"median_s": float(np.median(s)), "p10_s": float(np.percentile(s, 10)),
            "p90_s": float(np.percentile(s, 90)), "repeats": int(s.size)}


def time_calls(fn, repeats, warmup=2):
    """Durations of `repeats` calls of fn() after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def memcpy_bandwidth(nbytes=64 * 2**20, repeats=10):
    """This machine's single-core memory copy bandwidth (bytes/s): the physical ceiling for a local allreduce."""
    a = np.ones(nbytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    t = summarize(time_calls(lambda: np.copyto(b, a), repeats))["median_s"]
    return nbytes / t


def table(rows, columns):
    """A plain-text table of dict rows: columns is [(key, header, format)]."""
    cells = [[h for _, h, _ in columns]] + [[fmt.format(r[k]) if r.get(k) is not None else "-"
                                             for k, _, fmt in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c[i].rjust(widths[i]) for i in range(len(columns))) for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
