"""The driver of an elastic worker group: workers leave (an actor or its node dies) and join (capacity comes
back) while `train_fn` keeps running on the others, from num_workers down to min_workers.

    distnet.ray.run(train_fn, num_workers=4, min_workers=2)

When a worker dies, the survivors' collectives fail (their ring breaks); the driver sees the actor's death,
numbers the survivors 0..n-1 in their old order, wires a new ring between them and offers each its new rank;
they redo the interrupted step (distnet.training.elastic). When the cluster has room for another worker (up to
num_workers), the driver starts one, wires the next ring including it, and asks the members to change at their
next step boundary; the newcomer receives rank 0's training state there. Below min_workers the driver waits up
to `wait_for_workers` seconds for capacity, then ends the job with a message.
"""
import sys
import time
import uuid

from .cluster import ray_module as _ray
from .group import WorkerFailure
from .transport import remove_outboxes
from .worker import Worker

_DEATHS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError", "OwnerDiedError")


class NotEnoughWorkers(WorkerFailure):
    """An elastic group fell below min_workers and no capacity came back in time."""

    def __init__(self, message, size):
        RuntimeError.__init__(self, message)
        self.rank, self.size, self.cause, self.stalled = None, size, None, None


JOIN_START_TIMEOUT = 60.0   # seconds a new worker may take to start and listen
GROWTH_BACKOFF = 5.0        # seconds to wait after a new worker failed to start


def _died(error):
    return type(error).__name__ in _DEATHS or any(type(c).__name__ in _DEATHS for c in (error.__cause__,) if c)


class ElasticGroup:
    def __init__(self, fn, args, kwargs, num_workers, min_workers, resources_per_worker=None, timeout=None,
                 wait_for_workers=60.0, env=None):
        self.ray = _ray()
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs or {})
        self.num_workers, self.min_workers, self.timeout = num_workers, min_workers, timeout
        self.wait_for_workers, self.env = wait_for_workers, dict(env or {})
        resources = dict(resources_per_worker or {"CPU": 1})
        self.cpus = resources.pop("CPU", 1)
        self.resources = resources or None
        self.generation = 0
        self.job = uuid.uuid4().hex[:10]
        self.members, self.refs, self.results = [], {}, {}
        self.last_growth_check = 0.0
        self.joining = []           # (actor, generation) of workers asked to join and not yet seen to be in
        self.cancelled = []

    # -- actors -------------------------------------------------------------------------------------------
    def _new_actor(self, rank, size):
        cls = self.ray.remote(Worker)
        return cls.options(num_cpus=self.cpus, resources=self.resources, max_concurrency=8,
                           scheduling_strategy="SPREAD").remote(rank, size, self.env)

    def _hosts(self, actors):
        node_ids = self.ray.get([a.node_id.remote() for a in actors])
        hosts = {n["NodeID"]: n["NodeManagerAddress"] for n in self.ray.nodes() if n.get("Alive")}
        return node_ids, [hosts[n] for n in node_ids]

    def _start(self):
        n = self.num_workers
        self.members = [self._new_actor(r, n) for r in range(n)]
        node_ids, hosts = self._hosts(self.members)
        addresses = self.ray.get([a.open_ring.remote(h, self.timeout) for a, h in zip(self.members, hosts)])
        self.ray.get([a.connect.remote(self.members, node_ids, addresses, self.timeout, f"{self.job}-0", True)
                      for a in self.members])
        for a in self.members:
            self.refs[a.run_function.remote(self.fn, self.args, self.kwargs)] = a

    def _rewire(self, members, left=(), joined=0):
        """Wire a ring between `members` (new ranks: their order) and offer every one its place."""
        self.generation += 1
        size = len(members)
        node_ids, hosts = self._hosts(members)
        addresses = self.ray.get([a.open_next_ring.remote(h, self.timeout, r, size)
                                  for r, (a, h) in enumerate(zip(members, hosts))])
        config = {"size": size, "left": list(left), "joined": joined, "generation": self.generation}
        self.ray.get([a.reconfigure.remote({**config, "rank": r}, members, node_ids, addresses, self.timeout,
                                           f"{self.job}-{self.generation}") for r, a in enumerate(members)])
        self.members = list(members)

    # -- events -------------------------------------------------------------------------------------------
    def _lost(self, actor):
        old_rank = self.members.index(actor)
        survivors = [a for a in self.members if a is not actor]
        for a in survivors:
            a.interrupt.remote(self.generation)
        joiners = []
        if len(survivors) < self.min_workers:
            joiners = self._wait_for_capacity(len(survivors))
        print(f"distnet.ray: rank {old_rank} of {len(self.members)} left (its actor died); continuing on "
              f"{len(survivors) + len(joiners)} worker(s)", file=sys.stderr, flush=True)
        self._rewire(survivors + joiners, left=[old_rank], joined=len(joiners))

    def _wait_for_capacity(self, have):
        """Below min_workers: start workers as capacity returns, for up to wait_for_workers seconds."""
        joiners, deadline = [], time.monotonic() + self.wait_for_workers
        while have + len(joiners) < self.min_workers and time.monotonic() < deadline:
            joiner = self._start_joiner() if self._room() else None
            if joiner is not None:
                joiners.append(joiner)
            else:
                time.sleep(0.5)
        if have + len(joiners) < self.min_workers:
            message = (f"only {have + len(joiners)} worker(s) left, fewer than min_workers={self.min_workers}; "
                       f"waited {self.wait_for_workers:g} s for capacity to return")
            for a in self.members + joiners:
                try:
                    a.fail_membership.remote(message)
                except Exception:
                    pass
            self.shutdown(self.members + joiners)
            raise NotEnoughWorkers(message, len(self.members))
        return joiners

    def _room(self):
        free = self.ray.available_resources()
        return free.get("CPU", 0) >= self.cpus and all(free.get(k, 0) >= v for k, v in (self.resources or {}).items())

    def _start_joiner(self):
        """A new worker, ready to join; None when it could not start (Ray placed it on a node that has just died
        and that Ray does not know is dead yet: its CPUs still look free until the node misses its heartbeats)."""
        actor = self._new_actor(len(self.members), len(self.members) + 1)
        try:
            self.ray.get(actor.prepare_join.remote(self.timeout), timeout=JOIN_START_TIMEOUT)
        except Exception as e:
            if not (_died(e) or type(e).__name__ == "GetTimeoutError"):
                raise
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:
                pass
            return None
        self.refs[actor.run_function.remote(self.fn, self.args, self.kwargs)] = actor
        return actor

    def _maybe_grow(self):
        now = time.monotonic()
        if len(self.members) >= self.num_workers or now - self.last_growth_check < 1.0 or self.results:
            return
        self.last_growth_check = now
        if not self._room():
            return
        joiner = self._start_joiner()
        if joiner is None:
            self.last_growth_check = now + GROWTH_BACKOFF      # try again later
            return
        self._rewire(self.members + [joiner], joined=1)
        self.joining.append((joiner, self.generation))
        for a in self.members[:-1]:
            a.request_change.remote()
        print(f"distnet.ray: a worker joins; the group grows to {len(self.members)} at the next step",
              file=sys.stderr, flush=True)

    # -- the run ------------------------------------------------------------------------------------------
    def run(self):
        self._start()
        try:
            while True:
                done, _ = self.ray.wait(list(self.refs), num_returns=1, timeout=0.5)
                if done:
                    actor = self.refs.pop(done[0])
                    if any(actor is c for c in self.cancelled):
                        continue               # a joiner the job finished without: its error is expected
                    try:
                        self.results[actor] = self.ray.get(done[0])
                        self._cancel_late_joiners(actor)
                    except Exception as e:
                        if not _died(e):
                            rank = self.members.index(actor) if actor in self.members else -1
                            self.shutdown(self.members)
                            raise WorkerFailure(rank, len(self.members), e) from e
                        if actor in self.members and not self.results:
                            self._lost(actor)
                    if all(a in self.results for a in self.members):
                        return [self.results[a] for a in self.members]
                else:
                    self._maybe_grow()
        finally:
            self.shutdown(self.members + list(self.refs.values()))

    def _cancel_late_joiners(self, finished):
        """A member finished training: joiners whose generation it never reached will never be admitted."""
        if not self.joining:
            return
        reached = self.ray.get(finished.generation.remote())
        for joiner, generation in list(self.joining):
            if generation > reached:
                joiner.fail_membership.remote("the job finished before this worker could join")
                self.members = [a for a in self.members if a is not joiner]
                self.cancelled.append(joiner)
                print("distnet.ray: training ended before the new worker could join; it is stopped",
                      file=sys.stderr, flush=True)
            self.joining.remove((joiner, generation))

    def shutdown(self, actors):
        seen = []
        for a in actors:
            if any(a is b for b in seen):
                continue
            seen.append(a)
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:
                pass
        time.sleep(0.2)                   # let the killed workers go before removing their shared memory
        remove_outboxes(f"{self.job}-*")
