"""Cost of losing a worker: the time from its death to the next completed step, on the same job, three ways:
elastic (Ray: the survivors go on), restart (Ray: the group is recreated and resumes from its last
BackupAndRestore backup), and mpi-relaunch (`distnet-launch --min-workers`: the host of the dead rank stops
answering, the job is relaunched on the other hosts and resumes from its last backup).

    distnet-bench elastic [--repeat 5] [--workers 3] [--modes elastic,restart,mpi-relaunch]

The MPI hosts are names of this machine (127.0.0.2, 127.0.0.3, ...) reached through LOCAL_SSH, an ssh stand-in
that runs the command here, or fails as ssh does for a dead host once `DIR/dead-HOST` exists.
"""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

LOCAL_SSH = r"""#!/bin/sh
# ssh stand-in: [ssh options] HOST COMMAND... runs COMMAND on this machine, unless @DIR@/dead-HOST exists
while [ $# -gt 0 ]; do
  case "$1" in
    -[BbcDEeFIiJLlmOoPpQRSWw]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=$1; shift
echo "$host" >> "@DIR@/contacted"
if [ -e "@DIR@/dead-$host" ]; then echo "ssh: connect to host $host port 22: No route to host" >&2; exit 255; fi
exec /bin/sh -c "$*"
"""


def local_ssh(directory):
    """Write LOCAL_SSH for `directory` (where dead-HOST markers go) as directory/ssh; return its path."""
    path = os.path.join(directory, "ssh")
    with open(path, "w") as f:
        f.write(LOCAL_SSH.replace("@DIR@", directory))
    os.chmod(path, 0o755)
    return path


def local_hosts(n):
    """n names of this machine that mpirun reaches through ssh: 127.0.0.2, 127.0.0.3, ..."""
    return [f"127.0.0.{k + 2}" for k in range(n)]


def train(out_dir, kill_at, backup=None, steps_after=20, dead_host=None):
    """The job: an MLP on synthetic data; rank 2 writes the time and dies after step `kill_at` (first attempt;
    with `dead_host`, marking that host dead for LOCAL_SSH); rank 0 records when the next step ends."""
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    distnet.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    m = Sequential([layers.Input((32,)), layers.Dense(256, activation="relu"), layers.Dense(256, activation="relu"),
                    layers.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam")
    first_attempt = os.environ.get("DISTNET_RESTART_COUNT", "0") == "0"

    class Probe(callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if comm.rank == 2 and batch == kill_at and first_attempt and getattr(comm, "generation", 0) == 0:
                with open(f"{out_dir}/died", "w") as f:
                    f.write(repr(time.time()))
                if dead_host:                  # MPI: the host goes with its rank
                    open(f"{out_dir}/dead-{dead_host}", "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
            if comm.rank == 0 and batch > kill_at and not os.path.exists(f"{out_dir}/next"):
                with open(f"{out_dir}/next", "w") as f:
                    f.write(repr(time.time()))
    cbs = [Probe()] + ([callbacks.BackupAndRestore(backup, save_freq=1)] if backup else [])
    m.fit(x, y, batch_size=60, epochs=1, verbose=0, callbacks=cbs, steps_per_epoch=kill_at + steps_after)
    return comm.size


def relaunch(d, workers, kill_at):
    """distnet-launch --min-workers on `workers` local hosts, rank 2's host dying with it."""
    hosts = local_hosts(workers)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = [sys.executable, "-m", "launch", "--hosts", ",".join(f"{h}:1" for h in hosts), "--ssh", local_ssh(d),
            "--threads", "1", "--min-workers", "2", "--max-restarts", "1", "-n", str(workers),
            "-m", "distnet.bench.elastic", d, str(kill_at), d + "/backup", hosts[2]]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"distnet-launch --min-workers failed (exit {res.returncode}): {res.stderr[-2000:]}")


def once(mode, workers, kill_at=10):
    with tempfile.TemporaryDirectory() as d:
        if mode == "mpi-relaunch":
            relaunch(d, workers, kill_at)
        elif mode == "elastic":
            import distnet.ray
            distnet.ray.run(train, num_workers=workers, min_workers=2, args=(d, kill_at))
        else:
            import distnet.ray
            distnet.ray.run(train, num_workers=workers, max_failures=1, args=(d, kill_at, d + "/backup"))
        died = float(open(f"{d}/died").read())
        return float(open(f"{d}/next").read()) - died


MODES = ("elastic", "restart", "mpi-relaunch")


def main(repeat=5, workers=3, modes=MODES):
    bad = [m for m in modes if m not in MODES]
    if bad or workers < 3:
        raise SystemExit(f"distnet-bench elastic: modes are {', '.join(MODES)} and --workers at least 3 (rank 2 "
                         f"dies); received modes {','.join(modes)}, --workers {workers}")
    times = {m: [] for m in modes}
    for _ in range(repeat):
        for mode in times:                  # alternate the two, side by side
            times[mode].append(once(mode, workers))
    rows = []
    for mode, t in times.items():
        rows.append({"kind": "elastic", "mode": mode, "workers": workers, "median_s": statistics.median(t),
                     "min_s": min(t), "max_s": max(t), "runs": len(t)})
        print(f"{mode:12s} death -> next completed step: median {statistics.median(t):.2f} s "
              f"[{min(t):.2f}-{max(t):.2f}] over {len(t)} runs ({workers} workers)")
    return rows


if __name__ == "__main__":            # one worker of mpi-relaunch: OUT KILL_AT BACKUP DEAD_HOST
    train(sys.argv[1], int(sys.argv[2]), sys.argv[3], dead_host=sys.argv[4])
