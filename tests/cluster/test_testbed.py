"""The emulated cluster itself: nodes, names, isolation, the ssh stand-in, link rates and counters, faults, and
that `down` leaves nothing behind."""
import os
import subprocess
import sys
import time

import pytest

from launch import testbed
from launch.testbed import cli, nodes
from tests.cluster.conftest import leftovers, run_on, cluster_of

SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5999)); s.listen(1); open(sys.argv[2], "w").close()
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    if not b:
        break
    t0 = t0 or time.perf_counter(); n += len(b)
print(n, time.perf_counter() - t0)
"""
CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5999)); c.sendall(b"x" * int(sys.argv[2])); c.close()
"""


def _transfer(bed, nbytes, tmp_path):
    """Send nbytes from node1 to node2 over TCP; (bytes received, seconds)."""
    ready = tmp_path / "ready"
    server = subprocess.Popen(bed.exec_argv("node2", [sys.executable, "-c", SERVER, bed.node(2)["address"],
                                                      str(ready)]), stdout=subprocess.PIPE, text=True)
    while not ready.exists():
        assert server.poll() is None, "server on node2 did not start"
        time.sleep(0.05)
    run_on(bed, "node1", [sys.executable, "-c", CLIENT, bed.node(2)["address"], str(nbytes)], timeout=60)
    out, _ = server.communicate(timeout=60)
    ready.unlink()
    n, seconds = out.split()
    return int(n), float(seconds)


@pytest.mark.timeout(120)
def test_nodes_are_separate_machines_on_a_shaped_network(tmp_path):
    with cluster_of(nodes=3, link="100mbit") as bed:
        for k in (1, 2, 3):
            res = run_on(bed, f"node{k}", ["sh", "-c", "hostname; hostname -I; ls /sys/class/net; ps -e | wc -l; "
                                                      "df --output=source /dev/shm | tail -1"])
            name, addr, *ifaces, nprocs, shm = res.stdout.split()
            assert (name, addr) == (f"{bed.prefix}-node{k}", bed.node(k)["address"]), res.stdout
            assert sorted(ifaces) == ["eth0", "lo"]
            assert int(nprocs) <= 6, res.stdout          # its own PID namespace: init, sh, ps, wc (+ header)
            assert shm == f"{bed.prefix}-node{k}-shm"    # its own /dev/shm
        with open(bed.hostfile) as f:
            assert f.read().split() == [w for k in (1, 2, 3) for w in (bed.node(k)["address"], "slots=1")]

        before = [bed.link_bytes(k) for k in (1, 2)]
        n, seconds = _transfer(bed, 5_000_000, tmp_path)
        after = [bed.link_bytes(k) for k in (1, 2)]
        assert n == 5_000_000
        # 40 Mbit at 100 Mbit/s: 0.4 s at the line rate (tbf's first bucket of 512 KiB passes at once)
        assert 0.3 < seconds < 1.5, seconds
        assert after[0]["tx"] - before[0]["tx"] > 5_000_000 and after[1]["rx"] - before[1]["rx"] > 5_000_000

        bed.set_rate("1gbit")
        n, seconds = _transfer(bed, 20_000_000, tmp_path)
        assert n == 20_000_000 and seconds < 1.0, seconds
        assert leftovers(bed)
    assert not leftovers(bed), leftovers(bed)


@pytest.mark.timeout(60)
def test_ssh_agent_skips_ssh_options_and_runs_in_the_node():
    with cluster_of(nodes=2) as bed:
        addr = bed.node(2)["address"]
        for argv in (["-x", addr, "hostname"], ["-p", "2222", "-o", "BatchMode=yes", f"me@{addr}", "hostname"],
                     ["-oStrictHostKeyChecking=no", "node2", "echo", "$(hostname)"], ["--", addr, "hostname"]):
            res = subprocess.run([bed.agent, *argv], capture_output=True, text=True, timeout=30, cwd="/tmp")
            assert res.returncode == 0 and res.stdout.strip() == f"{bed.prefix}-node2", (argv, res.stderr)
        res = subprocess.run([bed.agent, "-x", addr, "pwd"], capture_output=True, text=True, timeout=30, cwd="/tmp")
        assert res.stdout.strip() == "/tmp"                # the caller's directory (a shared file system)
        res = subprocess.run([bed.agent, "10.1.2.3", "true"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 255 and "no node '10.1.2.3'" in res.stderr and addr in res.stderr


@pytest.mark.timeout(60)
def test_kill_and_link_faults():
    with cluster_of(nodes=2) as bed:
        sleeper = subprocess.Popen(bed.exec_argv("node2", ["sh", "-c", "sleep 300 & sleep 300"]))
        time.sleep(0.3)
        assert len(bed.processes("node2")) >= 3
        assert bed.kill_processes("node2") >= 2
        assert sleeper.wait(10) != 0
        assert bed.processes("node2") == [bed.init_pid("node2")]      # the node itself stays up
        probe = [sys.executable, "-c", "import socket,sys; socket.create_connection((sys.argv[1], 22), timeout=2)"]
        bed.set_link("node2", up=False)
        res = run_on(bed, "node1", probe + [bed.node(2)["address"]])
        assert "timed out" in res.stderr or "unreachable" in res.stderr.lower(), res.stderr
        bed.set_link("node2", up=True)
        for _ in range(20):            # reachable again once ARP retries (nothing listens on port 22)
            res = run_on(bed, "node1", probe + [bed.node(2)["address"]])
            if "Connection refused" in res.stderr:
                break
            time.sleep(0.5)
        assert "Connection refused" in res.stderr, res.stderr
        sleeper = subprocess.Popen(bed.exec_argv("node2", ["sh", "-c", "sleep 300 & sleep 300"]))
        time.sleep(0.3)
        assert cli.main(["--prefix", bed.prefix, "crash", "node2"]) == 0      # the whole node fails
        assert sleeper.wait(10) != 0 and bed.init_pid("node2") is None and bed.processes("node2") == []
        res = subprocess.run([bed.agent, bed.node(2)["address"], "true"], capture_output=True, text=True, timeout=30)
        assert res.returncode == 255 and "node node2 is down" in res.stderr, res.stderr
        assert cli.main(["--prefix", bed.prefix, "status"]) == 0


def test_bad_input_is_refused_with_what_was_received(monkeypatch):
    with pytest.raises(testbed.TestbedError, match=r"link rate must look like .* received '1 gigabit'"):
        nodes.rate_bits("1 gigabit")
    assert nodes.rate_bits("10gbit") == 10e9 and nodes.rate_bits("none") is None
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert any("needs root" in p and "uid 1000" in p for p in testbed.problems())
    with pytest.raises(testbed.TestbedError, match="cannot run here: it needs root"):
        testbed.up(2)
    monkeypatch.undo()
    if testbed.problems():
        pytest.skip("the rest needs network namespaces: " + "; ".join(testbed.problems()))
    with pytest.raises(testbed.TestbedError, match="prefix must be .* received 'Bad-Name'"):
        testbed.up(2, prefix="Bad-Name")
    with pytest.raises(testbed.TestbedError, match="nodes must be between 1 and 200, received 0"):
        testbed.up(0, prefix="dtbad")
    with pytest.raises(testbed.TestbedError, match="overlaps what this machine already uses"):
        testbed.up(2, prefix="dtbad", subnet="127.0.0.0/24")
    assert not os.path.exists(os.path.join(nodes.STATE_ROOT, "dtbad"))
    with cluster_of(nodes=1) as bed:
        with pytest.raises(testbed.TestbedError, match=f"testbed '{bed.prefix}' is already up"):
            testbed.up(1, prefix=bed.prefix, subnet="10.77.251.0/24")
        with pytest.raises(testbed.TestbedError, match="has no node 'node7'; its nodes: node1"):
            bed.node("node7")


def test_cli_errors_and_status(capsys):
    assert cli.main(["--prefix", "dtnone", "status"]) == 2
    assert "no testbed 'dtnone' is up" in capsys.readouterr().err
    if testbed.problems():
        pytest.skip("the rest needs network namespaces")
    with cluster_of(nodes=2) as bed:
        assert cli.main(["--prefix", bed.prefix, "status"]) == 0
        out = capsys.readouterr().out
        assert f"node2   {bed.node(2)['address']}" in out and "link up, 1 process(es)" in out
        assert cli.main(["--prefix", bed.prefix, "hostfile"]) == 0 and capsys.readouterr().out.strip() == bed.hostfile
        assert cli.main(["--prefix", bed.prefix, "link", "node2", "down"]) == 0
        assert "link down" in capsys.readouterr().out


def test_the_ray_mount_point_a_testbed_creates_goes_with_the_last_testbed():
    """Each node mounts its own Ray directory on /tmp/ray; a testbed that had to create that mount point removes
    it when the last testbed goes down."""
    if testbed.problems():
        pytest.skip("needs network namespaces")
    if os.path.exists("/tmp/ray") or os.path.isdir(nodes.STATE_ROOT) and os.listdir(nodes.STATE_ROOT):
        pytest.skip("/tmp/ray exists already, or another testbed is up")
    with cluster_of(nodes=1):
        assert os.path.isdir("/tmp/ray")
        with cluster_of(nodes=1):
            pass
        assert os.path.isdir("/tmp/ray")          # the first testbed is still up
    assert not os.path.exists("/tmp/ray")


@pytest.mark.timeout(60)
def test_a_killed_owner_takes_its_testbed_down(tmp_path):
    """The reaper: a test process that is SIGKILLed (no teardown runs) still leaves nothing behind."""
    if testbed.problems():
        pytest.skip("needs network namespaces")
    code = ("import os, sys, time; sys.path.insert(0, sys.argv[1]); from launch import testbed;"
            "b = testbed.up(2, prefix='dtreap', subnet='10.77.252.0/24', owner=os.getpid());"
            "print('UP', flush=True); time.sleep(300)")
    proc = subprocess.Popen([sys.executable, "-c", code, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "UP"
    bed = testbed.Testbed.load("dtreap")
    assert leftovers(bed)
    proc.kill()
    proc.wait()
    deadline = time.time() + 20
    while leftovers(bed) and time.time() < deadline:
        time.sleep(0.2)
    assert not leftovers(bed), leftovers(bed)


def test_ray_bootstrap_config_and_bad_cluster_files(tmp_path):
    from launch.testbed import ray_nodes
    config = ray_nodes._config(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "cluster.yaml"))
    boot = ray_nodes._bootstrap_config(config, "10.77.0.11")
    assert boot["provider"] == {**config["provider"], "head_ip": "10.77.0.11", "worker_ips": []}
    assert boot["max_workers"] == 0 and all(t["max_workers"] == 0 for t in boot["available_node_types"].values())
    assert ray_nodes.head_port(config) == 6379
    bad = tmp_path / "c.yaml"
    bad.write_text("provider: {type: local}\nhead_start_ray_commands: [ray start --head]\n")
    with pytest.raises(testbed.TestbedError, match="has no worker_start_ray_commands"):
        ray_nodes._config(str(bad))
    with pytest.raises(testbed.TestbedError, match="does not exist"):
        ray_nodes._config(str(tmp_path / "missing.yaml"))


@pytest.mark.timeout(60)
def test_down_ends_a_node_whose_namespace_lost_its_name():
    """A node init left in a namespace that no longer has a name (e.g. deleted under a starting testbed) is still
    found and ended by `down`, by its command line."""
    with cluster_of(nodes=1) as bed:
        init = bed.init_pid("node1")
        subprocess.run(["ip", "netns", "del", bed.node(1)["netns"]], check=True)
        assert os.path.exists(f"/proc/{init}")
        testbed.down(bed.prefix)
        deadline = time.time() + 10
        while os.path.exists(f"/proc/{init}") and nodes.process_state(init) not in "ZX" and time.time() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{init}") or nodes.process_state(init) in "ZX"
