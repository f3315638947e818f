"""Data-reading benchmark: what one rank of N reads from storage for its share of the global batches.

    distnet-bench data --size-mb 200 -n 2 --rank 0 --batch 256 --steps 50

Packs a synthetic CIFAR-shaped set (uint8 32x32x3 images, int64 labels) as shards (rows unpadded, and padded
to whole pages: --row-align page) and as one plain .npy,
evicts the files from the page cache (posix_fadvise DONTNEED), then reads rank r's slices of `steps` global
batches of the (seed, epoch) permutation, as fit would, and reports `read_bytes` of /proc/self/io (what the disk
delivered) against the bytes of the samples the rank trains on, and rows/s. The readers: ShardedDataset, NpyRows
on the .npy (positioned reads; each with 1 or more I/O threads), and np.take of np.load(mmap_mode='r') (page
faults, what fit does with a memory map today).
"""
import os
import time

import numpy as np

from ..data import sharding
from ..data.npy import NpyRows
from ..data.reader import ShardedDataset
from ..data.writer import ShardWriter

IMAGE = (32, 32, 3)


def read_bytes():
    """Bytes this process caused to be fetched from storage (/proc/self/io), or None where not available."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("read_bytes"))
    except (OSError, StopIteration):
        return None


def evict(paths):
    """Drop the files' pages from the page cache, so the next reads come from storage."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def make_data(directory, size_mb, aligns=(None, "page"), samples_per_shard=8192, seed=0, progress=None):
    """Write `size_mb` MB of random uint8 images (+ labels) as shards in directory/shards-<align> (one set per
    row alignment) and as directory/x.npy + y.npy, one batch in memory at a time. Returns the sample count."""
    n = max(int(size_mb * 1e6) // int(np.prod(IMAGE)), 1)
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    xs = np.lib.format.open_memmap(os.path.join(directory, "x.npy"), "w+", np.uint8, (n,) + IMAGE)
    ys = np.lib.format.open_memmap(os.path.join(directory, "y.npy"), "w+", np.int64, (n,))
    writers = [ShardWriter(shard_dir(directory, a), samples_per_shard, overwrite=True, row_align=a) for a in aligns]
    for start in range(0, n, samples_per_shard):
        k = min(samples_per_shard, n - start)
        x, y = rng.integers(0, 256, (k,) + IMAGE, dtype=np.uint8), rng.integers(0, 10, k)
        for w in writers:
            w.write(x=x, y=y)
        xs[start:start + k], ys[start:start + k] = x, y
        if progress:
            progress(f"packed {start + k:,}/{n:,} samples")
    for w in writers:
        w.close()
    xs.flush()
    ys.flush()
    del xs, ys
    return n


def ensure_data(directory, size_mb, aligns=(None, "page"), progress=print):
    """The sample count of the set packed in directory by make_data at this size and these layouts; packed now
    unless a complete one is there (its marker written last, every listed file at its recorded size)."""
    marker = os.path.join(directory, f"packed-{size_mb}MB-{'-'.join(str(a) for a in aligns)}")
    n = None
    if os.path.exists(marker):
        with open(marker) as f:
            n = int(f.read())
        problem = packed_problem(directory, n, aligns)
        if problem:
            progress(f"{directory}: repacking ({problem})")
            os.remove(marker)
            n = None
    if n is None:
        n = make_data(directory, size_mb, aligns, progress=progress)
        with open(marker, "w") as f:
            f.write(str(n))
    return n


def packed_problem(directory, n, aligns):
    """Why the set in directory is not a complete make_data set of n samples (sizes and headers only: reading
    8 GB to check CRCs would defeat a cold-cache measurement), or None."""
    try:
        for a in aligns:
            with ShardedDataset(shard_dir(directory, a), verify="off") as d:
                if len(d) != n:
                    return f"{shard_dir(directory, a)} has {len(d)} samples, expected {n}"
        with NpyRows(os.path.join(directory, "x.npy"), os.path.join(directory, "y.npy")) as rows:
            if len(rows) != n or rows.shapes[0] != IMAGE:
                return f"x.npy holds {len(rows)} samples of {rows.shapes[0]}, expected {n} of {IMAGE}"
    except (OSError, ValueError) as e:
        return str(e)
    return None


def shard_dir(directory, align):
    return os.path.join(directory, f"shards-{align or 'none'}")


def data_files(directory):
    files = [os.path.join(directory, "x.npy"), os.path.join(directory, "y.npy")]
    for d in os.listdir(directory):
        if d.startswith("shards-"):
            files += [os.path.join(directory, d, f) for f in os.listdir(os.path.join(directory, d))]
    return files


def measure(name, take, n, size, rank, batch, steps, seed=0):
    """Read rank's slices of `steps` global batches with take(idx); the read_bytes and time it cost."""
    order = sharding.epoch_order(n, seed, 0)
    steps = min(steps, sharding.num_steps(n, batch))
    before, t0, rows = read_bytes(), time.perf_counter(), 0
    for step in range(steps):
        idx = sharding.local_batch(order, step, batch, rank, size)
        rows += len(take(idx)[0])
    seconds, after = time.perf_counter() - t0, read_bytes()
    share = rows * (int(np.prod(IMAGE)) + 8)                   # image + int64 label per sample
    got = None if before is None else after - before
    return {"kind": "data", "reader": name, "n": size, "rank": rank, "steps": steps, "rows": rows,
            "share_MB": share / 1e6, "read_MB": None if got is None else got / 1e6,
            "read_vs_share": None if got is None else got / share, "rows_per_s": rows / seconds,
            "seconds": seconds}


def readers(directory, aligns, io_threads=(1,)):
    """(name, take function, closer) of the ways to read the same samples."""
    out = []
    for t in io_threads:
        for a in aligns:
            shards = ShardedDataset(shard_dir(directory, a), io_threads=t)
            out.append((f"shards, row-align {a or 'none'}, {t} io thread(s)", shards.take, shards.close))
        rows = NpyRows(os.path.join(directory, "x.npy"), os.path.join(directory, "y.npy"), io_threads=t)
        out.append((f".npy (NpyRows), {t} io thread(s)", rows.take, rows.close))
    xm = np.load(os.path.join(directory, "x.npy"), mmap_mode="r")
    ym = np.load(os.path.join(directory, "y.npy"), mmap_mode="r")
    return out + [
            (".npy (mmap, np.take)", lambda idx: (np.take(xm, idx, axis=0), np.take(ym, idx)), lambda: None)]


def run(directory, size_mb, size=2, rank=0, batch=256, steps=50, aligns=(None, "page"), io_threads=(1,), warm=True,
        progress=print):
    """Pack (unless already packed at this size), then measure each reader cold (and warm)."""
    n = ensure_data(directory, size_mb, aligns, progress)
    rows = []
    for name, take, close in readers(directory, aligns, io_threads):
        evict(data_files(directory))
        rows.append({**measure(name, take, n, size, rank, batch, steps), "cache": "cold"})
        if warm:
            rows.append({**measure(name, take, n, size, rank, batch, steps), "cache": "warm"})
        close()
        progress(f"{name}: done")
    return rows
