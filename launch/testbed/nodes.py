"""An emulated cluster on one Linux machine: every node a set of namespaces, every link a rate-limited veth.

Node k of testbed PREFIX is a network namespace PREFIX-nodek with one interface, eth0 (address .10+k of the
subnet), whose peer PREFIX-vk is a port of the bridge PREFIX-br0 (address .1, in this machine's namespace). Its
processes run under an init process (node_init.py) in their own PID, UTS (hostname PREFIX-nodek), IPC and mount
namespaces, with their own /dev/shm and /tmp/ray; the rest of the file system is shared, as on a cluster with a
network file system. Both directions of each link are shaped by a tbf qdisc (the node's eth0 and the bridge port),
so a node sends and receives at the link rate, like a full-duplex NIC on a switch. Traffic between nodes is real
TCP through the kernel; the bytes on a link are the node's eth0 counters.

This module: a testbed that is up (its state, and using its nodes and links). lifecycle.py creates and removes
them. Needs root, iproute2 (ip, tc), util-linux (unshare, nsenter, mount).
"""
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
import uuid

STATE_ROOT = os.environ.get("DISTNET_TESTBED_DIR", "/run/distnet-cluster")
DEFAULT_PREFIX = "distnet"
DEFAULT_SUBNET = "10.77.0.0/24"
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit|tbit)$")
_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
TOOLS = ("ip", "tc", "unshare", "nsenter", "mount")


class TestbedError(RuntimeError):
    """The testbed cannot be created, used or found; the message says what to do."""


def rate_bits(rate):
    """'1gbit' -> 1e9 bits/s; 'none' -> None (unshaped). Raises TestbedError naming the value otherwise."""
    if rate in (None, "none", "unlimited"):
        return None
    m = _RATE.match(str(rate).strip().lower())
    if not m:
        raise TestbedError(f"link rate must look like 100mbit, 1gbit, 10gbit (or 'none'), received {rate!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_tool(argv, check=True):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    return res


class Testbed:
    """A testbed that is up (or its state, for `down`): its nodes, links, and how to run things on them."""

    def __init__(self, prefix, subnet, link, nodes, slots, owner=None, ident=None):
        self.prefix, self.subnet, self.link, self.slots, self.owner = prefix, subnet, link, slots, owner
        self.id = ident or uuid.uuid4().hex[:12]       # tells this testbed from a later one of the same name
        net = ipaddress.ip_network(subnet)
        self.bridge, self.bridge_address = f"{prefix}-br0", str(net.network_address + 1)
        self.prefixlen = net.prefixlen
        self.nodes = [{"name": f"node{k}", "hostname": f"{prefix}-node{k}", "netns": f"{prefix}-node{k}",
                       "address": str(net.network_address + 10 + k), "host_link": f"{prefix}-v{k}"}
                      for k in range(1, nodes + 1)]
        self.state_dir = os.path.join(STATE_ROOT, prefix)

    # -- state ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, prefix=DEFAULT_PREFIX):
        path = os.path.join(STATE_ROOT, prefix, "testbed.json")
        if not os.path.exists(path):
            up = sorted(d for d in os.listdir(STATE_ROOT) if os.path.isdir(os.path.join(STATE_ROOT, d))) \
                if os.path.isdir(STATE_ROOT) else []
            raise TestbedError(f"no testbed {prefix!r} is up (no {path}); start one with `distnet-cluster up"
                               f"{'' if prefix == DEFAULT_PREFIX else ' --prefix ' + prefix}`"
                               + (f"; testbeds up: {', '.join(up)}" if up else ""))
        with open(path) as f:
            s = json.load(f)
        return cls(s["prefix"], s["subnet"], s["link"], len(s["nodes"]), s["slots"], s.get("owner"), s.get("id"))

    def save(self):
        with open(os.path.join(self.state_dir, "testbed.json"), "w") as f:
            json.dump({"id": self.id, "prefix": self.prefix, "subnet": self.subnet, "link": self.link,
                       "slots": self.slots, "owner": self.owner, "bridge": self.bridge, "nodes": self.nodes}, f,
                      indent=1)

    @property
    def hostfile(self):
        return os.path.join(self.state_dir, "hostfile")

    @property
    def agent(self):
        return os.path.join(self.state_dir, "agent")

    def node(self, ref):
        """A node by name (node2), number (2), hostname or address."""
        ref = str(ref)
        for n in self.nodes:
            if ref in (n["name"], n["name"][4:], n["hostname"], n["address"]):
                return n
        raise TestbedError(f"testbed {self.prefix!r} has no node {ref!r}; its nodes: "
                           + ", ".join(f"{n['name']} ({n['address']})" for n in self.nodes))

    def node_dir(self, node):
        return os.path.join(self.state_dir, self.node(node)["name"])

    def init_pid(self, node):
        """The node's init process (this machine's pid), or None when the node is down."""
        try:
            with open(os.path.join(self.node_dir(node), "pid")) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    # -- using the nodes -----------------------------------------------------------------------------------
    def exec_argv(self, node, argv, cwd=None):
        """argv that runs `argv` inside the node (its namespaces), in `cwd` (default: the current directory)."""
        pid = self.init_pid(node)
        if pid is None:
            raise TestbedError(f"node {self.node(node)['name']} of testbed {self.prefix!r} is down")
        return ["nsenter", "-t", str(pid), "-n", "-u", "-i", "-m", "-p", f"--wd={cwd or os.getcwd()}", "--",
                *argv]

    def link_bytes(self, node):
        """{'tx': bytes the node has sent, 'rx': bytes it has received} on its link (its eth0's counters)."""
        pid = self.init_pid(node)
        if pid is None:
            raise TestbedError(f"node {self.node(node)['name']} of testbed {self.prefix!r} is down")
        base = f"/proc/{pid}/root/sys/class/net/eth0/statistics"
        out = {}
        for key in ("tx", "rx"):
            with open(f"{base}/{key}_bytes") as f:
                out[key] = int(f.read())
        return out

    def processes(self, node):
        """This machine's pids of every process running in the node (its init included)."""
        pid = self.init_pid(node)
        if pid is None:
            return []
        mine = os.readlink(f"/proc/{pid}/ns/pid")
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.readlink(f"/proc/{p}/ns/pid") == mine and process_state(p) not in "ZX":
                        out.append(int(p))
                except OSError:
                    continue
        return out

    def kill_processes(self, node):
        """SIGKILL every process of the node except its init (a node whose processes all died, still up).
        Returns how many were killed."""
        init = self.init_pid(node)
        return kill_until_gone(lambda: [p for p in self.processes(node) if p != init])

    def crash(self, node):
        """The node fails as a machine does: its link goes down and every process of it dies, its init included
        (the kernel ends a PID namespace with its init), so the ssh stand-in answers 'node ... is down' as ssh
        answers for a dead host. `distnet-cluster down` removes what is left. Returns how many processes the node had
        (all gone on return)."""
        victims = self.processes(node)
        self.set_link(node, False)
        init = self.init_pid(node)
        if init is not None:
            try:
                os.kill(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_until_gone(lambda: [p for p in victims if process_state(p) not in ("", "Z", "X")])
        return len(victims)

    def set_link(self, node, up):
        """Take the node's link down (carrier lost: nothing passes either way) or bring it back up."""
        run_tool(["ip", "link", "set", self.node(node)["host_link"], "up" if up else "down"])

    def set_rate(self, rate):
        """Change the rate of every link (both directions), e.g. '10gbit', or 'none' for no shaping."""
        bits = rate_bits(rate)
        for n in self.nodes:
            for prefix, dev in ((["ip", "netns", "exec", n["netns"]], "eth0"), ([], n["host_link"])):
                run_tool(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
                if bits:
                    run_tool(prefix + ["tc", "qdisc", "add", "dev", dev, "root", *_tbf(bits)])
        self.link = rate
        self.save()


def process_state(pid):
    """A process's state letter (R, S, Z: zombie, ...); '' when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


# tbf's bucket: what passes at once after an idle moment. Small, so that a measured transfer runs at the rate
# (tbf needs at least one 64 KiB GSO segment from veth; 1 ms of traffic at higher rates, for the timer's sake).
BURST_MIN, BURST_TIME = 128 * 1024, 0.001


def _tbf(bits):
    """tbf parameters for a rate: a bucket of BURST_MIN or BURST_TIME at the rate, and up to 20 ms of queue."""
    burst = max(BURST_MIN, int(bits / 8 * BURST_TIME))
    return ["tbf", "rate", f"{int(bits)}bit", "burst", str(burst), "latency", "20ms"]


def kill_until_gone(find, timeout=10):
    """SIGKILL the pids find() returns until it returns none (or `timeout` s pass); how many were killed."""
    deadline, killed = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        victims = find()
        if not victims:
            break
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
                killed.add(p)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    return len(killed)
