"""A group of worker actors placed by a placement group and wired into a ring; `run` with restarts."""
import os
import sys
import time
import uuid

from .. import protocol
from .cluster import init_ray, ray_module as _ray, shutdown_private
from .transport import remove_outboxes
from .worker import Worker


WAIT_SLICE = 0.5      # seconds per ray.wait: Ctrl-C is handled between slices (ray.wait itself ignores it)


class WorkerGroup:
    """num_workers actors in a placement group (spread across nodes when there are several), wired into a ring.

    `shutdown()` (after a failure, an interrupt or the end) kills the actors, removes the placement group and
    the ring's shared-memory files of this group (`/dev/shm/distnet-<job>-*`), which a worker killed mid-
    exchange leaves behind."""

    def __init__(self, num_workers, resources_per_worker=None, placement_strategy="SPREAD", timeout=None,
                 env=None):
        ray = _ray()
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
        self._remove_pg = remove_placement_group
        self.actors, self.node_ids, self.pids = [], [], []
        self.job = uuid.uuid4().hex[:12]
        resources = dict(resources_per_worker or {"CPU": 1})
        cpus = resources.pop("CPU", 1)
        bundle = {"CPU": cpus, **resources}
        self.pg = placement_group([dict(bundle) for _ in range(num_workers)], strategy=placement_strategy)
        try:
            try:
                ray.get(self.pg.ready(), timeout=float(os.environ.get(protocol.RAY_PLACEMENT_TIMEOUT, 30)))
            except ray.exceptions.GetTimeoutError:
                raise RuntimeError(f"Ray cannot place {num_workers} workers of {bundle}: the cluster has "
                                   f"{ray.cluster_resources()}") from None
            worker_cls = ray.remote(Worker)
            threads = max(4, num_workers + 2)
            self.actors = [
                worker_cls.options(num_cpus=cpus, resources=resources or None, max_concurrency=threads,
                                   scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, i)).remote(
                    i, num_workers, dict(env or {}))
                for i in range(num_workers)]
            self.node_ids = ray.get([a.node_id.remote() for a in self.actors])
            self.pids = ray.get([a.pid.remote() for a in self.actors])
            hosts = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
            addresses = ray.get([a.open_ring.remote(hosts[nid], timeout)
                                 for a, nid in zip(self.actors, self.node_ids)])
            ray.get([a.connect.remote(self.actors, self.node_ids, addresses, timeout, self.job)
                     for a in self.actors])
        except BaseException:           # a failure or Ctrl-C while setting up: leave nothing placed
            self.shutdown()
            raise

    def run(self, method, *args):
        """Call `method` on every actor; return the results in rank order, or raise the first failure
        (an exception on a rank, or a dead actor) after stopping every other actor."""
        ray = _ray()
        refs = [getattr(a, method).remote(*args) for a in self.actors]
        pending, results = list(refs), {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=WAIT_SLICE)
            if not done:
                continue
            rank = refs.index(done[0])
            try:
                results[rank] = ray.get(done[0])
            except Exception as e:
                if "ConnectionError" in str(e):      # a peer hung up: if its actor died, that is the failure
                    rank, e = self._dead_peer(refs, pending) or (rank, e)
                stalled, how = self._stalled_ranks() if "TimeoutError" in str(e) else (None, None)
                self.shutdown()
                raise WorkerFailure(rank, len(refs), e, stalled, how) from e
        return [results[r] for r in range(len(refs))]

    def _dead_peer(self, refs, pending, grace=3):
        """(rank, error) of a rank whose actor died, among those still running, if one is found within `grace`
        seconds (Ray reports a death a moment after the neighbours see the connection close); else None."""
        ray = _ray()
        done, _ = ray.wait(pending, num_returns=len(pending), timeout=grace)
        for ref in done:
            try:
                ray.get(ref)
            except Exception as e:
                if type(e).__name__ in WorkerFailure.DEAD:
                    return refs.index(ref), e
        return None

    def _stalled_ranks(self, timeout=5):
        """After a timeout, the ranks the others waited for: those whose actor does not answer (its node is
        unreachable, or it is gone), else those that entered the fewest collectives. (ranks, how) or (None, None)."""
        ray = _ray()
        refs = [a.progress.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        counts = []
        for ref in refs:
            try:
                counts.append(ray.get(ref) if ref in ready else None)
            except Exception:
                counts.append(None)
        silent = [r for r, c in enumerate(counts) if c is None]
        if silent:
            return silent, f"did not answer within {timeout:g} s (node unreachable, or the worker is gone)"
        low = min(counts)
        if low < max(counts):
            return [r for r, c in enumerate(counts) if c == low], "stopped at an earlier collective than the others"
        return None, None

    def shutdown(self):
        """Kill the actors, remove the placement group and this group's shared-memory files (idempotent)."""
        ray = _ray()
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        try:
            self._remove_pg(self.pg)
        except Exception:
            pass
        self._remove_shared_memory(ray)

    def _remove_shared_memory(self, ray):
        """Once the actors on this machine are gone (so none writes a new outbox), unlink the group's outboxes
        here; on the other nodes a small task does the same (best effort: a lost node has nothing to clean)."""
        try:
            here = ray.get_runtime_context().get_node_id()
        except Exception:
            here = None
        local = [pid for pid, node in zip(self.pids, self.node_ids) if node == here]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(protocol.process_running(pid) for pid in local):
            time.sleep(0.02)
        remove_outboxes(self.job)
        try:
            others = set(self.node_ids) - {here}
            if others:
                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
                task = ray.remote(num_cpus=0)(remove_outboxes)
                refs = [task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False)).remote(
                    self.job) for n in others]
                ray.wait(refs, num_returns=len(refs), timeout=5)
        except Exception:
            pass


class WorkerFailure(RuntimeError):
    """A rank raised or its actor died; `rank` names it, `stalled` the ranks it timed out waiting for."""
    DEAD = ("RayActorError", "ActorDiedError", "ActorUnavailableError")     # how Ray reports a dead actor

    def __init__(self, rank, size, cause, stalled=None, how="stopped at an earlier collective than the others"):
        self.rank, self.size, self.cause, self.stalled = rank, size, cause, stalled
        dead = type(cause).__name__ in self.DEAD
        what = "its actor died (process killed or node lost)" if dead else f"it raised:\n{cause}"
        if stalled:
            what = f"it timed out waiting for its peers; stalled: rank(s) {stalled} {how}\n{cause}"
        super().__init__(f"distnet worker rank {rank} of {size} failed: {what}")


def run(train_fn, num_workers=2, resources_per_worker=None, max_failures=0, address=None, args=(), kwargs=None,
        placement_strategy="SPREAD", timeout=None, min_workers=None, wait_for_workers=60.0):
    """Run `train_fn(*args, **kwargs)` on `num_workers` Ray actors as one data-parallel job; return the list of
    per-rank results. Inside, `model.fit` trains data-parallel over the actors, exactly as under mpirun.

    max_failures: how many times to restart the whole worker group when a worker fails (an exception or a
    dead actor/node); `train_fn` resumes from its checkpoints if it uses BackupAndRestore.
    timeout: seconds a worker waits for a peer's message before giving up (a stall watchdog; default none).
    min_workers: make the group elastic: when workers die, `train_fn` goes on (not restarted) on the others,
    down to min_workers, and workers are added again up to num_workers when the cluster has room; the result
    does not change (distnet.training.elastic). Below min_workers the driver waits up to wait_for_workers
    seconds for capacity, then fails. Returns the results of the workers that finished.
    Ctrl-C stops the group within about a second (actors killed, the private Ray instance shut down) and
    raises KeyboardInterrupt."""
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, received {num_workers!r}")
    if not isinstance(max_failures, int) or max_failures < 0:
        raise ValueError(f"max_failures must be an int >= 0, received {max_failures!r}")
    if min_workers is not None and (not isinstance(min_workers, int) or not 1 <= min_workers <= num_workers):
        raise ValueError(f"min_workers must be an int in [1, num_workers={num_workers}], received {min_workers!r}")
    if min_workers is not None:
        from .elastic import ElasticGroup
        init_ray(address, num_workers, (resources_per_worker or {}).get("CPU", 1))
        try:
            return ElasticGroup(train_fn, args, kwargs, num_workers, min_workers, resources_per_worker, timeout,
                                wait_for_workers).run()
        except KeyboardInterrupt:
            shutdown_private()
            raise
    return _run_group(lambda group: group.run("run_function", train_fn, tuple(args), dict(kwargs or {})),
                      num_workers, resources_per_worker, max_failures, address, placement_strategy, timeout)


def run_script(path, argv=(), num_workers=2, resources_per_worker=None, max_failures=0, address=None,
               placement_strategy="SPREAD", timeout=None, min_workers=None, wait_for_workers=60.0):
    """Run a training script on num_workers actors, as `mpirun -n N python script.py argv` would; with
    min_workers, elastically (see run)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"script {path!r} does not exist")
    path, cwd = os.path.abspath(path), os.getcwd()
    if min_workers is not None:
        from .worker import run_script_file
        return run(run_script_file, num_workers, resources_per_worker, address=address, args=(path, list(argv), cwd),
                   timeout=timeout, min_workers=min_workers, wait_for_workers=wait_for_workers)
    return _run_group(lambda group: group.run("run_script", path, list(argv), cwd), num_workers,
                      resources_per_worker, max_failures, address, placement_strategy, timeout)


def _run_group(body, num_workers, resources_per_worker, max_failures, address, placement_strategy, timeout):
    """body(group) on a fresh WorkerGroup per attempt, restarting up to max_failures times; an interrupt stops
    the group and the private Ray instance (a group's own shutdown runs on every way out of an attempt)."""
    init_ray(address, num_workers, (resources_per_worker or {}).get("CPU", 1))

    def attempt(k):
        group = WorkerGroup(num_workers, resources_per_worker, placement_strategy, timeout,
                            {protocol.RESTART_COUNT: str(k)})
        try:
            return True, body(group), None
        except WorkerFailure as failure:
            return False, failure, str(failure)
        finally:
            group.shutdown()

    def say(text):
        print(f"distnet.ray: {text}", file=sys.stderr, flush=True)

    try:
        out = protocol.with_restarts(attempt, max_failures, say, what="worker group")
    except KeyboardInterrupt:
        shutdown_private()
        raise
    if isinstance(out, WorkerFailure):
        raise out
    return out
