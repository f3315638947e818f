"""The Ray backend: actors as workers, the ring over their transport, failures, restarts, clusters, jobs."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

pytest.importorskip("ray")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_py(code, tmp_path, timeout=240, args=(), env=None):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(code))
    full_env = {**os.environ, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "disabled"}
    for v in ("RAY_ADDRESS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        full_env.pop(v, None)
    full_env.update(env or {})
    try:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=tmp_path)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"Ray driver did not finish within {timeout}s: {e.stdout}\n{e.stderr}") from None


TRAIN = """
import json, os, signal, sys
import numpy as np

def train(seed, backup=None, die_rank=None):
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    distnet.utils.set_random_seed(seed)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(103, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 3, 103)
    m = Sequential([layers.Input((6, 6, 1)), layers.Conv2D(3, 3, activation="relu"), layers.MaxPooling2D(),
                    layers.Flatten(), layers.Dense(8, activation="tanh"), layers.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    class Die(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if comm.rank == die_rank and (self.epoch, batch) == (1, 4) and os.environ["DISTNET_RESTART_COUNT"] == "0":
                os.kill(os.getpid(), signal.SIGKILL)
    cbs = [Die()] + ([callbacks.BackupAndRestore(backup, save_freq=2)] if backup else [])
    h = m.fit(x, y, batch_size=10, epochs=3, verbose=0, callbacks=cbs)
    return {"params": m.flat_state.params.tolist(), "loss": h.history["loss"], "rank": comm.rank, "size": comm.size,
            "backend": comm.backend, "local_size": comm.local_size}
"""


@pytest.mark.timeout(300)
def test_ray_training_matches_one_process_and_survives_a_killed_actor(tmp_path):
    code = TRAIN + """
import distnet, distnet.ray
from distnet.parallel.communicator import LocalCommunicator
distnet.distributed.init("local")
one = train(7)
two = distnet.ray.run(train, num_workers=2, args=(7,))
three = distnet.ray.run(train, num_workers=3, args=(7,))
restarted = distnet.ray.run(train, num_workers=3, args=(7, sys.argv[1] + "/backup", 1), max_failures=2)
json.dump({"one": one, "two": two, "three": three, "restarted": restarted}, open(sys.argv[1] + "/out.json", "w"))
"""
    res = run_py(code, tmp_path, args=(str(tmp_path),))
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    ref = np.array(out["one"]["params"])
    for key, n in (("two", 2), ("three", 3), ("restarted", 3)):
        assert [r["rank"] for r in out[key]] == list(range(n)) and {r["backend"] for r in out[key]} == {"ray"}
        for r in out[key]:
            np.testing.assert_allclose(np.array(r["params"]), ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[key][0]["loss"], out["one"]["loss"], rtol=1e-5)
    assert "worker rank 1 of 3 failed: its actor died" in res.stderr
    assert "restarting the worker group (1 of 2 restarts)" in res.stderr
    assert out["restarted"][0]["params"] == out["three"][0]["params"]     # resumed: bitwise equal


RING = r"""
import json, sys
import numpy as np
import distnet.ray

def check():
    from distnet.parallel import world
    comm = world.current()
    bad = []
    for length in [0, 1, 2, 3, 5, 1001, 300000]:
        mine = np.random.default_rng(comm.rank * 31 + length).normal(size=length).astype(np.float32)
        everyone = np.array(comm.allgather(mine.tolist()), dtype=np.float64).reshape(comm.size, length)
        for alg in ("ring", "star"):
            buf = mine.copy()
            comm.allreduce_(buf, algorithm=alg)
            if not np.allclose(buf, everyone.sum(axis=0), rtol=1e-4, atol=1e-4):
                bad.append((alg, length))
    b = np.full(4, float(comm.rank))
    comm.broadcast_(b, root=comm.size - 1)
    return {"bad": bad, "bcast": b.tolist(), "local": [comm.local_rank, comm.local_size]}

def boom():
    import time
    from distnet.parallel import world
    if world.current().rank == 1:
        time.sleep(1)                   # the others are inside the 64 MiB allreduce by now
        raise ValueError("bad shard on purpose")
    world.current().allreduce_(np.ones(16 << 20, np.float32))

from distnet.parallel.ray import group as group_mod
jobs, _init = [], group_mod.WorkerGroup.__init__
def recording_init(self, *args, **kwargs):    # note each group's job id (it names its /dev/shm outboxes)
    try:
        _init(self, *args, **kwargs)
    finally:
        jobs.append(self.job)
group_mod.WorkerGroup.__init__ = recording_init

print("RESULT", json.dumps(distnet.ray.run(check, num_workers=3)))

def levers(kw):
    import distnet
    from distnet import layers
    from distnet.models import Sequential
    distnet.utils.set_random_seed(3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype(np.float32)
    m = Sequential([layers.Input((6,)), layers.Dense(16, activation="relu"), layers.Dense(3, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", optimizer="adam", **kw)
    m.fit(x, rng.integers(0, 3, 60), batch_size=12, epochs=2, verbose=0)
    return m.flat_state.params.tolist()

for kw in ({"overlap": True, "bucket_bytes": 256}, {"compression": "fp16"}, {"compression": "topk"}):
    out = distnet.ray.run(levers, num_workers=3, args=(kw,))
    print("LEVER", json.dumps(kw), all(o == out[0] for o in out))
try:
    distnet.ray.run(boom, num_workers=3)
except distnet.ray.WorkerFailure as e:
    print("FAILURE", e.rank, type(e.cause).__name__)
import glob, os
print("OUTBOXES", jobs and glob.glob(f"/dev/shm/distnet-{jobs[-1]}-*"))
ours = set()          # socket inodes of this driver and every Ray process (gcs, raylet, workers, agents)
for proc in glob.glob("/proc/[0-9]*"):
    try:
        cmd = open(proc + "/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        if "ray" not in cmd and proc != f"/proc/{os.getpid()}":
            continue
        for fd in glob.glob(proc + "/fd/*"):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                ours.add(target[8:-1])
    except OSError:
        pass
lines = [ln for f in ("/proc/net/tcp", "/proc/net/tcp6") for ln in open(f).read().splitlines()[1:]
         if ln.split()[9] in ours]
print("LISTEN", "\n".join(lines))
import ray
print("GCS", ray.get_runtime_context().gcs_address)
"""


def _listening_addresses(proc_net):
    """Local addresses of listening TCP sockets from /proc/net/tcp{,6} text."""
    out = set()
    for line in proc_net.splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":           # LISTEN
            out.add(parts[1].rsplit(":", 1)[0])
    return out


@pytest.mark.timeout(200)
def test_ring_over_ray_actors_failures_and_loopback_binding(tmp_path, ray_tmpdir):
    # A `ray start` cluster left behind (or killed) leaves ray_current_cluster: a private instance ignores it.
    os.makedirs(os.path.join(ray_tmpdir, "ray"))
    with open(os.path.join(ray_tmpdir, "ray", "ray_current_cluster"), "w") as f:
        f.write("127.0.0.1:1")
    res = run_py(RING, tmp_path, env={"RAY_TMPDIR": ray_tmpdir})
    assert res.returncode == 0, res.stderr[-3000:]
    # rank 1 raised while the others were inside a 64 MiB allreduce: their outboxes are gone with the group
    assert "OUTBOXES []" in res.stdout, res.stdout[-1500:]
    result = json.loads(res.stdout.split("RESULT ", 1)[1].splitlines()[0])
    assert all(r["bad"] == [] for r in result), result
    assert all(r["bcast"] == [2.0] * 4 for r in result)
    assert sorted(r["local"][0] for r in result) == [0, 1, 2] and {r["local"][1] for r in result} == {3}
    assert "FAILURE 1 RayTaskError" in res.stdout or "FAILURE 1 ValueError" in res.stdout, res.stdout[-1500:]
    levers = [ln for ln in res.stdout.splitlines() if ln.startswith("LEVER")]
    assert len(levers) == 3 and all(ln.endswith("True") for ln in levers), levers   # replicas identical
    assert res.stdout.split("GCS ", 1)[1].startswith("127.0.0.1:")
    # every socket Ray (and our ring) listens on is loopback: 127.0.0.1, or ::ffff:127.0.0.1 in tcp6
    listen = _listening_addresses(res.stdout.split("LISTEN", 1)[1])
    loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
    assert listen and listen <= loopback | {a for a in listen if a.endswith("0100007F")}, listen


CLUSTER = """
import json, sys
import numpy as np
from ray.cluster_utils import Cluster
import ray, distnet.ray
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
worker_node = cluster.add_node(num_cpus=2)
ray.init(address=cluster.address)

def where():
    from distnet.parallel import world
    c = world.current()
    buf = np.arange(1000, dtype=np.float32) * (c.rank + 1)
    c.allreduce_(buf)
    return {"node": ray.get_runtime_context().get_node_id(), "ok": bool(np.allclose(buf, np.arange(1000) * 10)),
            "shm_right": c.ring_transport.shm_right}

spread = distnet.ray.run(where, num_workers=4)
print("SPREAD", json.dumps(spread))

def long_training(marker):
    import os, time
    from distnet.parallel import world
    c = world.current()
    if os.environ["DISTNET_RESTART_COUNT"] == "0":
        open(marker, "w").close()
        while True:                      # keep exchanging until a node disappears under us
            c.allreduce_(np.ones(10, np.float32))
            time.sleep(0.05)
    return c.size

import threading, os, time
marker = sys.argv[1] + "/started"
result = {}
job = threading.Thread(target=lambda: result.update(
    out=distnet.ray.run(long_training, num_workers=4, args=(marker,), max_failures=2)))
job.start()
while not os.path.exists(marker):
    time.sleep(0.1)
time.sleep(1)
cluster.remove_node(worker_node)        # the node under half of the workers goes away
cluster.add_node(num_cpus=2)            # a replacement joins; the restarted group is placed on it
job.join(180)
print("RESTARTED", result.get("out"))
"""


@pytest.mark.timeout(300)
def test_multi_node_cluster_spreads_workers_and_survives_losing_a_node(tmp_path, ray_tmpdir):
    res = run_py(CLUSTER, tmp_path, args=(str(tmp_path),), timeout=280, env={"RAY_TMPDIR": ray_tmpdir})
    assert res.returncode == 0, res.stderr[-3000:]
    spread = json.loads(res.stdout.split("SPREAD ", 1)[1].splitlines()[0])
    assert len({s["node"] for s in spread}) == 2 and all(s["ok"] for s in spread)
    for r, s in enumerate(spread):       # shared memory exactly where the right neighbour is on the same node
        assert s["shm_right"] == (spread[(r + 1) % 4]["node"] == s["node"])
    assert not all(s["shm_right"] for s in spread)      # TCP between nodes
    assert "RESTARTED [4, 4, 4, 4]" in res.stdout
    assert "failed: its actor died" in res.stderr


def _cluster_commands(key):
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(open(os.path.join(ROOT, "cluster.yaml")))
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    out = []
    for cmd in config[key]:
        cmd = (cmd.replace("~/distnet-venv/bin/ray", ray_bin).replace("$RAY_HEAD_IP", "127.0.0.1")
               .replace("--autoscaling-config=~/ray_bootstrap_config.yaml", "")   # written by `ray up` only
               .replace("$(hostname -I | awk '{print $1}')", "127.0.0.1"))
        out.append(cmd)
    return out


@pytest.mark.timeout(300)
def test_ray_job_submit_on_a_head_started_with_cluster_yaml_commands(tmp_path, ray_tmpdir):
    """`ray up` needs SSH; instead run cluster.yaml's own head start commands on 127.0.0.1 and submit the README's
    job (distnet-launch --backend ray inside `ray job submit`). The head runs in Ray's single-machine mode, which
    keeps every port on 127.0.0.1 (checked). That mode refuses a second node, so the worker start command is not
    joined here; several nodes on one machine are tested with ray.cluster_utils.Cluster above."""
    mode = "loopback"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": ray_tmpdir,
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    if mode == "loopback":
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    commands = _cluster_commands("head_start_ray_commands")
    if mode == "cluster":
        commands += _cluster_commands("worker_start_ray_commands")
    try:
        for cmd in commands:
            res = subprocess.run(cmd, shell=True, capture_output=True, text=True, env=env, timeout=120)
            assert res.returncode == 0, f"{cmd}\n{res.stdout[-1500:]}\n{res.stderr[-1500:]}"
        n = 2 if mode == "loopback" else 4
        job = subprocess.run([ray_bin, "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ROOT,
                              "--", sys.executable, "-m", "launch", "--backend", "ray", "-n", str(n),
                              "examples/train_mlp.py", "--epochs", "2"],
                             capture_output=True, text=True, env=env, timeout=240)
        out = job.stdout + job.stderr
        assert job.returncode == 0, out[-3000:]
        assert "held-out accuracy" in out and f"{n} worker(s)" in out and "succeeded" in out
        if mode == "loopback":
            gcs = [ln for f in ("/proc/net/tcp", "/proc/net/tcp6") for ln in open(f).read().splitlines()[1:]
                   if ln.split()[3] == "0A" and ln.split()[1].endswith(f":{6379:04X}")]
            assert gcs and all(ln.split()[1].rsplit(":", 1)[0].endswith("0100007F") for ln in gcs), gcs
        else:
            status = subprocess.run([ray_bin, "status"], capture_output=True, text=True, env=env, timeout=60)
            assert status.stdout.count(" node_") >= 2, status.stdout    # head + the worker node joined
    finally:     # stop this head only (`ray stop` would stop every Ray instance on the machine): its processes
        from launch.cleanup import processes_with_env     # carry our RAY_TMPDIR
        from tests.processes import gone
        head = processes_with_env("RAY_TMPDIR", ray_tmpdir)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in head:
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
            if all(gone(pid) for pid in head):
                break


@pytest.mark.timeout(200)
def test_distnet_launch_backend_ray(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    for v in ("RAY_ADDRESS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(v, None)
    dry = subprocess.run([sys.executable, "-m", "launch", "--dry-run", "--backend", "ray", "-n", "3",
                          "examples/train_mlp.py"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert dry.stdout.strip().endswith("-m distnet.parallel.ray.job -n 3 --max-failures 0 examples/train_mlp.py")
    res = subprocess.run([sys.executable, "-m", "launch", "--backend", "ray", "-n", "2", "--rank0-only",
                          "examples/train_mlp.py", "--epochs", "3"], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("Epoch 1/3") == 1 and "held-out accuracy" in res.stdout and "2 worker(s)" in res.stdout
    assert "rank 1/2" not in res.stdout


STALL = """
import time, sys
import numpy as np
import distnet.ray

def train():
    import distnet
    from distnet import callbacks, layers
    from distnet.models import Sequential
    comm = distnet.distributed.init()
    m = Sequential([layers.Input((3,)), layers.Dense(4), layers.Dense(1)])
    m.compile(loss="mse", optimizer="sgd")
    class Stall(callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if comm.rank == 2 and batch == 3:
                time.sleep(600)           # stuck without dying
    m.fit(np.zeros((64, 3)), np.zeros(64), batch_size=8, epochs=5, verbose=0, callbacks=[Stall()])

t0 = time.time()
try:
    distnet.ray.run(train, num_workers=3, timeout=3)
except distnet.ray.WorkerFailure as e:
    print("FAILED", e.rank, "|", e.stalled, "|", str(e).splitlines()[0], "|", round(time.time() - t0, 1))
"""


@pytest.mark.timeout(200)
def test_ray_stall_is_detected_by_the_timeout_and_names_the_silent_rank(tmp_path):
    res = run_py(STALL, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("FAILED"))
    assert "| [2] |" in line and "stalled: rank(s) [2]" in line, line
    assert float(line.rsplit("|", 1)[1]) < 60, line


INTERRUPTED = """
import faulthandler, os, signal, sys, time
import numpy as np
import distnet.ray
faulthandler.register(signal.SIGUSR1, all_threads=True)     # the test asks for the stacks when it hangs

def train(marker):
    from distnet.parallel import world
    c = world.current()
    with open(f"{marker}.{c.rank}", "w") as f:
        f.write(str(os.getpid()))
    while True:                         # a long training: exchanging until interrupted
        c.allreduce_(np.ones(1 << 20, np.float32))
        time.sleep(0.01)

if sys.argv[1] == "run":
    distnet.ray.run(train, num_workers=2, args=(sys.argv[2],))
else:
    train(sys.argv[2])                  # as a script under distnet-launch --backend ray
"""


@pytest.mark.timeout(200)
@pytest.mark.parametrize("how", ["distnet.ray.run", "distnet-launch"])
def test_ctrl_c_stops_the_ray_group_within_seconds(tmp_path, how):
    from tests.processes import gone
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    marker = str(tmp_path / "pid")
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    cmd = ([sys.executable, str(script), "run", marker] if how == "distnet.ray.run" else
           [sys.executable, "-m", "launch", "--backend", "ray", "-n", "2", str(script), "script", marker])
    # SIGINT's default action in the child, as in a terminal: a test run started in the background by a shell
    # (`cmd &`, nohup) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 150
    while not all(os.path.exists(f"{marker}.{r}") for r in (0, 1)) and proc.poll() is None:
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.2)
    time.sleep(1)
    actors = [int(open(f"{marker}.{r}").read()) for r in (0, 1)]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        if how == "distnet.ray.run":
            proc.send_signal(signal.SIGUSR1)          # where the driver is stuck (faulthandler, on stderr)
        time.sleep(2)
        proc.kill()
        out, err = proc.communicate()
        for d in glob.glob(f"/tmp/distnet-ray-{proc.pid}-*"):      # its atexit cleanup never ran
            shutil.rmtree(d, ignore_errors=True)
        raise AssertionError(f"not stopped 60 s after SIGINT; its stderr:\n{err[-6000:]}") from None
    finally:
        proc.kill()
    elapsed = time.monotonic() - t0
    assert elapsed < 10, (elapsed, err[-2000:])
    if how == "distnet-launch":
        assert proc.returncode == 130 and "distnet-launch: interrupted" in err, err[-2000:]
    else:
        assert proc.returncode == -signal.SIGINT and "KeyboardInterrupt" in err, err[-2000:]
    assert all(gone(pid) for pid in actors)
    assert glob.glob(f"/tmp/distnet-ray-{proc.pid}-*") == []         # the private instance's session files


@pytest.mark.timeout(120)
def test_an_unreachable_ray_address_fails_fast_and_names_it(tmp_path):
    from distnet.parallel.ray.cluster import CONNECT_TIMEOUT, check_reachable
    code = """
import distnet.ray
try:
    distnet.ray.run(print, num_workers=2)
except ConnectionError as e:
    print("ERROR", e)
"""
    t0 = time.monotonic()
    res = run_py(code, tmp_path, env={"RAY_ADDRESS": "127.0.0.1:1"}, timeout=60)
    assert "ERROR cannot reach the Ray cluster at '127.0.0.1:1' within 10 s" in res.stdout, res.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_ADDRESS": "127.0.0.1:1"}
    res = subprocess.run([sys.executable, "-m", "launch", "--backend", "ray", "-n", "2", "examples/train_mlp.py"],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert res.returncode == 1 and "cannot reach the Ray cluster at '127.0.0.1:1'" in res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert time.monotonic() - t0 < 2 * CONNECT_TIMEOUT + 20
    # an address that never answers (a listener whose backlog is full drops new connections): bounded too
    import socket
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    queued = [socket.socket() for _ in range(3)]
    for q in queued:
        q.setblocking(False)
        q.connect_ex(("127.0.0.1", port))
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}' within 1 s"):
        check_reachable(f"127.0.0.1:{port}", timeout=1)
    assert time.monotonic() - t0 < 3
    for q in queued + [server]:
        q.close()


def test_a_private_ray_instance_that_times_out_at_startup_is_started_afresh_once(monkeypatch, capsys):
    """Ray waits a fixed 30 s for its raylet; on a machine whose cores are all busy that can fail. The private
    instance is started afresh once (its daemons from the failed try killed, its directory removed); a second
    failure, or any other error, is raised."""
    from distnet.parallel.ray import cluster
    daemons = []

    class FakeRay:
        def __init__(self, failures, message="The current node timed out during startup."):
            self.failures, self.message, self.calls = failures, message, []

        def is_initialized(self):
            return False

        def init(self, **kw):
            self.calls.append(kw["_temp_dir"])
            # a daemon whose command line names the session directory, as Ray's GCS and raylet do
            daemons.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                             f"--session-dir={kw['_temp_dir']}/session_1"]))
            deadline = time.monotonic() + 10       # Popen returns while execve runs: /proc shows no argv yet
            while b"--session-dir" not in open(f"/proc/{daemons[-1].pid}/cmdline", "rb").read():
                assert time.monotonic() < deadline
                time.sleep(0.01)
            if len(self.calls) <= self.failures:
                raise Exception(self.message)

        def shutdown(self):
            pass

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    fake = FakeRay(failures=1)
    monkeypatch.setattr(cluster, "ray_module", lambda: fake)
    try:
        assert cluster.init_ray(num_workers=2) is fake
        assert len(fake.calls) == 2 and not os.path.exists(fake.calls[0])
        assert daemons[0].wait(10) == -signal.SIGKILL and daemons[1].poll() is None
        assert "did not start in time" in capsys.readouterr().err
        cluster.shutdown_private()            # a normal stop: ray.shutdown() ends Ray's daemons
        assert not os.path.exists(fake.calls[1])
        for failures, message in ((2, "The current node timed out during startup."), (1, "bad num_cpus")):
            fake = FakeRay(failures, message)
            with pytest.raises(Exception, match=message):
                cluster.init_ray(num_workers=2)
            assert len(fake.calls) == (2 if failures == 2 else 1) and cluster._PRIVATE_DIR is None
            assert not any(os.path.exists(c) for c in fake.calls)
    finally:
        for d in daemons:
            d.kill()
            d.wait()
