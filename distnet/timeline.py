"""Per-rank timeline of training phases (data, forward, backward, wait, allreduce, optimizer), like Horovod
Timeline: enable with `DISTNET_TIMELINE=path.json` (or set `model.timeline = Timeline(path)` before fit);
rank 0 merges every rank's events into one Chrome trace file (open in Perfetto or chrome://tracing).

Recording costs two perf_counter calls per phase; when no timeline is enabled nothing is recorded.
"""
import json
import os
import time

import numpy as np

from .parallel import protocol

PHASES = ("data", "forward", "backward", "wait", "allreduce", "optimizer")


class Timeline:
    def __init__(self, path=None, measure_wait=False):
        """path: where rank 0 writes the merged Chrome trace (None: keep in memory, for summaries).
        measure_wait: time a barrier before each allreduce, separating waiting for slower workers from the
        transfer itself (adds one small collective per step)."""
        self.path, self.measure_wait = path, measure_wait
        self.events = []              # (phase, start, end), perf_counter seconds
        self._t0 = time.perf_counter()
        self._wall0 = time.time()

    def mark_step(self):
        """A step starts: its phases (a batch run in blocks has a forward and a backward per block) are summed
        per step in `step_breakdown`."""
        self.events.append(("step", None, None))

    def record(self, phase, start, end):
        self.events.append((phase, start, end))

    def phase(self, name):
        return _Phase(self, name)

    def durations(self, phase):
        """Seconds of `phase` per step (summed over a step's occurrences of it, where steps are marked)."""
        out, seen = [], False
        for p, s, e in self.events:
            if p == "step":
                seen = False
            elif p == phase:
                if seen:
                    out[-1] += e - s
                else:
                    out.append(e - s)
                    seen = True
        return out

    def step_breakdown(self, skip=0):
        """Median seconds per step of each phase, over the steps after `skip` (warm-up)."""
        out = {}
        for p in PHASES:
            d = self.durations(p)[skip:]
            if d:
                out[p] = float(np.median(d))
        return out

    def trace_events(self, rank):
        """Chrome trace 'complete' events (microseconds since this rank's timeline started, aligned by wall)."""
        offset = (self._wall0 - self._t0) * 1e6
        return [{"name": p, "ph": "X", "pid": rank, "tid": 0, "ts": s * 1e6 + offset, "dur": (e - s) * 1e6,
                 "cat": "train"} for p, s, e in self.events if p != "step"]

    def write(self, comm):
        """Gather every rank's events to rank 0 and write one trace file there."""
        mine = self.trace_events(comm.rank)
        everyone = comm.allgather(mine)
        if comm.rank == 0 and self.path:
            meta = [{"name": "process_name", "ph": "M", "pid": r, "args": {"name": f"rank {r}"}}
                    for r in range(comm.size)]
            events = meta + [e for rank_events in everyone for e in rank_events]
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"traceEvents": events, "displayTimeUnit": "ms"}, f)
            os.replace(tmp, self.path)


class _Phase:
    __slots__ = ("tl", "name", "t")

    def __init__(self, tl, name):
        self.tl, self.name = tl, name

    def __enter__(self):
        self.t = time.perf_counter()

    def __exit__(self, *exc):
        self.tl.events.append((self.name, self.t, time.perf_counter()))


class _NullPhase:
    def __enter__(self):
        pass

    def __exit__(self, *exc):
        pass


class NullTimeline:
    """Stands in when no timeline is enabled: phases cost one method call and record nothing."""
    measure_wait = False
    path = None
    _phase = _NullPhase()

    def phase(self, name):
        return self._phase

    def mark_step(self):
        pass

    def write(self, comm):
        pass


NULL = NullTimeline()


def from_env():
    path = os.environ.get(protocol.TIMELINE)
    return Timeline(path) if path else None
