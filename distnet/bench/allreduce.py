"""Allreduce bandwidth: our ring vs MPI's native Allreduce, across buffer sizes and worker counts.

    distnet-bench allreduce -n 2,4 [--sizes 4K,1M,16M,64M] [--json out.json]

algbw = bytes / time; busbw = algbw * 2(n-1)/n (the NCCL convention: the bytes each worker actually moves).
Each timing is the slowest rank's, after a barrier, median over repeats.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from .stats import summarize

DEFAULT_SIZES = ["4K", "64K", "1M", "4M", "16M", "64M"]


def parse_size(text):
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = str(text).strip().upper().rstrip("B")
    try:
        return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
    except (ValueError, IndexError):
        raise ValueError(f"Cannot read buffer size {text!r}; use bytes or a K/M/G suffix, e.g. 16M") from None


def _repeats(nbytes):
    return max(5, min(50, int(2e8 // max(nbytes, 1))))


def _time_impls(comm, sizes, impls, backend):
    """Per size and implementation: median over repeats of the slowest rank's time per operation, each repeat
    timing a burst of back-to-back operations after a barrier (so the barrier's own skew between ranks, large
    for a barrier made of Ray actor calls, is spread over the burst)."""
    records = []
    for nbytes in sizes:
        buf = np.zeros(max(nbytes // 4, 1), dtype=np.float32)     # zeros: repeated sums must not overflow
        burst = max(1, min(20, (4 << 20) // max(nbytes, 1)))
        for impl in impls:
            times = []
            for i in range(max(5, _repeats(nbytes) // burst) + 2):
                comm.barrier()
                t0 = time.perf_counter()
                for _ in range(burst):
                    comm.allreduce_(buf, algorithm=impl)
                slowest = max(comm.allgather((time.perf_counter() - t0) / burst))
                if i >= 2:
                    times.append(slowest)
            s = summarize(times)
            algbw = buf.nbytes / s["median_s"] / 1e9
            records.append({"kind": "allreduce", "backend": backend, "impl": impl, "n": comm.size,
                            "bytes": int(buf.nbytes), "seconds": s["median_s"], "p10_s": s["p10_s"],
                            "p90_s": s["p90_s"], "algbw_GBps": algbw,
                            "busbw_GBps": algbw * 2 * (comm.size - 1) / comm.size})
    return records


def _ray_worker(sizes, impls):
    from ..parallel import world
    return _time_impls(world.current(), sizes, impls, "ray")


def run_ray(ns, sizes, impls=("ring", "star"), progress=print):
    """The same measurement between Ray actors (one group per worker count)."""
    from ..parallel import ray as ray_backend
    records = []
    for n in ns:
        progress(f"allreduce (ray): {n} actors, {len(sizes)} sizes x {len(impls)} implementations ...")
        ray_backend.init_ray(None, n)
        group = ray_backend.WorkerGroup(n)
        try:
            records += group.run("run_function", _ray_worker, (sizes, impls), {})[0]
        finally:
            group.shutdown()
    ray_backend.shutdown_private()       # Ray's daemons must not share the cores with what is measured next
    return records


def worker(sizes, impls, out_path):
    """Runs inside an MPI job: time each implementation at each size; rank 0 writes JSON records."""
    from .. import distributed
    comm = distributed.init("mpi")
    records = _time_impls(comm, sizes, impls, "mpi")
    if comm.rank == 0:
        with open(out_path, "w") as f:
            json.dump(records, f)


def mpirun():
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    found = here if os.path.exists(here) else shutil.which("mpirun")
    if found is None:
        raise RuntimeError("mpirun not found: pip install 'distnet[mpi]' (mpi4py + mpich)")
    return found


def run(ns, sizes, impls=("ring", "native"), progress=print):
    """Launch one MPI job per worker count; return the records of all of them."""
    records = []
    for n in ns:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "records.json")
            cmd = [mpirun(), "-n", str(n), sys.executable, "-m", "distnet.bench.allreduce", "--worker", out,
                   ",".join(str(s) for s in sizes), ",".join(impls)]
            progress(f"allreduce: {n} workers, {len(sizes)} sizes x {len(impls)} implementations ...")
            env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
            res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
            if res.returncode != 0:
                raise RuntimeError(f"allreduce benchmark with {n} workers failed:\n{res.stderr[-3000:]}")
            with open(out) as f:
                records += json.load(f)
    return records


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--worker":
    worker([int(s) for s in sys.argv[3].split(",")], sys.argv[4].split(","), sys.argv[2])
