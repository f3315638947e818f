"""Ray on the testbed, started the way `ray up cluster.yaml` starts it: the config's own head_start_ray_commands
on node1 and worker_start_ray_commands on every other node, run by a shell on the node with RAY_HEAD_IP set and
HOME holding what the config's setup_commands install (~/distnet-venv: this distnet's virtualenv).

`ray up` also writes ~/ray_bootstrap_config.yaml on the head (the head command's --autoscaling-config): here it
is the same config with the head's address and no worker_ips for the autoscaler to manage, since the worker
nodes are joined by their own start commands (Ray's "manually started" on-premise nodes) instead of over SSH.
"""
import os
import re
import subprocess
import sys
import threading

from ..hosts import HostSpecError, load_cluster_yaml
from .nodes import TestbedError


def _config(path):
    try:
        config = load_cluster_yaml(path)
    except HostSpecError as e:
        raise TestbedError(f"{e} (give the Ray cluster config with --config)") from None
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        if not isinstance(config.get(key), list) or not config[key]:
            raise TestbedError(f"cluster file {path!r} has no {key} (a list of shell commands)")
    return config


def head_port(config):
    port = re.search(r"--port[= ](\d+)", " ".join(map(str, config["head_start_ray_commands"])))
    return int(port.group(1)) if port else 6379


def _run_commands(bed, node, commands, head, timeout=300):
    home = os.path.join(bed.node_dir(node), "home")
    env = {**os.environ, "HOME": home, "RAY_HEAD_IP": head}
    env.pop("RAY_ADDRESS", None)
    for command in commands:
        res = subprocess.run(bed.exec_argv(node, ["/bin/bash", "-c", str(command)], cwd=home), env=env,
                             capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise TestbedError(f"on {node}: `{command}` failed (exit {res.returncode}):\n"
                               f"{(res.stdout + res.stderr)[-2000:]}")


def _bootstrap_config(config, head):
    out = dict(config)
    out["provider"] = {**config.get("provider", {}), "head_ip": head, "worker_ips": []}
    out["max_workers"] = 0
    out["available_node_types"] = {name: {**t, "min_workers": 0, "max_workers": 0}
                                   for name, t in (config.get("available_node_types") or {}).items()}
    return out


def up(bed, config_path="cluster.yaml"):
    """Start Ray on every node with the config's commands; return the head's address (host:port)."""
    import yaml
    config = _config(config_path)
    head = bed.node(1)["address"]
    with open(os.path.join(bed.node_dir(1), "home", "ray_bootstrap_config.yaml"), "w") as f:
        yaml.safe_dump(_bootstrap_config(config, head), f)
    _run_commands(bed, "node1", config["head_start_ray_commands"], head)
    errors = []

    def join_one(node):
        try:
            join(bed, node, config_path)
        except (TestbedError, subprocess.TimeoutExpired) as e:
            errors.append(str(e))
    threads = [threading.Thread(target=join_one, args=(n["name"],)) for n in bed.nodes[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise TestbedError("worker nodes did not join: " + "\n".join(errors))
    return f"{head}:{head_port(config)}"


def join(bed, node, config_path="cluster.yaml", attempts=3):
    """(Re)join a node to the head with the config's worker_start_ray_commands (e.g. after its processes died).
    A start that fails is run again (the commands begin with `ray stop`), as `ray up` retries a node: on a
    loaded machine `ray start` can miss its deadline for reaching the head."""
    for attempt in range(attempts):
        try:
            return _run_commands(bed, node, _config(config_path)["worker_start_ray_commands"],
                                 bed.node(1)["address"])
        except (TestbedError, subprocess.TimeoutExpired):
            if attempt == attempts - 1:
                raise


def down(bed):
    """`ray stop` on every node (only that node's Ray: each node has its own PID namespace)."""
    for n in bed.nodes:
        if bed.init_pid(n["name"]) is not None:
            ray = os.path.join(os.path.dirname(sys.executable), "ray")
            subprocess.run(bed.exec_argv(n["name"], [ray, "stop", "--force"]), capture_output=True, timeout=120)
