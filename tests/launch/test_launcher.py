"""distnet-launch: host specs, cluster.yaml, dry runs, bad input, and real launches with failures and restarts."""
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from distnet.parallel import protocol
from launch import cli, hosts, mpi
from tests.processes import descendants, gone

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = os.path.join(ROOT, "cluster.yaml")


def launch(*args, timeout=120, env=None):
    env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    for v in protocol.BLAS_VARS:
        env.pop(v, None)
    try:
        return subprocess.run([sys.executable, "-m", "launch", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"distnet-launch {args} did not finish in {timeout}s: {e.stdout} {e.stderr}") from None


# -- host specifications ---------------------------------------------------------------------------------
def test_hosts_list():
    assert hosts.parse_hosts("a:4,b:2") == [("a", 4), ("b", 2)]
    assert hosts.parse_hosts("a,b,a") == [("a", 2), ("b", 1)]
    for bad, msg in [("a:0", "positive integer"), ("a:x", "positive integer"), ("a,,b", "empty host"),
                     ("a b:2", "not a valid host name")]:
        with pytest.raises(hosts.HostSpecError, match=msg):
            hosts.parse_hosts(bad)


def test_hostfile(tmp_path):
    f = tmp_path / "hosts"
    f.write_text("# cluster\nnode1 slots=4\nnode2 slots=2 max_slots=2\nnode3:3\nnode4\n\n")
    assert hosts.parse_hostfile(str(f)) == [("node1", 4), ("node2", 2), ("node3", 3), ("node4", 1)]
    f.write_text("node1 cpus=4\n")
    with pytest.raises(hosts.HostSpecError, match=r"line 1 .*expected 'host slots=N', found 'cpus=4'"):
        hosts.parse_hostfile(str(f))
    f.write_text("node1 slots=-1\n")
    with pytest.raises(hosts.HostSpecError, match="slots must be a positive integer"):
        hosts.parse_hostfile(str(f))
    f.write_text("# nothing\n")
    with pytest.raises(hosts.HostSpecError, match="lists no hosts"):
        hosts.parse_hostfile(str(f))
    with pytest.raises(hosts.HostSpecError, match="does not exist"):
        hosts.parse_hostfile(str(tmp_path / "missing"))


def test_cluster_yaml_gives_head_and_workers_with_cpu_slots():
    pytest.importorskip("yaml")
    assert hosts.parse_cluster_yaml(CLUSTER) == [("10.0.0.1", 2), ("10.0.0.2", 2), ("10.0.0.3", 2)]
    assert hosts.parse_cluster_yaml(CLUSTER, slots_per_host=3)[0] == ("10.0.0.1", 3)


def test_cluster_yaml_validates_against_rays_own_schema():
    yaml = pytest.importorskip("yaml")
    jsonschema = pytest.importorskip("jsonschema")
    autoscaler = pytest.importorskip("ray.autoscaler")
    with open(os.path.join(os.path.dirname(autoscaler.__file__), "ray-schema.json")) as f:
        schema = json.load(f)
    config = yaml.safe_load(open(CLUSTER))
    jsonschema.validate(config, schema)
    from ray.autoscaler._private.util import prepare_config, validate_config
    validate_config(prepare_config(config))       # what `ray up` does before it connects anywhere


def test_cluster_yaml_errors(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "c.yaml"
    f.write_text("cluster_name: x\nprovider: {type: aws, region: us-east-1}\n")
    with pytest.raises(hosts.HostSpecError, match="provider.type 'local'"):
        hosts.parse_cluster_yaml(str(f))
    f.write_text("cluster_name: x\nprovider: {type: local, worker_ips: [a]}\n")
    with pytest.raises(hosts.HostSpecError, match="head_ip is missing"):
        hosts.parse_cluster_yaml(str(f))
    f.write_text("provider: [\n")
    with pytest.raises(hosts.HostSpecError, match="not valid YAML"):
        hosts.parse_cluster_yaml(str(f))


# -- commands --------------------------------------------------------------------------------------------
def test_dry_run_prints_the_exact_mpirun_command(capsys):
    script = os.path.join(ROOT, "examples", "train_mlp.py")
    assert cli.main(["--dry-run", "-n", "8", script, "--epochs", "1"]) == 0
    out = capsys.readouterr().out.strip()
    threads = max(1, (os.cpu_count() or 1) // 8)
    assert f"OPENBLAS_NUM_THREADS={threads}" in out and f"OMP_NUM_THREADS={threads}" in out
    # each rank runs under its supervisor (launch/supervise.py), which runs the script
    assert out.endswith(f"mpirun -n 8 {sys.executable} -m launch.supervise -- {sys.executable} {script} --epochs 1")
    assert cli.main(["--dry-run", "--hosts", "a:2,b:2", script]) == 0
    out = capsys.readouterr().out
    assert "-n 4" in out and ("-hosts a:2,b:2" in out or "--host a:2,b:2" in out)
    assert "OMP_NUM_THREADS" not in out       # remote cores unknown: each worker sets its own
    for argv in (["-m", "pkg.train", "--epochs", "1"], ["--", "-m", "pkg.train", "--epochs", "1"]):
        assert cli.main(["--dry-run", "-n", "2", *argv]) == 0       # a module, as torchrun -m
        assert capsys.readouterr().out.strip().endswith(f"-- {sys.executable} -m pkg.train --epochs 1")


def test_ray_backend_takes_the_head_address_from_cluster_yaml(capsys):
    pytest.importorskip("yaml")
    script = os.path.join(ROOT, "examples", "train_mlp.py")
    assert cli.main(["--dry-run", "--backend", "ray", "--cluster", CLUSTER, "-n", "6", script]) == 0
    assert "--address 10.0.0.1:6379" in capsys.readouterr().out


def test_open_mpi_commands_forward_env_and_oversubscribe():
    cmd = mpi.command("mpirun", "openmpi", 8, None, ["python", "t.py"], env_names=["OMP_NUM_THREADS"])
    assert cmd == ["mpirun", "-n", "8", "--oversubscribe", "-x", "OMP_NUM_THREADS", "python", "t.py"]
    env = mpi.worker_env({}, "openmpi", 1, "/tmp/x", 0)
    assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1" and "oversubscribe" in env["PRTE_MCA_rmaps_default_mapping_policy"]
    assert mpi.command("mpirun", "hydra", 2, [("a", 1), ("b", 1)], ["p"]) == ["mpirun", "-n", "2", "-hosts",
                                                                               "a:1,b:1", "p"]
    assert "OMP_NUM_THREADS" not in mpi.worker_env({"OMP_NUM_THREADS": "3"}, "hydra", 1, "/tmp/x", 0)


@pytest.mark.parametrize("argv,message", [
    (["-n", "2", "no_such_script.py"], "script 'no_such_script.py' does not exist"),
    (["-n", "0", "examples/train_mlp.py"], "-n must be at least 1, received 0"),
    (["--hosts", "a:x", "examples/train_mlp.py"], "slots must be a positive integer"),
    (["--hosts", "a:2,b:2", "-n", "5", "examples/train_mlp.py"], "asked for 5 workers, but the hosts"),
    (["--hostfile", "/nonexistent/hosts", "examples/train_mlp.py"], "does not exist"),
])
def test_bad_input_gets_a_clear_error(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(ROOT)
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_mpi_says_how_to_install(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(mpi.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["-n", "2", "examples/train_mlp.py"]) == 2
    assert "pip install 'distnet[mpi]'" in capsys.readouterr().err


# -- real launches ---------------------------------------------------------------------------------------
PROBE = """
import os, json
import distnet.distributed as dist
from threadpoolctl import threadpool_info
comm = dist.init()
blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({"rank": comm.rank, "size": comm.size, "omp": os.environ.get("OMP_NUM_THREADS"),
                  "openblas": os.environ.get("OPENBLAS_NUM_THREADS"), "blas": blas,
                  "restart": os.environ.get("DISTNET_RESTART_COUNT")}), flush=True)
"""


@pytest.mark.timeout(200)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_launch_local_workers_with_blas_threads_set(tmp_path, n):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    res = launch("-n", str(n), str(script))
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "{" in ln]
    assert len(lines) == n
    infos = sorted((json.loads(ln[ln.index("{"):]) for ln in lines), key=lambda i: i["rank"])
    threads = max(1, (os.cpu_count() or 1) // n)
    for r, (line, info) in enumerate(zip(sorted(lines), infos)):
        assert info["rank"] == r and info["size"] == n
        assert info["omp"] == info["openblas"] == str(threads)
        assert all(t == threads for t in info["blas"])
    for ln in lines:
        info = json.loads(ln[ln.index("{"):])
        assert ln.startswith(f"[rank {info['rank']}/{n}] ") == (info["rank"] != 0)
    hidden = launch("--rank0-only", "-n", str(n), str(script))
    assert len([ln for ln in hidden.stdout.splitlines() if "{" in ln]) == 1


DIES = """
import os, signal, sys
import numpy as np
import distnet
from distnet import layers
from distnet.models import Sequential
comm = distnet.distributed.init()
mode = sys.argv[1]
class Die(distnet.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if comm.rank == 2 and batch == 3 and os.environ["DISTNET_RESTART_COUNT"] == "0":
            print("rank 2 going down", flush=True)
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise ValueError("corrupted batch on purpose")
m = Sequential([layers.Dense(4, input_dim=3), layers.Dense(1)])
m.compile(loss="mse", optimizer="sgd")
m.fit(np.zeros((64, 3)), np.zeros(64), batch_size=8, epochs=20, verbose=0, callbacks=[Die()])
print("finished attempt", os.environ["DISTNET_RESTART_COUNT"], flush=True)
"""


@pytest.mark.timeout(200)
@pytest.mark.parametrize("mode,how", [("kill", "killed by signal 9 (SIGKILL)"),
                                      ("raise", "raised ValueError: corrupted batch on purpose")])
def test_failure_summary_names_the_rank_and_exit_code(tmp_path, mode, how):
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    res = launch("-n", "4", str(script), mode)
    assert res.returncode != 0
    assert f"first failure: rank 2 of 4: {how}" in res.stderr, res.stderr[-2000:]
    assert "| rank 2 going down" in res.stderr
    assert "finished attempt" not in res.stdout
    assert "cannot be told" not in res.stderr and (mode == "raise" or "Traceback" not in res.stderr)
    # mpirun's report of the teardown (its banner, its proxies' asserts) is held back: the summary says it
    assert "BAD TERMINATION" not in res.stdout + res.stderr and "[mpiexec@" not in res.stderr, res.stderr[-2000:]


@pytest.mark.timeout(200)
def test_max_restarts_reruns_the_job(tmp_path):
    script = tmp_path / "dies.py"
    script.write_text(DIES)
    res = launch("--max-restarts", "2", "-n", "4", str(script), "kill")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "restarting the job (1 of 2 restarts)" in res.stderr
    assert "finished attempt 1" in res.stdout


RESUMABLE = """
import os, signal, sys
import numpy as np
import distnet
from distnet import layers, callbacks
from distnet.models import Sequential
comm = distnet.distributed.init()
out, kill = sys.argv[1], sys.argv[2] == "kill"
distnet.utils.set_random_seed(3)
rng = np.random.default_rng(0)
x = rng.normal(size=(90, 5)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.float32)
m = Sequential([layers.Input((5,)), layers.Dense(12, activation="tanh"), layers.Dropout(0.2),
                layers.Dense(1, activation="sigmoid")])
m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
class Die(callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if kill and comm.rank == 1 and (self.epoch, batch) == (2, 4) and os.environ["DISTNET_RESTART_COUNT"] == "0":
            os.kill(os.getpid(), signal.SIGKILL)
m.fit(x, y, batch_size=8, epochs=5, verbose=0,
      callbacks=[callbacks.BackupAndRestore(f"{out}/backup", save_freq=3), Die()])
if comm.rank == 0:
    np.save(f"{out}/final_{sys.argv[2]}.npy", m.flat_state.params)
"""


@pytest.mark.timeout(300)
def test_killed_worker_restarts_and_resumes_to_the_same_weights(tmp_path):
    script = tmp_path / "resumable.py"
    script.write_text(RESUMABLE)
    clean = launch("-n", "3", str(script), str(tmp_path), "clean")
    assert clean.returncode == 0, clean.stderr[-2000:]
    killed = launch("--max-restarts", "2", "-n", "3", str(script), str(tmp_path), "kill")
    assert killed.returncode == 0, killed.stderr[-2000:]
    assert "first failure: rank 1 of 3: killed by signal 9" in killed.stderr
    assert "restarting the job (1 of 2 restarts)" in killed.stderr
    import numpy as np
    np.testing.assert_array_equal(np.load(tmp_path / "final_kill.npy"), np.load(tmp_path / "final_clean.npy"))


# -- the per-worker supervisor ---------------------------------------------------------------------------
def test_supervisor_passes_output_through_records_the_death_and_dies_the_same_way(tmp_path):
    worker = "import os, signal; print('[rank 1/2] hello', flush=True); os.kill(os.getpid(), signal.SIGTERM)"
    env = {**os.environ, "PYTHONPATH": ROOT, protocol.LAUNCH_DIR: str(tmp_path), "PMI_RANK": "1"}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "launch.supervise", "--", sys.executable, "-c",
                          worker], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == -15 and res.stdout == "[rank 1/2] hello\n"        # untouched, same death
    assert "numpy" not in res.stderr           # -X importtime lists the supervisor's imports (not the worker's)
    [note] = protocol.read_statuses(str(tmp_path), protocol.EXIT)
    assert note["rank"] == 1 and note["signal"] == 15 and note["code"] is None and note["requested"] is None
    assert note["monotonic"] > 0 and note["host"] == os.uname().nodename
    res = subprocess.run([sys.executable, "-m", "launch.supervise", "--", sys.executable, "-c", "raise SystemExit(7)"],
                         env=env, timeout=60)
    assert res.returncode == 7
    assert protocol.read_statuses(str(tmp_path), protocol.EXIT)[0]["code"] == 7


def test_failure_order_comes_from_the_supervisors_records(tmp_path):
    from launch import run

    def note(kind, rank, **info):
        env = {protocol.LAUNCH_DIR: str(tmp_path)}
        protocol.write_status(kind, rank, {"host": "a", "time": 0.0, **info}, environ=env)

    note(protocol.EXIT, 0, monotonic=10.000, code=None, signal=9, pid=100, requested=15)   # stopped by mpirun
    note(protocol.EXIT, 3, monotonic=10.500, code=0, signal=None, pid=103, requested=None)  # finished
    note(protocol.EXIT, 2, monotonic=10.020, code=None, signal=9, pid=102, requested=None)
    note(protocol.EXIT, 1, monotonic=10.022, code=1, signal=None, pid=101, requested=None)
    job = run.Job([], {}, False, str(tmp_path))
    rank, text = run.failure_summary(job, 9, str(tmp_path), 4)
    assert rank == 2, text
    assert "first failure: rank 2 of 4: killed by signal 9 (SIGKILL) (pid 102); which came first cannot be " \
           "told: rank 1 exited with code 1 (pid 101) 2.0 ms later" in text
    note(protocol.EXIT, 1, monotonic=10.040, code=1, signal=None, pid=101, requested=None)
    assert "cannot be told" not in run.failure_summary(job, 9, str(tmp_path), 4)[1]


# -- stopping: Ctrl-C, SIGTERM, a closed terminal --------------------------------------------------------
SLEEPER = """
import os, time
import distnet.distributed as dist
comm = dist.init()
segs = sorted({ln.split()[-1] for ln in open("/proc/self/maps") if "/dev/shm/mpich_shm_" in ln and "deleted" not in ln})
print("READY", f"dir={os.environ['DISTNET_LAUNCH_DIR']}", f"shm={','.join(segs)}", flush=True)
time.sleep(300)
"""


def start_and_wait_for(cmd, marker, count, timeout=120, env=None):
    """Start cmd (stdout, stderr piped); return (proc, the first `count` stdout lines that contain `marker`)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env or launch_env())
    lines, found = queue.Queue(), []
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while len(found) < count:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"{cmd} did not print {count} {marker!r} lines in {timeout}s: "
                                 f"{proc.communicate()[1][-2000:]}") from None
        if marker in line:
            found.append(line)
    return proc, found


def launch_env():
    env = {**os.environ, "PYTHONPATH": ROOT}
    for v in protocol.BLAS_VARS:
        env.pop(v, None)
    return env


@pytest.mark.timeout(200)
@pytest.mark.parametrize("sig,extra", [(signal.SIGINT, ["--max-restarts", "2"]), (signal.SIGTERM, []),
                                       (signal.SIGHUP, []), (signal.SIGKILL, [])])
def test_a_signal_to_the_launcher_ends_the_whole_job_and_cleans_up(tmp_path, sig, extra):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc, ready = start_and_wait_for([sys.executable, "-m", "launch", *extra, "-n", "2", str(script)], "READY", 2)
    job = descendants(proc.pid)             # mpirun, its proxy, the supervisors and the workers
    assert len(job) >= 5, job
    fields = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in ready]
    launch_dir = fields[0]["dir"]
    segments = {s for f in fields for s in f["shm"].split(",") if s}
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == (-sig if sig == signal.SIGKILL else 128 + sig), err[-2000:]
        assert time.monotonic() - t0 < 10
        assert [pid for pid in job if not gone(pid)] == []
    finally:
        for pid in job:             # never leave a failed check's processes behind
            if protocol.process_running(pid):
                os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGKILL:        # mpirun dies with the launcher and takes the job with it; nothing is left
        shutil.rmtree(launch_dir)     # to clean up after it, so the test does
        protocol.remove_files(segments)
        return
    assert not os.path.exists(launch_dir)
    assert segments and not any(os.path.exists(s) for s in segments)
    assert "restarting" not in err and "Traceback" not in err and "BAD TERMINATION" not in err, err[-2000:]
    expected = "interrupted" if sig == signal.SIGINT else f"stopped by {signal.Signals(sig).name}"
    assert err.strip().splitlines() == [f"distnet-launch: {expected}"], err[-2000:]
