"""Tables of the measurements across emulated nodes (bench/cluster.py): medians and ranges over repetitions,
and the cost model fitted to them and checked point by point."""
from . import costmodel
from .cluster import fmt, medians

MiB = 2**20


def _size(nbytes):
    return f"{nbytes // MiB} MiB" if nbytes >= MiB else f"{nbytes // 1024} KiB"


def allreduce_table(records, sizes=None):
    """Bus bandwidth (GB/s) per link rate, implementation, node count and size: median [min-max]."""
    keys = ("link", "backend", "impl", "nodes", "bytes")
    bw = medians(records, keys, "busbw_GBps")
    ms = medians(records, keys, "seconds")
    sizes = sizes or sorted({r["bytes"] for r in records})
    lines = ["| link | implementation | nodes | " + " | ".join(f"{_size(s)} busbw GB/s (ms)" for s in sizes) + " |",
             "|---|---|---:|" + "---:|" * len(sizes)]
    for link, backend, impl, n in sorted({k[:4] for k in bw}, key=lambda k: (_rate(k[0]), k[1], k[2], k[3])):
        cells = []
        for s in sizes:
            k = (link, backend, impl, n, s)
            cells.append(f"{fmt(bw[k])} ({ms[k][0] * 1e3:.1f})" if k in bw else "-")
        lines.append(f"| {link} | {backend} {impl} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate(link):
    from launch.testbed.nodes import rate_bits
    return rate_bits(link) or 0


def model_check(records, host_term=False):
    """Fit the alpha-beta model to the medians of each (link, implementation) over every node count and size;
    return (fits, rows): rows carry measured and predicted seconds and the relative error.
    host_term: fit the model with the shared-host term too (costmodel.fit_alpha_beta_host)."""
    med = medians(records, ("link", "backend", "impl", "nodes", "bytes"), "seconds")
    fits, rows = {}, []
    for group in sorted({k[:3] for k in med}):
        pts = [{"n": k[3], "bytes": k[4], "seconds": v[0]} for k, v in med.items() if k[:3] == group]
        fit = costmodel.fit_alpha_beta_host(pts) if host_term else costmodel.fit_alpha_beta(pts)
        fits[group] = fit
        for p in pts:
            pred = costmodel.ring_time(p["n"], p["bytes"], fit["alpha"], fit["beta"], fit.get("host_beta", 0.0))
            rows.append({"link": group[0], "impl": f"{group[1]} {group[2]}", "n": p["n"], "bytes": p["bytes"],
                         "measured_s": p["seconds"], "predicted_s": pred, "error": pred / p["seconds"] - 1})
    return fits, rows


def model_table(records, host_term=False):
    fits, rows = model_check(records, host_term)
    lines = ["| link | implementation | alpha (us) | 1/beta (GB/s) |" + (" 1/host_beta (GB/s) |" if host_term else "")
             + " worst error | within 15% | within 15% from 1 MiB |",
             "|---|---|---:|---:|" + ("---:|" if host_term else "") + "---:|---:|---:|"]
    for (link, backend, impl), fit in sorted(fits.items(), key=lambda kv: (_rate(kv[0][0]), kv[0][1:])):
        mine = [r for r in rows if r["link"] == link and r["impl"] == f"{backend} {impl}"]
        worst = max((r["error"] for r in mine), key=abs)
        big = [r for r in mine if r["bytes"] >= MiB]
        host = ""
        if host_term:
            host = f" {1 / fit['host_beta'] / 1e9:.2f} |" if fit.get("host_beta") else " - |"
        link_bw = f"{1 / fit['beta'] / 1e9:.3f}" if fit["beta"] > 1e-14 else "- (never the limit)"
        lines.append(f"| {link} | {backend} {impl} | {fit['alpha'] * 1e6:.0f} | {link_bw} |{host} {worst:+.0%} | "
                     f"{sum(abs(r['error']) <= 0.15 for r in mine)}/{len(mine)} | "
                     f"{sum(abs(r['error']) <= 0.15 for r in big)}/{len(big)} |")
    return "\n".join(lines)


def model_points(records, host_term=False, sizes=(MiB, 16 * MiB)):
    """Measured vs predicted milliseconds at a few sizes, every node count."""
    _, rows = model_check(records, host_term)
    lines = ["| link | implementation | nodes | size | measured ms | model ms | error |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (_rate(r["link"]), r["impl"], r["bytes"], r["n"])):
        if r["bytes"] in sizes:
            lines.append(f"| {r['link']} | {r['impl']} | {r['n']} | {_size(r['bytes'])} | {r['measured_s'] * 1e3:.1f} "
                         f"| {r['predicted_s'] * 1e3:.1f} | {r['error']:+.0%} |")
    return "\n".join(lines)


def levers_table(rows):
    """Per link and lever: efficiency against 1 worker and against 2 workers that do not communicate, the share
    of each update spent communicating (waiting for the other worker + allreduce, measured in the same run),
    step time, and bytes on node1's link per update (median [min-max])."""
    keys = ("link", "lever")
    eff, step = medians(rows, keys, "efficiency"), medians(rows, keys, "step_s")
    apart = medians([r for r in rows if "comm_efficiency" in r], keys, "comm_efficiency")
    share = medians([r for r in rows if "comm_share" in r], keys, "comm_share")
    sent = medians([r for r in rows if "link_bytes_per_update" in r], keys, "link_bytes_per_update")
    order = list(dict.fromkeys(r["lever"] for r in rows))
    lines = ["| link | lever | efficiency vs 1 worker | vs 2 workers apart | communicating (same run) | step ms | "
             "link bytes / update |", "|---|---|---:|---:|---:|---:|---:|"]
    for link, lever in sorted(eff, key=lambda k: (_rate(k[0]) if k[0] != "-" else 0, order.index(k[1]))):
        k = (link, lever)
        cells = [f"{fmt(m[k], 100, 1)}%" if k in m else "-" for m in (eff, apart, share)]
        sent_text = f"{sent[k][0]:,.0f}" if k in sent else "-"
        lines.append(f"| {link} | {lever} | {' | '.join(cells)} | {fmt(step[k], 1e3, 1)} | {sent_text} |")
    return "\n".join(lines)


def recovered(rows, link="1gbit"):
    """How much of the time lost to communication (its share of each update, measured in the same run) the
    best lever wins back: (best lever, fraction)."""
    share = {k[1]: v[0] for k, v in medians([r for r in rows if "comm_share" in r], ("link", "lever"),
                                            "comm_share").items() if k[0] == link}
    best = min((k for k in share if k != "none"), key=share.get)
    return best, (share["none"] - share[best]) / share["none"] if share["none"] > 0 else float("nan")


def hierarchical_table(records, model_records=None, local_bw=8e9):
    """Flat ring, native and hierarchical on 2 nodes x 2 workers by size; with `model_records` (the allreduce
    measurement, one worker per node, same link rate) the model's predictions for the ring and hierarchical,
    from alpha/beta fitted there and a local (shared-memory) bandwidth of `local_bw` bytes/s."""
    ms = medians(records, ("impl", "bytes"), "seconds")
    link = records[0]["link"]
    fit = None
    if model_records:
        pts = [r for r in model_records if (r["link"], r["backend"], r["impl"]) == (link, "mpi", "ring")]
        med = medians(pts, ("n", "bytes"), "seconds")
        fit = costmodel.fit_alpha_beta([{"n": k[0], "bytes": k[1], "seconds": v[0]} for k, v in med.items()])
    lines = ["| size | flat ring ms | MPI native ms | hierarchical ms | ring / hierarchical |"
             + (" model: ring ms | model: hierarchical ms |" if fit else ""),
             "|---|---:|---:|---:|---:|" + ("---:|---:|" if fit else "")]
    for size in sorted({k[1] for k in ms}):
        ring, native, hier = (ms[(impl, size)] for impl in ("ring", "native", "hierarchical"))
        line = (f"| {_size(size)} | {fmt(ring, 1e3, 1)} | {fmt(native, 1e3, 1)} | {fmt(hier, 1e3, 1)} | "
                f"{ring[0] / hier[0]:.2f}x |")
        if fit:
            line += (f" {costmodel.ring_time(4, size, fit['alpha'], fit['beta']) * 1e3:.1f} | "
                     f"{costmodel.hierarchical_time(2, 2, size, fit['alpha'], fit['beta'], 1 / local_bw) * 1e3:.1f} |")
        lines.append(line)
    return "\n".join(lines)
