"""The Ray backend: workers are Ray actors (one per rank, placed by a placement group) and gradients are summed
by the same `ring_allreduce` as under MPI.

    import distnet.ray
    results = distnet.ray.run(train, num_workers=4, max_failures=2)      # train() builds and fits a model

Rooms: transport.py (the ring's TCP wire with /dev/shm data between co-located workers, and the mailbox for
control messages), communicator.py (RayCommunicator), worker.py (the actor and its bootstrap), cluster.py
(joining a cluster, or a private loopback-only instance), group.py (placement, running, failures, restarts),
job.py (the driver that `distnet-launch --backend ray` runs). May import: parallel's communicator, ring,
protocol, runtime, world; never training/ or models/.
"""
from .cluster import init_ray, shutdown_private
from .communicator import RayCommunicator
from .group import WorkerFailure, WorkerGroup, run, run_script

__all__ = ["run", "run_script", "init_ray", "shutdown_private", "RayCommunicator", "WorkerFailure", "WorkerGroup"]
