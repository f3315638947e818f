"""One worker of `distnet-bench data --train`: train a small CNN for K steps from one data source, report JSON.

    distnet-launch -n 2 --threads 1 -- -m distnet.bench.data_worker --dir D --source shards-page --steps 200 \\
        --batch 256 --out /tmp/run-{rank}.json [--passes 2]

Sources (all in D, written by distnet.bench.data.make_data): shards-none / shards-page (ShardedDataset,
scale=1/255), npy (np.load(x.npy, mmap_mode='r') and y.npy passed to fit: read by NpyRows; the model starts
with Rescaling(1/255) since a map cannot be scaled in place), memory (the first steps * batch samples of x.npy
as float32 / 255 in memory: the in-memory reference). With --passes 2, fit runs the same K steps (the same
(seed, epoch) order) twice and only the second pass is measured: the samples it touches are then in the page
cache (the warm measurement). Each rank writes one JSON record: peak RssAnon (sampled every few ms and after
every step), read_bytes of /proc/self/io during the measured pass, the bytes of the samples it trained on, and
the median step time (between consecutive on_train_batch_end calls: data wait + compute + allreduce) and CPU
seconds per step (all threads, and the training thread alone: less sensitive to other load on the machine).
"""
import argparse
import json
import os
import threading
import time

import numpy as np

SOURCES = ("shards-none", "shards-page", "npy", "memory")
IMAGE = (32, 32, 3)


def proc_value(path, key):
    """An integer field of a /proc file ('RssAnon' in status: kB; 'read_bytes' in io: bytes), or None."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_anon_bytes():
    kb = proc_value("/proc/self/status", "RssAnon")
    return None if kb is None else kb * 1024


def read_bytes():
    return proc_value("/proc/self/io", "read_bytes")


class PeakSampler:
    """The peak of RssAnon, sampled every `interval` seconds on a daemon thread (and whenever sample() is
    called): VmHWM is the peak of the whole RSS, file pages of the page cache mapped in included."""

    def __init__(self, interval=0.005):
        self.peak, self._stop = rss_anon_bytes() or 0, threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True, name="rss-sampler")
        self._thread.start()

    def sample(self):
        now = rss_anon_bytes() or 0
        self.peak = max(self.peak, now)
        return now

    def _run(self, interval):
        while not self._stop.wait(interval):
            self.sample()

    def stop(self):
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.peak


def step_timer():
    """A callback that records the time at the end of every step and samples RssAnon there."""
    from distnet.callbacks import Callback

    class StepTimer(Callback):
        def __init__(self):
            super().__init__()
            self.times, self.reads, self.cpu, self.main_cpu, self.sampler = [], [], [], [], None

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())
            self.cpu.append(time.process_time())            # every thread of the process (prefetch included)
            self.main_cpu.append(time.thread_time())         # the training thread alone
            self.reads.append(read_bytes())
            if self.sampler is not None:
                self.sampler.sample()

    return StepTimer()


def build_model(rescale):
    import distnet
    from distnet.layers import Conv2D, Dense, Flatten, MaxPooling2D, Rescaling
    model = distnet.models.Sequential()
    if rescale:
        model.add(Rescaling(1 / 255, input_shape=IMAGE))
    model.add(Conv2D(8, (3, 3), activation="relu", input_shape=None if rescale else IMAGE))
    model.add(MaxPooling2D((2, 2)))
    model.add(Conv2D(16, (3, 3), activation="relu"))
    model.add(MaxPooling2D((2, 2)))
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    model.compile(loss="sparse_categorical_crossentropy", optimizer="sgd")
    return model


def open_source(directory, source, samples):
    """(x, y) to pass to fit."""
    from distnet.data import ShardedDataset
    if source.startswith("shards-"):
        return ShardedDataset(os.path.join(directory, source), scale=1 / 255, dtype="float32"), None
    x = np.load(os.path.join(directory, "x.npy"), mmap_mode="r")
    y = np.load(os.path.join(directory, "y.npy"), mmap_mode="r")
    if source == "npy":
        return x, y
    samples = min(samples, len(x))
    xs = np.empty((samples,) + x.shape[1:], np.float32)           # the in-memory reference: float32 in [0, 1]
    for lo in range(0, samples, 4096):
        hi = min(lo + 4096, samples)
        xs[lo:hi] = x[lo:hi]
        xs[lo:hi] *= np.float32(1 / 255)
    return xs, np.array(y[:samples])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--source", choices=SOURCES, required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256, help="global batch")
    p.add_argument("--passes", type=int, default=1, help="2: run the steps twice, measure the second (warm)")
    p.add_argument("--skip", type=int, default=5, help="steps left out of the step-time median (warm-up)")
    p.add_argument("--out", required=True, help="JSON file per rank; {rank} is replaced")
    args = p.parse_args(argv)

    import distnet
    from distnet.data import sharding
    distnet.utils.set_random_seed(1)                  # the same (seed, epoch) order in every pass
    rank, size = distnet.distributed.rank(), distnet.distributed.size()
    sampler = PeakSampler()
    rss_start = rss_anon_bytes()
    x, y = open_source(args.dir, args.source, args.steps * args.batch)
    model = build_model(rescale=args.source == "npy")
    from distnet.timeline import Timeline
    model.timeline = Timeline(None)                  # per-phase times: how long each step waited for data
    timer = step_timer()
    timer.sampler = sampler
    before = t0 = None
    for p_ in range(args.passes):
        if p_ == args.passes - 1:
            timer.times.clear()
            for series in (timer.reads, timer.cpu, timer.main_cpu):
                series.clear()
            model.timeline.events.clear()
            before, t0 = read_bytes(), time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=1, steps_per_epoch=args.steps, verbose=0, callbacks=[timer])
    seconds, after = time.perf_counter() - t0, read_bytes()
    peak = sampler.stop()
    lo, hi = sharding.local_bounds(args.batch, rank, size)
    steps = len(timer.times)                         # fewer than --steps when the data has fewer batches
    samples = steps * (hi - lo)
    label_bytes = np.dtype(np.int64).itemsize
    share = samples * (int(np.prod(IMAGE)) + label_bytes)
    skip = min(args.skip, steps // 2)
    steps_s = np.diff(timer.times)[skip:]
    got = None if before is None or after is None else after - before
    half = steps // 2          # the second half: after the first touch of every shard's labels and CRCs
    late = None if got is None or half < 1 else timer.reads[-1] - timer.reads[half - 1]
    record = {"source": args.source, "passes": args.passes, "rank": rank, "size": size, "steps": steps,
              "batch": args.batch, "samples": samples, "share_MB": share / 1e6,
              "read_MB": None if got is None else got / 1e6, "read_vs_share": None if got is None else got / share,
              "read_vs_share_2nd_half": None if late is None else late / (share * (steps - half) / steps),
              "rss_anon_peak_MB": peak / 1e6, "rss_anon_start_MB": (rss_start or 0) / 1e6,
              "rss_anon_end_MB": (rss_anon_bytes() or 0) / 1e6,
              "step_ms": float(np.median(steps_s) * 1e3) if len(steps_s) else None,
              "step_ms_p90": float(np.percentile(steps_s, 90) * 1e3) if len(steps_s) else None,
              "cpu_ms": float(np.median(np.diff(timer.cpu)[skip:]) * 1e3) if len(steps_s) else None,
              "main_cpu_ms": float(np.median(np.diff(timer.main_cpu)[skip:]) * 1e3) if len(steps_s) else None,
              "seconds": seconds, "read_MB_per_s": None if got is None else got / 1e6 / seconds,
              "loss": float(model.history.history["loss"][-1]),
              "phase_ms": {k: v * 1e3 for k, v in model.timeline.step_breakdown(skip).items()}}
    with open(args.out.replace("{rank}", str(rank)), "w") as f:
        json.dump(record, f)
    if hasattr(x, "close"):
        x.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
