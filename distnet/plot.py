"""Plots (matplotlib, from the `plot` extra): training curves and benchmark figures, written as PNG files."""
import os


def _pyplot():
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plotting needs matplotlib: pip install 'distnet[plot]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def history(history, path, title=None):
    """Loss and metrics per epoch (and their val_ twins) from `model.fit(...)`'s History, one panel each."""
    logs = getattr(history, "history", history)
    if not logs:
        raise ValueError("history is empty: nothing to plot")
    plt = _pyplot()
    names = [k for k in logs if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        epochs = range(1, len(logs[name]) + 1)
        ax.plot(epochs, logs[name], marker="o", label=name)
        if "val_" + name in logs:
            ax.plot(range(1, len(logs["val_" + name]) + 1), logs["val_" + name], marker="s", label="val_" + name)
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return path


def scaling(records, path_prefix, predictions=()):
    """efficiency vs workers, throughput vs workers, and the step-time breakdown: three PNG files."""
    plt = _pyplot()
    paths = []
    groups = {}
    for r in records:
        groups.setdefault(r.get("backend", "mpi"), []).append(r)
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["n"])
        ax.plot([r["n"] for r in rs], [r.get("efficiency", float("nan")) * 100 for r in rs], marker="o",
                label=f"{backend} (measured)")
    for label, ps in predictions:
        ax.plot([p["n"] for p in ps], [p["efficiency"] * 100 for p in ps], linestyle="--", label=f"{label} (predicted)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("workers")
    ax.set_ylabel("scaling efficiency (%)")
    ax.set_ylim(0, 110)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths.append(_save(fig, f"{path_prefix}_efficiency.png"))
    fig, ax = plt.subplots(figsize=(6, 4))
    for backend, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["n"])
        ax.plot([r["n"] for r in rs], [r["samples_per_s"] for r in rs], marker="o", label=backend)
    ax.set_xlabel("workers")
    ax.set_ylabel("samples / s")
    ax.grid(alpha=0.3)
    ax.legend()
    paths.append(_save(fig, f"{path_prefix}_throughput.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    phases = ["data", "forward", "backward", "wait", "allreduce", "optimizer"]
    labels = [f"{r.get('backend', 'mpi')} n={r['n']}" for r in records]
    bottom = [0.0] * len(records)
    for phase in phases:
        values = [r.get("breakdown_s", {}).get(phase, 0.0) * 1e3 for r in records]
        ax.bar(labels, values, bottom=bottom, label=phase)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("ms per step (median)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    paths.append(_save(fig, f"{path_prefix}_breakdown.png"))
    return paths


def allreduce(records, path):
    """Algorithm bandwidth vs buffer size, one line per backend/implementation/worker count."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    keys = sorted({(r.get("backend", "mpi"), r["impl"], r["n"]) for r in records if r.get("kind") == "allreduce"})
    for backend, impl, n in keys:
        rs = sorted((r for r in records if (r.get("backend", "mpi"), r.get("impl"), r.get("n")) == (backend, impl, n)),
                    key=lambda r: r["bytes"])
        ax.plot([r["bytes"] for r in rs], [r["algbw_GBps"] for r in rs], marker="o", label=f"{backend} {impl} n={n}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("buffer bytes")
    ax.set_ylabel("algorithm bandwidth (GB/s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def cluster(rows, what, directory):
    """Plots of `distnet-bench cluster` (medians, bars from min to max over repetitions): bus bandwidth vs nodes
    (allreduce, with the cost model's line), efficiency per lever (levers), bandwidth vs size (hierarchical)."""
    from .bench.cluster import medians
    plt = _pyplot()
    if what == "levers":
        links = [k for k in dict.fromkeys(r["link"] for r in rows) if k != "-"]
        levers = list(dict.fromkeys(r["lever"] for r in rows if r["link"] != "-"))
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        width = 0.8 / len(links)
        for ax, key, label in ((axes[0], "comm_share", "share of each update spent communicating (%)"),
                               (axes[1], "efficiency", "weak-scaling efficiency vs 1 worker (%)")):
            m = medians([r for r in rows if key in r and r["link"] != "-"], ("link", "lever"), key)
            for i, link in enumerate(links):
                v = [m[(link, lev)] for lev in levers]
                ax.bar([j + i * width for j in range(len(levers))], [x[0] * 100 for x in v], width, label=link,
                       yerr=[[(x[0] - x[1]) * 100 for x in v], [(x[2] - x[0]) * 100 for x in v]], capsize=3)
            ax.set_xticks([j + width * (len(links) - 1) / 2 for j in range(len(levers))], levers, rotation=20)
            ax.set_ylabel(label)
            ax.grid(alpha=0.3, axis="y")
            ax.legend()
        fig.suptitle("CNN on 2 emulated nodes (medians, bars: min-max over repetitions)")
        fig.tight_layout()
        return [_save(fig, os.path.join(directory, "cluster_levers.png"))]
    bw = medians(rows, ("link", "backend", "impl", "nodes", "bytes"), "busbw_GBps")
    links = list(dict.fromkeys(r["link"] for r in rows))
    model = {}
    if what == "allreduce":              # the cost model (with the shared-host term), as bus bandwidth
        from .bench.cluster_report import model_check
        for p in model_check(rows, host_term=True)[1]:
            model[(p["link"], p["impl"], p["n"], p["bytes"])] = (p["bytes"] / p["predicted_s"] / 1e9
                                                                 * 2 * (p["n"] - 1) / p["n"])
    fig, axes = plt.subplots(1, len(links), figsize=(6 * len(links), 4), squeeze=False)
    for ax, link in zip(axes[0], links):
        impls = sorted({k[1:3] for k in bw if k[0] == link})
        for backend, impl in impls:
            if what == "hierarchical":
                keys = sorted((k for k in bw if k[:3] == (link, backend, impl)), key=lambda k: k[4])
                x, xlabel = [k[4] for k in keys], "buffer bytes"
                ax.set_xscale("log", base=2)
            else:
                size = max(k[4] for k in bw)
                keys = sorted((k for k in bw if k[:3] == (link, backend, impl) and k[4] == size), key=lambda k: k[3])
                x, xlabel = [k[3] for k in keys], f"nodes ({size // 2**20} MiB buffer)"
            m = [bw[k] for k in keys]
            line = ax.errorbar(x, [v[0] for v in m], yerr=[[v[0] - v[1] for v in m], [v[2] - v[0] for v in m]],
                               marker="o", capsize=3, label=f"{backend} {impl}")
            if model and impl == "ring":
                ax.plot(x, [model[(link, f"{backend} {impl}", k[3], k[4])] for k in keys], linestyle="--",
                        color=line[0].get_color(), label=f"{backend} {impl}: model")
            if what == "allreduce":
                ax.set_xticks(x)
        from .bench.cluster_report import _rate
        ax.axhline(_rate(link) / 8e9, color="grey", lw=0.8, linestyle=":", label="line rate")
        ax.set_title(f"links {link}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return [_save(fig, os.path.join(directory, f"cluster_{what}.png"))]


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path
