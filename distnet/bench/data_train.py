"""Training from a large packed set under `distnet-launch`: memory, reads and step time per worker.

    distnet-bench data --train --size-mb 8700 -n 2 --batch 256 --steps 300 --repeat 3 --ratio-repeat 5 \\
        --dir /path/with/30GB/free --json out.json

Packs a synthetic CIFAR-shaped set (distnet.bench.data.make_data: shards unpadded and page-aligned, and one
.npy; reused when a complete one is there), then launches `distnet-launch -n N -- -m distnet.bench.data_worker`
(a small CNN, K steps, each rank reports JSON):
- cold: before each run every file of the set is evicted from the page cache (posix_fadvise DONTNEED), then
  one pass over K steps from each of shards-none, shards-page and the memory-mapped .npy; after the run the
  pages of the set that are resident (mincore) are counted by kind of file: what the run read, all ranks together;
- warm vs memory, alternating in fresh processes: the same K steps twice from shards-page (the second pass
  measured: its samples are cached) and from in-memory float32 arrays (also twice, the second measured);
- the disk alone: sequential reads (1 MB) and random 4 KB reads of the cold files, MB/s.
Every run records /proc/loadavg before it: the machine may be shared.
"""
import ctypes
import ctypes.util
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import data
from .data_worker import read_bytes

COLD_SOURCES = ("shards-none", "shards-page", "npy")


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def launch_command(directory, source, workers, steps, batch, passes, out, python=sys.executable):
    """The distnet-launch command line (as `python -m launch`, the same CLI) of one run."""
    return [python, "-m", "launch", "-n", str(workers), "--threads", "1", "--", "-m", "distnet.bench.data_worker",
            "--dir", directory, "--source", source, "--steps", str(steps), "--batch", str(batch),
            "--passes", str(passes), "--out", out]


def run_once(directory, source, workers, steps, batch, passes, cold, timeout=1800):
    """Launch one run; its per-rank records (each with the run's cache state, load average and, when cold,
    the pages of the set resident afterwards)."""
    if cold:
        data.evict(data.data_files(directory))
    load, started = loadavg(), time.time()
    with tempfile.TemporaryDirectory(prefix="distnet-bench-train-") as tmp:
        out = os.path.join(tmp, "rank-{rank}.json")
        cmd = launch_command(directory, source, workers, steps, batch, passes, out)
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                               f"{res.stderr[-4000:]}")
        records = []
        for r in range(workers):
            with open(out.replace("{rank}", str(r))) as f:
                records.append(json.load(f))
    resident = resident_by_kind(directory) if cold else None
    cache = "cold" if cold else ("warm" if passes > 1 and source != "memory" else "memory")
    return [{**rec, "cache": cache, "loadavg": load, "started": started, "resident_MB": resident}
            for rec in records]


# -- what a run read, from the page cache ---------------------------------------------------------------
_libc = None


def _mincore_lib():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                                  ctypes.c_int, ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        _libc = libc
    return _libc


def resident_bytes(path):
    """Bytes of the file now in the page cache (mincore of a mapping that is never touched), or None."""
    size = os.path.getsize(path)
    if size == 0 or not hasattr(os, "posix_fadvise"):
        return 0 if size == 0 else None
    libc = _mincore_lib()
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = -(-size // mmap.PAGESIZE)
            vec = np.zeros(pages, np.uint8)
            if libc.mincore(addr, size, vec.ctypes.data) != 0:
                return None
            return int(np.count_nonzero(vec & 1)) * mmap.PAGESIZE
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def file_kind(path):
    name = os.path.basename(path)
    where = os.path.basename(os.path.dirname(path))
    if name in ("x.npy", "y.npy"):
        return f"npy {name[0]}"
    if name.endswith(".json"):
        return f"{where} index"
    return f"{where} {name.split('-')[0].split('.')[0]}"        # shards-page x / y / crc


def resident_by_kind(directory):
    """MB resident per kind of file of the set (e.g. 'shards-page x', 'shards-page crc', 'npy y')."""
    out = {}
    for path in data.data_files(directory):
        got = resident_bytes(path)
        if got is None:
            return None
        kind = file_kind(path)
        out[kind] = out.get(kind, 0) + got / 1e6
    return {k: round(v, 3) for k, v in sorted(out.items()) if v}


# -- the disk alone ------------------------------------------------------------------------------------
def disk_probe(directory, seq_mb=256, random_reads=2000, seed=0):
    """Cold sequential (1 MB reads, default read-ahead) and random 4 KB reads (read-ahead off) of the .npy:
    MB/s as delivered (read_bytes) and per wall second."""
    path = os.path.join(directory, "x.npy")
    size = os.path.getsize(path)
    data.evict([path])
    fd = os.open(path, os.O_RDONLY)
    try:
        before, t0, done = read_bytes(), time.perf_counter(), 0
        while done < min(seq_mb * 1e6, size):
            got = os.pread(fd, 1 << 20, done)
            if not got:
                break
            done += len(got)
        seq_s, seq_read = time.perf_counter() - t0, (read_bytes() or 0) - (before or 0)
    finally:
        os.close(fd)
    data.evict([path])
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        offsets = np.random.default_rng(seed).integers(0, size // 4096, random_reads) * 4096
        before, t0 = read_bytes(), time.perf_counter()
        for off in offsets.tolist():
            os.pread(fd, 4096, off)
        rnd_s, rnd_read = time.perf_counter() - t0, (read_bytes() or 0) - (before or 0)
    finally:
        os.close(fd)
    return {"sequential_MB_per_s": done / 1e6 / seq_s, "sequential_read_MB": seq_read / 1e6,
            "random_4k_reads_per_s": random_reads / rnd_s, "random_4k_MB_per_s": random_reads * 4096 / 1e6 / rnd_s,
            "random_read_MB": rnd_read / 1e6, "loadavg": loadavg()}


def run(directory, size_mb, workers=2, batch=256, steps=300, repeat=3, ratio_repeat=5, cold_sources=COLD_SOURCES,
        progress=print):
    """All measurements; returns (per-rank records, disk probes)."""
    data.ensure_data(directory, size_mb, (None, "page"), progress)
    records, probes = [], []
    unknown = sorted(set(cold_sources) - set(COLD_SOURCES))
    if unknown:
        raise ValueError(f"cold sources must be among {COLD_SOURCES}, received {unknown}")
    for i in range(repeat if cold_sources else 0):
        probes.append(disk_probe(directory))
        progress(f"disk probe {i + 1}/{repeat}: {probes[-1]}")
        for source in cold_sources:
            records += run_once(directory, source, workers, steps, batch, 1, cold=True)
            progress(f"cold {source} {i + 1}/{repeat}: {_brief(records[-workers:])}")
    for i in range(ratio_repeat):
        for source in ("memory", "shards-page"):
            records += [{**r, "pair": i} for r in run_once(directory, source, workers, steps, batch, 2, cold=False)]
            progress(f"warm {source} {i + 1}/{ratio_repeat}: {_brief(records[-workers:])}")
    return records, probes


def _brief(recs):
    return ", ".join(f"rank {r['rank']}: step {r['step_ms']:.1f} ms, read {r['read_MB']:.1f} MB "
                     f"({r['read_vs_share']:.2f}x), RssAnon peak {r['rss_anon_peak_MB']:.0f} MB" for r in recs)


def _stat(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
            "n": len(values)}


def _resident(per_run):
    """Median MB per kind of file resident after the runs (None when not measured)."""
    per_run = [r for r in per_run if r]
    kinds = sorted({k for r in per_run for k in r})
    return {k: float(np.median([r.get(k, 0.0) for r in per_run])) for k in kinds} if per_run else None


def summarize(records, probes):
    """Medians and ranges per (source, cache) over runs: per-rank values pooled over ranks and runs; the
    step time of a run is its slowest rank's median; ratios warm/memory per pair of consecutive runs."""
    rows = []
    groups = {}
    for r in records:
        groups.setdefault((r["source"], r["cache"]), []).append(r)
    for (source, cache), recs in groups.items():
        runs = {}
        for r in recs:
            runs.setdefault(r["started"], []).append(r)
        per_run = list(runs.values())
        rows.append({"source": source, "cache": cache, "runs": len(per_run),
                     "read_vs_share": _stat([r["read_vs_share"] for r in recs]),
                     "read_vs_share_2nd_half": _stat([r.get("read_vs_share_2nd_half") for r in recs]),
                     "read_vs_share_all_ranks": _stat([sum(r["read_MB"] for r in run) / sum(r["share_MB"] for r in run)
                                                       for run in per_run]),
                     "read_MB_per_s": _stat([sum(r["read_MB"] for r in run) / max(r["seconds"] for r in run)
                                             for run in per_run]),
                     "rss_anon_peak_MB": _stat([max(r["rss_anon_peak_MB"] for r in run) for run in per_run]),
                     "step_ms": _stat([max(r["step_ms"] for r in run) for run in per_run]),
                     "cpu_ms": _stat([max(r.get("cpu_ms") or 0 for r in run) for run in per_run]),
                     "data_wait_ms": _stat([max(r["phase_ms"].get("data", 0) for r in run) for run in per_run]),
                     "loadavg_1min": _stat([run[0]["loadavg"][0] for run in per_run]),
                     "resident_MB": _resident([run[0].get("resident_MB") for run in per_run])})
    pairs = {}
    for r in records:
        if r.get("pair") is not None:
            pairs.setdefault(r["pair"], {}).setdefault(r["source"], []).append(r["step_ms"])
    ratios = [max(p["shards-page"]) / max(p["memory"]) for p in pairs.values() if {"memory", "shards-page"} <= set(p)]
    cpu_pairs = {}
    for r in records:
        if r.get("pair") is not None and r.get("cpu_ms"):
            cpu_pairs.setdefault(r["pair"], {}).setdefault(r["source"], []).append(r["cpu_ms"])
    cpu_ratios = [max(p["shards-page"]) / max(p["memory"]) for p in cpu_pairs.values()
                  if {"memory", "shards-page"} <= set(p)]
    disk = {k: _stat([p[k] for p in probes]) for k in ("sequential_MB_per_s", "random_4k_reads_per_s",
                                                        "random_4k_MB_per_s")} if probes else {}
    return {"rows": rows, "warm_vs_memory_step_ratio": _stat(ratios), "warm_vs_memory_cpu_ratio": _stat(cpu_ratios),
            "disk": disk}


def fmt(stat, spec="{:.2f}"):
    if stat is None:
        return "-"
    if stat["n"] == 1:
        return spec.format(stat["median"])
    return f"{spec.format(stat['median'])} ({spec.format(stat['min'])}-{spec.format(stat['max'])})"


def report(summary):
    """The summary as a text table."""
    cols = [("read/share per rank", "read_vs_share", "{:.2f}"), ("2nd half", "read_vs_share_2nd_half", "{:.2f}"),
            ("all ranks", "read_vs_share_all_ranks", "{:.2f}"), ("read MB/s", "read_MB_per_s", "{:.1f}"),
            ("RssAnon peak MB", "rss_anon_peak_MB", "{:.0f}"), ("step ms", "step_ms", "{:.1f}"),
            ("CPU ms/step", "cpu_ms", "{:.1f}"), ("data wait ms", "data_wait_ms", "{:.1f}"),
            ("load 1 min", "loadavg_1min", "{:.2f}")]
    lines = ["| source | cache | runs | " + " | ".join(c[0] for c in cols) + " |",
             "|---" * (3 + len(cols)) + "|"]
    for r in summary["rows"]:
        lines.append(f"| {r['source']} | {r['cache']} | {r['runs']} | "
                     + " | ".join(fmt(r[k], spec) for _, k, spec in cols) + " |")
    for r in summary["rows"]:
        if r["resident_MB"]:
            lines.append(f"\nresident after cold {r['source']} (MB, all ranks, median): "
                         + ", ".join(f"{k} {v:.1f}" for k, v in r["resident_MB"].items()))
    lines.append(f"\nwarm shards-page / in-memory step time: {fmt(summary['warm_vs_memory_step_ratio'], '{:.3f}')}; "
                 f"CPU per step: {fmt(summary.get('warm_vs_memory_cpu_ratio'), '{:.3f}')}")
    for k, v in summary["disk"].items():
        lines.append(f"disk {k}: {fmt(v, '{:.1f}')}")
    return "\n".join(lines)
