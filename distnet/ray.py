"""Ray Train-style API: `distnet.ray.run(train_fn, num_workers=4, resources_per_worker={"CPU": 1},
max_failures=2)`. See distnet.parallel.ray."""
from .parallel.ray import RayCommunicator, WorkerFailure, init_ray, run, run_script

__all__ = ["run", "run_script", "init_ray", "RayCommunicator", "WorkerFailure"]
