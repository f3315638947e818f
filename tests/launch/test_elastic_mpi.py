"""distnet-launch --min-workers: after a failure the job is relaunched on the healthy hosts only (an unreachable
host is left out at once, a host that held the first failure twice for good), resumes from its newest backup and
ends with the weights of an uninterrupted run; below --min-workers it stops with a message.

The hosts are two names for this machine (127.0.0.2 and 127.0.0.3) reached through an ssh stand-in that runs
the command here, or fails as ssh does ('No route to host', exit 255) once the test marks a host dead."""
import numpy as np
import pytest

from distnet.bench.elastic import local_ssh
from launch import elastic
from launch.mpi import LaunchError
from tests.launch.test_launcher import launch
from tests.parallel.mpi_helpers import require_mpi


JOB = """
import os, signal, sys
import numpy as np
import distnet
from distnet import layers, callbacks
from distnet.models import Sequential
comm = distnet.distributed.init()
out, mode = sys.argv[1], sys.argv[2]
attempt = int(os.environ["DISTNET_RESTART_COUNT"])
distnet.utils.set_random_seed(3)
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 5)).astype(np.float32)
y = (x[:, 0] - x[:, 1] > 0).astype(np.float32)
m = Sequential([layers.Input((5,)), layers.Dense(12, activation="tanh"), layers.Dense(1, activation="sigmoid")])
m.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])
class Fail(callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if comm.rank != 1 or (self.epoch, batch) != (1, 4):
            return
        if mode == "host-dies" and attempt == 0:
            open(f"{out}/dead-127.0.0.3", "w").close()      # the host goes away with its rank
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "flaky-host" and attempt < 2:
            raise RuntimeError(f"flaky host, attempt {attempt}")
print(f"attempt {attempt} on {comm.size} worker(s)", flush=True)
h = m.fit(x, y, batch_size=12, epochs=3, verbose=0,
          callbacks=[callbacks.BackupAndRestore(f"{out}/backup", save_freq=2), Fail()])
if comm.rank == 0:
    np.save(f"{out}/final_{mode}.npy", m.flat_state.params)
    print("membership", h.membership, flush=True)
"""


def _setup(tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    return local_ssh(str(tmp_path)), str(job)


def _run(tmp_path, mode, *extra):
    ssh, job = _setup(tmp_path)
    return launch("--hosts", "127.0.0.2:1,127.0.0.3:1", "--ssh", ssh, "--threads", "1", *extra, job,
                  str(tmp_path), mode, timeout=240)


@pytest.mark.timeout(300)
def test_a_dead_host_is_left_out_and_the_job_continues_on_the_others_with_the_same_result(tmp_path):
    require_mpi()
    clean = _run(tmp_path, "clean", "-n", "2")
    assert clean.returncode == 0, clean.stderr[-3000:]
    res = _run(tmp_path, "host-dies", "-n", "2", "--max-restarts", "2", "--min-workers", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert "first failure: rank 1 of 2: killed by signal 9" in err, err[-3000:]
    assert "host 127.0.0.3 is unreachable (" in err and "No route to host): left out" in err, err[-3000:]
    assert "relaunching on 1 worker(s) (was 2): hosts 127.0.0.2:1" in err, err[-3000:]
    assert "attempt 1 on 1 worker(s)" in res.stdout
    assert "saved by 2 workers; continuing on 1" in res.stdout, res.stdout[-3000:]
    assert "'workers': 1" in res.stdout and "restarted from a backup" in res.stdout, res.stdout[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "final_host-dies.npy"), np.load(tmp_path / "final_clean.npy"),
                               rtol=0, atol=1e-5)


@pytest.mark.timeout(300)
def test_a_host_holding_the_first_failure_twice_is_left_out(tmp_path):
    require_mpi()
    res = _run(tmp_path, "flaky-host", "-n", "2", "--max-restarts", "3", "--min-workers", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    err = res.stderr
    assert err.count("first failure: rank 1 of 2: raised RuntimeError: flaky host") == 2, err[-3000:]
    assert "host 127.0.0.3 held the first failure 2 times: left out" in err, err[-3000:]
    assert "relaunching on 1 worker(s) (was 2)" in err
    assert "restarting the job (2 of 3 restarts)" in err
    assert "attempt 2 on 1 worker(s)" in res.stdout


@pytest.mark.timeout(300)
def test_below_min_workers_the_job_stops_and_says_why(tmp_path):
    require_mpi()
    res = _run(tmp_path, "host-dies", "-n", "2", "--max-restarts", "2", "--min-workers", "2")
    assert res.returncode != 0
    assert ("only 1 worker slot(s) left on healthy hosts, fewer than --min-workers=2 (left out: 127.0.0.3: "
            "unreachable (") in res.stderr, res.stderr[-3000:]
    assert "giving up" in res.stderr and "attempt 1" not in res.stdout


@pytest.mark.parametrize("argv,message", [
    (["--min-workers", "1", "-n", "2", "x.py"], "--min-workers needs hosts"),
    (["--hosts", "a:2", "--min-workers", "1", "-n", "2", "x.py"], "give how many times with --max-restarts"),
    (["--hosts", "a:2", "--min-workers", "3", "-n", "2", "--max-restarts", "1", "x.py"],
     "--min-workers must be between 1 and -n (2), received 3"),
    (["--backend", "ray", "--min-workers", "3", "-n", "2", "x.py"], "--min-workers must be between 1 and -n (2)"),
])
def test_min_workers_bad_input(capsys, argv, message):
    from launch import cli
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_ray_backend_passes_min_workers_to_its_elastic_driver(capsys):
    from launch import cli
    assert cli.main(["--backend", "ray", "--dry-run", "-n", "3", "--min-workers", "2", "examples/train_mlp.py"]) == 0
    out = capsys.readouterr().out
    assert "-m distnet.parallel.ray.job -n 3" in out and "--min-workers 2" in out, out


def test_placement_follows_mpiruns_by_slot_mapping():
    assert elastic.placement([("a", 2), ("b", 1)], 3) == ["a", "a", "b"]
    assert elastic.placement([("a", 2), ("b", 1)], 2) == ["a", "a"]
    assert elastic.placement([("a", 1), ("b", 1)], 3) == ["a", "b", "a"]       # oversubscribed: round again


def test_host_pool_strikes_unreachable_hosts_and_coming_back():
    down = set()
    pool = elastic.HostPool([("a", 2), ("b", 2), ("c", 2)], 6, 2, probe=lambda h, ssh: "down" if h in down else None)
    down.add("b")
    hosts, n, lines = pool.after_failure(0)        # rank 0 (on a) failed first, but b is gone: no strike for a
    assert (hosts, n) == ([("a", 2), ("c", 2)], 4) and pool.strikes["a"] == 0
    assert lines == ["host b is unreachable (down): left out", "relaunching on 4 worker(s) (was 6): hosts a:2,c:2"]
    down.clear()
    hosts, n, lines = pool.after_failure(2)        # rank 2 is on c now; b answers again
    assert (hosts, n) == ([("a", 2), ("b", 2), ("c", 2)], 6) and pool.strikes["c"] == 1
    assert lines[0] == "host b answers again: back in"
    hosts, n, lines = pool.after_failure(5)        # rank 5: c again -> left out
    assert (hosts, n) == ([("a", 2), ("b", 2)], 4)
    assert "host c held the first failure 2 times: left out" in lines
    hosts, n, _ = pool.after_failure(None)         # unknown rank: nobody is blamed
    assert n == 4 and pool.strikes == {"a": 0, "b": 0, "c": 2}
    down.update({"a", "b"})
    with pytest.raises(elastic.NotEnoughWorkers, match=r"only 0 worker slot\(s\) left .* fewer than "
                                                       r"--min-workers=2 \(left out: a: unreachable \(down\)"):
        pool.after_failure(0)
    spare = elastic.HostPool([("a", 2), ("b", 2)], 2, 1, probe=lambda h, ssh: "down" if h == "b" else None)
    hosts, n, lines = spare.after_failure(1)      # b (no rank on it) is gone, a's rank 1 failed: a is struck
    assert (hosts, n, spare.strikes["a"]) == ([("a", 2)], 2, 1)
    with pytest.raises(LaunchError, match="between 1 and -n"):
        elastic.HostPool([("a", 1)], 1, 0)


def test_probe_reports_what_ssh_said(tmp_path):
    ssh, _ = _setup(tmp_path)
    assert elastic.probe("127.0.0.2", [ssh]) is None
    (tmp_path / "dead-127.0.0.2").touch()
    assert "No route to host" in elastic.probe("127.0.0.2", [ssh])
    assert elastic.probe("localhost", ["/nonexistent"]) is None            # this machine: no ssh needed
    assert "cannot run" in elastic.probe("h", [str(tmp_path / "missing")])
    slow = tmp_path / "slow"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    assert elastic.probe("h", [str(slow)], timeout=0.5).startswith("no answer within")


@pytest.mark.timeout(300)
def test_bench_elastic_times_an_mpi_relaunch(capsys):
    require_mpi()
    from distnet.bench import elastic as bench
    rows = bench.main(repeat=1, workers=3, modes=["mpi-relaunch"])
    assert [r["mode"] for r in rows] == ["mpi-relaunch"] and 0 < rows[0]["median_s"] < 120, rows
    assert "mpi-relaunch death -> next completed step" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="modes are elastic, restart, mpi-relaunch"):
        bench.main(modes=["bogus"])
