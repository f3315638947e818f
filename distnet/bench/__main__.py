"""distnet-bench: measure the engine, the allreduce and scaling.

    distnet-bench engine    [--model mlp,cnn] [--batch 32] [--threads 1]
    distnet-bench allreduce -n 2,4 [--sizes 4K,1M,16M,64M]
    distnet-bench data      --size-mb 200 -n 2 --rank 0 [--batch 256] [--steps 50] [--io-threads 1,4]
    distnet-bench data --train --size-mb 8700 -n 2 --batch 256 --steps 300 [--repeat 3] [--ratio-repeat 5]
    distnet-bench cluster allreduce|levers|hierarchical [--repeat 5]    (across emulated nodes; root)
All subcommands take --json FILE to write the records as {"results": [...]}.
"""
import argparse
import json
import os
import sys

from . import allreduce, costmodel, memory, scaling
from .stats import memcpy_bandwidth, table


def _ints(text):
    try:
        values = [int(v) for v in str(text).split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, received {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, received {text!r}")
    return values


def cmd_engine(args):
    """Each implementation in its own fresh process, alternating, `--repeat` times (see bench/fresh.py)."""
    from . import fresh
    if args.repeat < 1:
        raise SystemExit(f"distnet-bench engine: --repeat must be >= 1, received {args.repeat}")
    if args.profile:
        return _profile(args)
    impls = ["distnet"] + [c for c in (args.compare or "").split(",") if c]
    unknown = [i for i in impls[1:] if i != "torch"]
    if unknown:
        raise SystemExit(f"distnet-bench engine: --compare takes 'torch', received {unknown}")
    print(f"engine: {args.repeat} repetitions, each implementation in a fresh process, alternating",
          file=sys.stderr)
    rows = fresh.protocol(args.model.split(","), args.batch, args.threads, impls, args.repeat, args.steps,
                          args.warmup, say=lambda line: print(line, file=sys.stderr))
    print(table(rows, [("model", "model", "{}"), ("batch", "batch", "{}"), ("threads", "threads", "{}"),
                       ("impl", "impl", "{}"), ("step_ms", "step ms (median)", "{:.3f}"),
                       ("min_ms", "min", "{:.3f}"), ("max_ms", "max", "{:.3f}"),
                       ("samples_per_s", "samples/s", "{:.0f}"), ("ratio", "time vs torch", "{:.2f}x")]))
    return rows


def _profile(args):
    """In this process (--repeat 1), or in --repeat fresh processes one after the other, reported as the median
    run (by forward+backward's share of the ceiling) with every run's shares and their range."""
    import statistics

    from . import fresh
    rows = []
    for name in args.model.split(","):
        for batch in args.batch:
            threads = args.threads[0]
            if args.repeat <= 1:
                runs = [fresh.profile_run(name, batch, threads, args.steps, args.warmup)]
            else:
                runs = []
                for rep in range(args.repeat):
                    runs.append(fresh.run_fresh("profile", name, batch, threads, args.steps, args.warmup))
                    s = runs[-1][1]
                    print(f"  {name} b{batch} t{threads} run {rep + 1}/{args.repeat}: forward+backward "
                          f"{s['layers_share_of_ceiling']:.1%} of {s['gemm_ceiling_gflops']:.0f} GFLOP/s",
                          file=sys.stderr)
            shares = [s["layers_share_of_ceiling"] for _, s in runs]
            layers_, summary = sorted(runs, key=lambda r: r[1]["layers_share_of_ceiling"])[(len(runs) - 1) // 2]
            print(f"{name}, batch {batch}, {threads} intra-op thread(s): step {summary['step_ms']:.2f} ms, "
                  f"{summary['gflop_per_step']:.3f} GFLOP -> {summary['achieved_gflops']:.1f} GFLOP/s = "
                  f"{summary['share_of_ceiling']:.0%} of this core's GEMM ({summary['gemm_ceiling_gflops']:.0f} "
                  f"GFLOP/s); forward+backward {summary['layers_ms']:.2f} ms at "
                  f"{summary['layers_gflops']:.1f} GFLOP/s = {summary['layers_share_of_ceiling']:.0%} (medians of "
                  f"{args.steps} steps; means {summary['mean_step_ms']:.2f} and {summary['mean_layers_ms']:.2f} ms: "
                  f"{summary['mean_layers_share_of_ceiling']:.0%}); "
                  f"{summary['outside_gemm_layers_share']:.0%} of the step outside matrix-product "
                  f"layers ({summary['outside_layers_ms']:.2f} ms outside every layer: loss, optimizer, bookkeeping)")
            print(f"  FLOPs: the model's (3x each layer's forward); the engine computes "
                  f"{summary['computed_gflop_per_step']:.3f} GFLOP of them (no input gradient for the first layer, "
                  f"no output positions that no pooling window reads): forward+backward at "
                  f"{summary['layers_computed_gflops']:.1f} GFLOP/s = "
                  f"{summary['layers_computed_share_of_ceiling']:.0%}")
            if len(runs) > 1:
                computed = [s["layers_computed_share_of_ceiling"] for _, s in runs]
                means = [s["mean_layers_share_of_ceiling"] for _, s in runs]
                print(f"  {len(runs)} fresh processes, forward+backward share of the ceiling: median "
                      f"{statistics.median(shares):.1%} [{min(shares):.1%}-{max(shares):.1%}] "
                      f"({', '.join(f'{v:.1%}' for v in shares)}); with the FLOPs computed: median "
                      f"{statistics.median(computed):.1%} [{min(computed):.1%}-{max(computed):.1%}]; with each run's "
                      f"mean step instead of its median: {statistics.median(means):.1%} [{min(means):.1%}-"
                      f"{max(means):.1%}]; "
                      f"the table: the median run")
                summary = {**summary, "runs": len(runs), "layers_share_runs": shares, "layers_computed_share_runs":
                           computed}
            print(table(layers_, [("layer", "layer", "{}"), ("class", "class", "{}"),
                                  ("forward_ms", "forward ms", "{:.3f}"), ("backward_ms", "backward ms", "{:.3f}"),
                                  ("gflop", "GFLOP (f+b)", "{:.4f}"), ("computed_gflop", "computed", "{:.4f}"),
                                  ("gflops", "GFLOP/s", "{:.1f}")]))
            rows += [{"kind": "profile", "model": name, "batch": batch, **r} for r in layers_]
            rows.append({"kind": "profile_summary", "model": name, "batch": batch, **summary})
    return rows


def cmd_allreduce(args):
    sizes = [allreduce.parse_size(s) for s in args.sizes.split(",")]
    rows = []
    for backend in args.backend.split(","):
        if backend == "mpi":
            rows += allreduce.run(args.n, sizes, progress=lambda m: print(m, file=sys.stderr))
        elif backend == "ray":
            rows += allreduce.run_ray(args.n, sizes, progress=lambda m: print(m, file=sys.stderr))
        else:
            raise SystemExit(f"distnet-bench allreduce: --backend must be mpi, ray or mpi,ray; received {backend!r}")
    memcpy = memcpy_bandwidth() / 1e9
    print(table(rows, [("backend", "backend", "{}"), ("n", "n", "{}"), ("bytes", "bytes", "{:,}"),
                       ("impl", "impl", "{}"),
                       ("seconds", "time (s)", "{:.6f}"), ("algbw_GBps", "algbw GB/s", "{:.2f}"),
                       ("busbw_GBps", "busbw GB/s", "{:.2f}")]))
    print(f"memcpy bandwidth of this machine (one core, 64 MB): {memcpy:.2f} GB/s")
    if args.plot:
        from .. import plot
        print(f"wrote {plot.allreduce(rows, os.path.join(args.plot, 'allreduce.png'))}")
    return rows + [{"kind": "memcpy", "bytes": 64 * 2**20, "GBps": memcpy}]


def cmd_scaling(args):
    rows = []
    repeats = getattr(args, "repeat", 1)
    for rep in range(repeats):                # backends alternate within each repetition, side by side
        for backend in args.backend.split(","):
            if backend not in ("mpi", "ray"):
                raise SystemExit(f"distnet-bench scaling: --backend must be mpi, ray or mpi,ray; received {backend!r}")
            rs = scaling.run(args.n, args.model, args.mode, args.batch, steps=args.steps, threads=args.threads,
                             progress=lambda m: print(m, file=sys.stderr), backend=backend,
                             compile_kw=_levers(args))
            rows += [dict(r, repetition=rep) for r in rs]
    if repeats > 1:
        _print_repeats(rows)
    for r in rows:
        b = r["breakdown_s"]
        r.update({f"{k}_ms": v * 1e3 for k, v in b.items()}, step_ms=r["step_s"] * 1e3)
    print(table(rows, [("backend", "backend", "{}"), ("n", "n", "{}"), ("global_batch", "global batch", "{}"),
                       ("step_ms", "step ms", "{:.2f}"), ("wire_bytes_per_update", "sent B/update", "{:,}"),
                       ("samples_per_s", "samples/s", "{:.0f}"), ("speedup", "speed-up", "{:.2f}"),
                       ("efficiency", "efficiency", "{:.1%}"), ("data_ms", "data", "{:.2f}"),
                       ("forward_ms", "fwd", "{:.2f}"), ("backward_ms", "bwd", "{:.2f}"),
                       ("wait_ms", "wait", "{:.2f}"), ("allreduce_ms", "allreduce", "{:.2f}"),
                       ("optimizer_ms", "opt", "{:.2f}")]))
    if args.predict:
        rows += costmodel.predictions(rows, args.predict.split(","), args.n)
    if args.plot:
        from .. import plot
        curves = [r for r in rows if r.get("kind") == "prediction" and "lever" not in r]
        preds = [(f"{r0['network']} {r0['compression']}", [r for r in curves if
                  (r["network"], r["compression"]) == (r0["network"], r0["compression"])])
                 for r0 in curves if r0["n"] == 2]
        for path in plot.scaling([r for r in rows if r.get("kind") == "scaling"], os.path.join(args.plot, "scaling"),
                                 preds):
            print(f"wrote {path}")
    return rows


def _print_repeats(rows):
    """Median and range over repetitions, per backend and worker count (each repetition has its own 1-worker
    baseline): the machine is noisy, one run says little."""
    import statistics
    print("\nover repetitions (median [min - max]):")
    for backend in sorted({r["backend"] for r in rows}):
        for n in sorted({r["n"] for r in rows}):
            rs = [r for r in rows if r["backend"] == backend and r["n"] == n]
            if not rs:
                continue
            eff = [r.get("efficiency", float("nan")) for r in rs]
            step = [r["step_s"] * 1e3 for r in rs]
            print(f"  {backend} n={n}: step {statistics.median(step):.2f} ms [{min(step):.2f} - {max(step):.2f}], "
                  f"efficiency {statistics.median(eff):.1%} [{min(eff):.1%} - {max(eff):.1%}] over {len(rs)} runs")
    backends = sorted({r["backend"] for r in rows})
    if len(backends) == 2:
        for n in sorted({r["n"] for r in rows}):
            ratios = []
            for rep in sorted({r["repetition"] for r in rows}):
                pair = {r["backend"]: r["step_s"] for r in rows if r["n"] == n and r["repetition"] == rep}
                if len(pair) == 2:
                    ratios.append(pair["ray"] / pair["mpi"])
            if ratios:
                print(f"  ray/mpi step time at n={n}: median {statistics.median(ratios):.2f}x "
                      f"[{min(ratios):.2f} - {max(ratios):.2f}]")


def _levers(args):
    kw = {}
    if getattr(args, "overlap", False):
        kw["overlap"] = True
    if getattr(args, "compression", None):
        kw["compression"] = args.compression
    if getattr(args, "steps_per_sync", 1) > 1:
        kw["steps_per_sync"] = args.steps_per_sync
    return kw


def cmd_memory(args):
    impls = ("distnet", "torch") if args.compare == "torch" else ("distnet",)
    rows = []
    for model_name in args.model.split(","):
        print(f"memory: {model_name}, batch {args.batch}, {args.steps} steps, {' and '.join(impls)} ...",
              file=sys.stderr)
        rows += memory.run(model_name, args.batch, args.steps, impls)
    print(table(rows, [("model", "model", "{}"), ("impl", "impl", "{}"), ("steps", "steps", "{}"),
                       ("peak_rss_MB", "peak RSS MB", "{:.1f}"), ("rss_after_warmup_MB", "RSS @100 MB", "{:.1f}"),
                       ("rss_final_MB", "RSS final MB", "{:.1f}"), ("rss_growth_MB", "growth MB", "{:+.2f}"),
                       ("alloc_per_step_bytes", "alloc/step B", "{:,}")]))
    return rows


def cmd_data(args):
    from . import data
    if args.train:
        return cmd_data_train(args)
    aligns = [None if a == "none" else a for a in args.row_align.split(",")]
    rows = data.run(args.dir, args.size_mb, args.n, args.rank, args.batch, args.steps, aligns, args.io_threads,
                    progress=lambda m: print(m, file=sys.stderr))
    print(table(rows, [("reader", "reader", "{}"), ("cache", "cache", "{}"), ("rows", "rows", "{:,}"),
                       ("share_MB", "share MB", "{:.1f}"), ("read_MB", "read MB", "{:.1f}"),
                       ("read_vs_share", "read/share", "{:.2f}x"), ("rows_per_s", "rows/s", "{:,.0f}")]))
    print(f"rank {args.rank} of {args.n}, global batch {args.batch}, {rows[0]['steps']} steps; read = read_bytes "
          "of /proc/self/io; share = the rank's images + labels")
    return rows


def cmd_data_train(args):
    from . import data_train
    records, probes = data_train.run(args.dir, args.size_mb, args.n, args.batch, args.steps, args.repeat,
                                     args.ratio_repeat, args.cold_sources.split(",") if args.cold_sources else (),
                                     progress=lambda m: print(m, file=sys.stderr))
    summary = data_train.summarize(records, probes)
    print(data_train.report(summary))
    print(f"{args.n} workers (distnet-launch), global batch {args.batch}, {args.steps} steps per pass; "
          f"read = read_bytes of /proc/self/io; share = the rank's images + labels")
    return {"records": records, "disk": probes, "summary": summary}


def cmd_elastic(args):
    from . import elastic
    return elastic.main(args.repeat, args.workers, args.modes.split(","))


def cmd_all(args):
    """The default benchmark: allreduce and scaling on both backends, the cost model, and the plots."""
    os.makedirs(args.out, exist_ok=True)
    ar = argparse.Namespace(n=[2], sizes="4K,64K,1M,4M,16M,64M", backend="mpi,ray" if _has_ray() else "mpi",
                            plot=args.out)
    rows = cmd_allreduce(ar)
    sc = argparse.Namespace(n=[1, 2, 4], model="cnn", mode="weak", batch=32, threads=1, steps=args.steps,
                            overlap=False, compression=None, steps_per_sync=1,
                            backend="mpi,ray" if _has_ray() else "mpi", predict="10gbit,25gbit,100gbit",
                            plot=args.out)
    rows += cmd_scaling(sc)
    return rows


def cmd_cluster(args):
    """Across emulated nodes (a testbed of its own): see distnet/bench/cluster.py."""
    from . import cluster, cluster_report as report

    def say(message):
        print(message, file=sys.stderr)
    if args.from_json:
        with open(args.from_json) as f:
            rows = json.load(f)["results"]
    elif args.what == "allreduce":
        rows = cluster.allreduce(args.nodes, args.links.split(","), [allreduce.parse_size(s) for s in
                                 args.sizes.split(",")], args.backend.split(","), args.repeat, say)
    elif args.what == "levers":
        rows = cluster.levers(args.links.split(","), repeat=args.repeat, steps=args.steps, progress=say)
    else:
        rows = cluster.hierarchical(args.links.split(",")[0], [allreduce.parse_size(s) for s in args.sizes.split(",")],
                                    args.repeat, say)
    if args.json:                        # saved first: a table or plot that fails must not lose a long run
        with open(args.json, "w") as f:
            json.dump({"results": rows}, f, indent=1)
    print("(a shared 2-core machine: medians [min-max] over repetitions run side by side)")
    if args.what == "levers":
        print(report.levers_table(rows))
        best, share = report.recovered(rows)
        print(f"at 1gbit the best lever ({best}) recovers {share:.0%} of the efficiency lost to communication")
    elif args.what == "hierarchical":
        model = None
        if args.model_from:
            with open(args.model_from) as f:
                model = json.load(f)["results"]
        print(report.hierarchical_table(rows, model, memcpy_bandwidth()))
    else:
        print(report.allreduce_table(rows))
    if args.what == "allreduce":
        for host in (False, True):
            print(f"\ncost model{' with the shared-host term' if host else ''}:")
            print(report.model_table(rows, host))
            print(report.model_points(rows, host))
    if args.plot:
        from .. import plot
        for path in plot.cluster(rows, args.what, args.plot):
            print(f"wrote {path}")
    return rows


def _has_ray():
    try:
        import ray  # noqa: F401
        return True
    except ImportError:
        return False


def main(argv=None):
    p = argparse.ArgumentParser(prog="distnet-bench", description="distnet benchmarks")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("engine", help="training step time: each implementation in a fresh process, alternating, "
                                      "repeated; median and range")
    e.add_argument("--model", default="mlp,cnn", help="comma-separated: mlp, cnn, lstm, resnet")
    e.add_argument("--batch", type=_ints, default=[32])
    e.add_argument("--threads", type=_ints, default=[1])
    e.add_argument("--steps", type=int, default=30, help="timed steps per run (after --warmup)")
    e.add_argument("--warmup", type=int, default=5)
    e.add_argument("--repeat", type=int, default=5, help="runs of each implementation (fresh processes)")
    e.add_argument("--compare", default=None, help="also time 'torch' (pip install torch) on the same network")
    e.add_argument("--profile", action="store_true",
                   help="per layer: forward/backward time, FLOPs, GFLOP/s; the GEMM ceiling of this core (--repeat "
                        "N > 1: N fresh processes, the median run and the range of the shares; 1: this process)")
    a = sub.add_parser("allreduce", help="allreduce time and bandwidth by buffer size")
    a.add_argument("-n", type=_ints, default=[2])
    a.add_argument("--sizes", default=",".join(allreduce.DEFAULT_SIZES))
    a.add_argument("--backend", default="mpi")
    a.add_argument("--plot", default=None, metavar="DIR", help="write a bandwidth-vs-size PNG here")
    sc = sub.add_parser("scaling", help="throughput and efficiency on 1..N workers")
    sc.add_argument("-n", type=_ints, default=[1, 2, 4])
    sc.add_argument("--model", default="cnn", choices=["cnn", "mlp"])
    sc.add_argument("--mode", default="weak", choices=["weak", "strong"])
    sc.add_argument("--batch", type=int, default=32, help="per worker (weak) or global (strong)")
    sc.add_argument("--threads", type=int, default=1, help="BLAS threads per worker")
    sc.add_argument("--steps", type=int, default=30)
    sc.add_argument("--backend", default="mpi", help="mpi, ray, or mpi,ray for both side by side")
    sc.add_argument("--predict", default=None, metavar="NETWORKS",
                    help="cost-model predictions for 2..256 workers, e.g. 10gbit,25gbit,100gbit or alpha=..,beta=..")
    sc.add_argument("--plot", default=None, metavar="DIR", help="write efficiency/throughput/breakdown PNGs here")
    sc.add_argument("--overlap", action="store_true", help="overlap the allreduce with backward")
    sc.add_argument("--compression", choices=["fp16", "bf16", "topk"], default=None)
    sc.add_argument("--steps-per-sync", type=int, default=1, help="gradient accumulation: micro-batches per update")
    sc.add_argument("--repeat", type=int, default=1, help="repeat the whole measurement; report medians and ranges")
    m = sub.add_parser("memory", help="peak RSS, steady-state RSS growth and allocation per step")
    m.add_argument("--model", default="cnn")
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--steps", type=int, default=2000)
    m.add_argument("--compare", choices=["torch"], default=None)
    d = sub.add_parser("data", help="storage reads of one rank's share: shards vs .npy (preadv) vs mmap")
    d.add_argument("--size-mb", type=int, default=200, help="size of the synthetic CIFAR-shaped set")
    d.add_argument("--dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "distnet-bench-data"))
    d.add_argument("-n", type=int, default=2, help="number of workers")
    d.add_argument("--rank", type=int, default=0)
    d.add_argument("--batch", type=int, default=256, help="global batch")
    d.add_argument("--steps", type=int, default=50)
    d.add_argument("--row-align", default="none,page", help="shard layouts to pack and read: none, page or both")
    d.add_argument("--io-threads", type=_ints, default=[1, 4], help="reader threads, e.g. 1,4")
    d.add_argument("--train", action="store_true",
                   help="train a small CNN under distnet-launch -n N from the set (shards, .npy, memory): RssAnon "
                        "peak, reads and step time per worker, cold and warm")
    d.add_argument("--repeat", type=int, default=3, help="--train: cold runs of each source")
    d.add_argument("--ratio-repeat", type=int, default=5, help="--train: alternating warm/in-memory pairs")
    d.add_argument("--cold-sources", default="shards-none,shards-page,npy",
                   help="--train: sources of the cold runs (shards-none, shards-page, npy; empty: none)")
    el = sub.add_parser("elastic", help="time from a worker's death to the next step: elastic vs restart (Ray) "
                                        "vs relaunch on the healthy hosts (MPI)")
    el.add_argument("--repeat", type=int, default=5)
    el.add_argument("--workers", type=int, default=3)
    el.add_argument("--modes", default="elastic,restart,mpi-relaunch", help="which of them, comma-separated")
    al = sub.add_parser("all", help="allreduce + scaling on both backends, cost model, plots (a few minutes)")
    al.add_argument("--out", default="bench-results", help="directory for the PNG plots and results.json")
    al.add_argument("--steps", type=int, default=20)
    cl = sub.add_parser("cluster", help="across emulated nodes (root, network namespaces): allreduce, levers, "
                                         "hierarchical")
    cl.add_argument("what", choices=["allreduce", "levers", "hierarchical"])
    cl.add_argument("--nodes", type=_ints, default=[2, 3, 4], help="node counts (allreduce)")
    cl.add_argument("--links", default="1gbit,10gbit", help="link rates (hierarchical: the first)")
    cl.add_argument("--sizes", default="64K,256K,1M,4M,16M")
    cl.add_argument("--backend", default="mpi,ray", help="allreduce: mpi, ray or both")
    cl.add_argument("--steps", type=int, default=30, help="levers: timed steps per run")
    cl.add_argument("--repeat", type=int, default=5)
    cl.add_argument("--plot", default=None, metavar="DIR", help="write the PNG plots here")
    cl.add_argument("--from-json", default=None, metavar="FILE", help="tables and plots of saved records; no run")
    cl.add_argument("--model-from", default=None, metavar="FILE",
                    help="hierarchical: predict from alpha/beta fitted on this `cluster allreduce --json` output")
    for s in (e, a, sc, m, d, el, al, cl):
        s.add_argument("--json", default=None, help="write the records to this file")
    args = p.parse_args(argv)
    rows = {"engine": cmd_engine, "allreduce": cmd_allreduce, "scaling": cmd_scaling,
            "memory": cmd_memory, "data": cmd_data, "elastic": cmd_elastic, "all": cmd_all,
            "cluster": cmd_cluster}[args.command](args)
    if args.command == "all" and not args.json:
        args.json = os.path.join(args.out, "results.json")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
