"""Measurements across emulated nodes (the testbed of `distnet-cluster`: one network namespace per node, links
shaped by tbf): it brings up its own testbed (named dbench) and always takes it down.

    distnet-bench cluster allreduce --nodes 2,3,4 --links 1gbit,10gbit --repeat 5   # ring/native (MPI), ring (Ray)
    distnet-bench cluster levers --links 1gbit,10gbit --repeat 5                     # the CNN on 2 nodes, each lever
    distnet-bench cluster hierarchical --link 1gbit --repeat 5                       # 2 nodes x 2 workers

Each repetition runs every configuration once, side by side; tables report medians and [min - max] over the
repetitions. Needs root and network namespaces; Ray parts need `ray` and run cluster.yaml's start commands.
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile

PREFIX, SUBNET = "dbench", "10.77.250.0/24"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEVERS = {"none": {}, "overlap": {"overlap": True}, "bf16": {"compression": "bf16"},
          "fp16": {"compression": "fp16"}, "topk 1%": {"compression": "topk", "topk_ratio": 0.01},
          "steps_per_sync=4": {"steps_per_sync": 4}}
ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}


@contextlib.contextmanager
def testbed(nodes, slots=1, ray=False, progress=print):
    """This benchmark's own testbed (named by $DISTNET_BENCH_TESTBED, default dbench), removed after."""
    from launch import testbed as tb
    from launch.testbed import ray_nodes
    prefix, subnet = os.environ.get("DISTNET_BENCH_TESTBED", f"{PREFIX},{SUBNET}").split(",")
    try:
        owner = tb.Testbed.load(prefix).owner
    except tb.TestbedError:
        owner = None
    if owner and os.path.exists(f"/proc/{owner}"):
        raise tb.TestbedError(f"testbed {prefix!r} is in use by process {owner} (another benchmark?)")
    tb.down(prefix)                      # what a killed earlier run left
    bed = tb.up(nodes, "1gbit", prefix, subnet, slots=slots, owner=os.getpid())
    try:
        head = None
        if ray:
            progress(f"cluster: starting Ray on {nodes} nodes with cluster.yaml's commands ...")
            head = ray_nodes.up(bed, os.path.join(ROOT, "cluster.yaml"))
        yield bed, head
    finally:
        tb.down(prefix)


def _mpi(bed, nodes, per_node, argv, timeout=1800, env=None):
    """Run `python argv` as nodes x per_node MPI ranks on the testbed (Hydra through the testbed's agent)."""
    from launch import mpi
    hosts = [(n["address"], per_node) for n in bed.nodes[:nodes]]
    cmd = mpi.command(mpi.find_mpirun(), "hydra", nodes * per_node, hosts, [sys.executable, *argv],
                      ssh=bed.agent, iface=bed.bridge)
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **ENV, **(env or {})},
                         timeout=timeout, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")


def allreduce_mpi(bed, nodes, per_node, sizes, impls):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "records.json")
        _mpi(bed, nodes, per_node, ["-m", "distnet.bench.allreduce", "--worker", out, ",".join(map(str, sizes)),
                                    ",".join(impls)])
        with open(out) as f:
            return json.load(f)


RAY_DRIVER = """
import json, sys
from distnet.parallel import ray as rb
from distnet.bench.allreduce import _ray_worker
head, n, sizes = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
rb.init_ray(head, n)
group = rb.WorkerGroup(n, placement_strategy="STRICT_SPREAD")      # one worker per node
try:
    print("RECORDS", json.dumps(group.run("run_function", _ray_worker, (sizes, ("ring",)), {})[0]))
finally:
    group.shutdown()
"""


def allreduce_ray(bed, head, nodes, sizes):
    """The Ray ring between `nodes` actors, one per node; the driver runs on the head node."""
    res = subprocess.run(bed.exec_argv("node1", [sys.executable, "-c", RAY_DRIVER, head, str(nodes),
                                                 json.dumps(sizes)], cwd=ROOT),
                         capture_output=True, text=True, env={**os.environ, **ENV}, timeout=1800)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RECORDS ")]
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"Ray allreduce on {nodes} nodes failed:\n{res.stderr[-3000:]}")
    return json.loads(lines[0][8:])


def allreduce(nodes=(2, 3, 4), links=("1gbit", "10gbit"), sizes=(1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24),
              backends=("mpi", "ray"), repeat=5, progress=print):
    """Allreduce times across 2..4 nodes (one worker each) at each link rate, every configuration once per
    repetition."""
    records = []
    with testbed(max(nodes), ray="ray" in backends, progress=progress) as (bed, head):
        for rep in range(repeat):
            for link in links:
                bed.set_rate(link)
                for n in nodes:
                    progress(f"cluster allreduce: repetition {rep + 1}/{repeat}, {link}, {n} nodes ...")
                    rs = allreduce_mpi(bed, n, 1, sizes, ("ring", "native")) if "mpi" in backends else []
                    rs += allreduce_ray(bed, head, n, list(sizes)) if "ray" in backends else []
                    records += [dict(r, link=link, nodes=n, repetition=rep) for r in rs]
    return records


def scaling_mpi(bed, nodes, per_node, compile_kw, steps, warmup, batch, alone=False):
    """One scaling record (weak scaling, `batch` samples per worker) with the bytes node1 sent per update.
    alone: every worker trains by itself (DISTNET_DISABLE=1), side by side: the same machine, no communication."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "record{rank}.json")
        n = 1 if alone else nodes * per_node
        _mpi(bed, nodes, per_node, ["-m", "distnet.bench.scaling", "--worker", "cnn", str(batch * n), str(steps),
                                    str(warmup), out, json.dumps(compile_kw), "eth0"],
             env={"DISTNET_DISABLE": "1"} if alone else None)
        with open(out.format(rank=0)) as f:
            return json.load(f)


def levers(links=("1gbit", "10gbit"), names=tuple(LEVERS), repeat=5, steps=30, warmup=5, batch=32, progress=print):
    """The CNN (32x32x3, `batch` per worker) on 2 nodes x 1 worker with each lever, and in the same repetition
    1 worker alone and 2 workers training side by side without communicating (the same contention for this
    machine's 2 cores, no gradient exchange). efficiency: against 1 worker (weak scaling); comm_efficiency:
    against the 2 workers that do not communicate, i.e. what communication alone costs."""
    rows = []
    with testbed(2, progress=progress) as (bed, _):
        for rep in range(repeat):
            progress(f"cluster levers: repetition {rep + 1}/{repeat}: 1 worker, 2 workers apart ...")
            one = scaling_mpi(bed, 1, 1, {}, steps, warmup, batch)
            apart = scaling_mpi(bed, 2, 1, {}, steps, warmup, batch, alone=True)
            rows.append(dict(one, link="-", lever="1 worker", repetition=rep, efficiency=1.0))
            rows.append(dict(apart, link="-", lever="2 workers, no communication", repetition=rep,
                             efficiency=apart["samples_per_s"] / one["samples_per_s"], comm_efficiency=1.0))
            for link in links:
                bed.set_rate(link)
                for name in names:
                    progress(f"cluster levers: repetition {rep + 1}/{repeat}: {link}, {name} ...")
                    r = scaling_mpi(bed, 2, 1, LEVERS[name], steps, warmup, batch)
                    b = r["breakdown_s"]      # per update, this run: waiting for the other worker + allreduce
                    rows.append(dict(r, link=link, lever=name, repetition=rep,
                                     comm_share=(b.get("wait", 0.0) + b.get("allreduce", 0.0)) / r["step_s"],
                                     efficiency=r["samples_per_s"] / (2 * one["samples_per_s"]),
                                     comm_efficiency=r["samples_per_s"] / (2 * apart["samples_per_s"])))
    return rows


def hierarchical(link="1gbit", sizes=(1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 24), repeat=5, progress=print):
    """Flat ring, MPI native and hierarchical allreduce on 2 nodes x 2 workers."""
    records = []
    with testbed(2, slots=2, progress=progress) as (bed, _):
        bed.set_rate(link)
        for rep in range(repeat):
            progress(f"cluster hierarchical: repetition {rep + 1}/{repeat}, {link} ...")
            rs = allreduce_mpi(bed, 2, 2, sizes, ("ring", "native", "hierarchical"))
            records += [dict(r, link=link, nodes=2, repetition=rep) for r in rs]
    return records


# -- summaries ----------------------------------------------------------------------------------------------
def medians(records, keys, value):
    """{key tuple: (median, min, max)} of `value` over repetitions."""
    groups = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r[value])
    return {k: (statistics.median(v), min(v), max(v)) for k, v in groups.items()}


def fmt(m, scale=1.0, digits=2):
    med, lo, hi = (x * scale for x in m)
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"
