"""An emulated cluster on one Linux machine: every node a set of namespaces, every link a rate-limited veth.

Node k of testbed PREFIX is a network namespace PREFIX-nodek with one interface, eth0 (address .10+k of the
subnet), whose peer PREFIX-vk is a port of the bridge PREFIX-br0 (address .1, in this machine's namespace). Its
processes run under an init process (node_init.py) in their own PID, UTS (hostname PREFIX-nodek), IPC and mount
namespaces, with their own /dev/shm and /tmp/ray; the rest of the file system is shared, as on a cluster with a
network file system. Both directions of each link are shaped by a tbf qdisc (the node's eth0 and the bridge port),
so a node sends and receives at the link rate, like a full-duplex NIC on a switch. Traffic between nodes is real
TCP through the kernel; the bytes on a link are the node's eth0 counters.

Only names with the testbed's prefix and addresses in its subnet are created, and `down` removes exactly those
(with every process left in the nodes). Needs root, iproute2 (ip, tc), util-linux (unshare, nsenter, mount).
"""
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

from . import agent

STATE_ROOT = os.environ.get("DISTNET_TESTBED_DIR", "/run/distnet-cluster")
DEFAULT_PREFIX = "distnet"
DEFAULT_SUBNET = "10.77.0.0/24"
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
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


def problems():
    """Why the testbed cannot run here (empty when it can)."""
    out = []
    if os.geteuid() != 0:
        out.append(f"it needs root (network namespaces, veth links and tc need CAP_NET_ADMIN); running as uid "
                   f"{os.geteuid()}")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        out.append(f"missing tools: {', '.join(missing)} (install iproute2 and util-linux)")
    if not os.path.exists("/proc/self/ns/net"):
        out.append("this kernel has no network namespaces (/proc/self/ns/net is absent)")
    return out


def check_requirements():
    found = problems()
    if found:
        raise TestbedError("distnet-cluster cannot run here: " + "; ".join(found))


def _run(argv, check=True):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise TestbedError(f"`{' '.join(argv)}` failed (exit {res.returncode}): {res.stderr.strip()[-500:]}")
    return res


def _names_in_use():
    links = {ln.split()[1].split("@")[0].rstrip(":") for ln in _run(["ip", "-o", "link"]).stdout.splitlines()}
    spaces = {ln.split()[0] for ln in _run(["ip", "netns", "list"]).stdout.splitlines() if ln.strip()}
    return links, spaces


def _check_subnet(net):
    """Refuse a subnet that overlaps an address or route this machine already has."""
    for line in _run(["ip", "-o", "addr"]).stdout.splitlines() + _run(["ip", "-o", "route"]).stdout.splitlines():
        for word in line.split():
            try:
                other = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if other.version == net.version and other.overlaps(net) and other.prefixlen > 0:
                raise TestbedError(f"subnet {net} overlaps what this machine already uses ({line.strip()!r}); "
                                   "choose another with --subnet")


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
            up = sorted(os.listdir(STATE_ROOT)) if os.path.isdir(STATE_ROOT) else []
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
                    if os.readlink(f"/proc/{p}/ns/pid") == mine and _state(p) not in "ZX":
                        out.append(int(p))
                except OSError:
                    continue
        return out

    def kill_processes(self, node):
        """SIGKILL every process of the node except its init (a node whose processes all died, still up).
        Returns how many were killed."""
        init = self.init_pid(node)
        return _kill_until_gone(lambda: [p for p in self.processes(node) if p != init])

    def set_link(self, node, up):
        """Take the node's link down (carrier lost: nothing passes either way) or bring it back up."""
        _run(["ip", "link", "set", self.node(node)["host_link"], "up" if up else "down"])

    def set_rate(self, rate):
        """Change the rate of every link (both directions), e.g. '10gbit', or 'none' for no shaping."""
        bits = rate_bits(rate)
        for n in self.nodes:
            for prefix, dev in ((["ip", "netns", "exec", n["netns"]], "eth0"), ([], n["host_link"])):
                _run(prefix + ["tc", "qdisc", "del", "dev", dev, "root"], check=False)
                if bits:
                    _run(prefix + ["tc", "qdisc", "add", "dev", dev, "root", *_tbf(bits)])
        self.link = rate
        self.save()


def _state(pid):
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


def up(nodes=2, link="1gbit", prefix=DEFAULT_PREFIX, subnet=DEFAULT_SUBNET, slots=None, owner=None):
    """Create the testbed and return it; on any failure remove what was created and raise TestbedError."""
    check_requirements()
    if not _PREFIX.match(str(prefix)):
        raise TestbedError(f"prefix must be 1-8 lower-case letters or digits starting with a letter, received "
                           f"{prefix!r}")
    if not isinstance(nodes, int) or not 1 <= nodes <= 200:
        raise TestbedError(f"nodes must be between 1 and 200, received {nodes!r}")
    bits = rate_bits(link)
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as e:
        raise TestbedError(f"subnet must be a network such as 10.77.0.0/24, received {subnet!r} ({e})") from None
    if net.version != 4 or net.num_addresses < nodes + 12:
        raise TestbedError(f"subnet {subnet} is too small for {nodes} nodes (or not IPv4)")
    cores = len(os.sched_getaffinity(0))
    slots = slots or max(1, cores // nodes)
    bed = Testbed(prefix, str(net), link, nodes, slots, owner)
    if os.path.exists(bed.state_dir):
        raise TestbedError(f"testbed {prefix!r} is already up ({bed.state_dir}); `distnet-cluster down"
                           f"{'' if prefix == DEFAULT_PREFIX else ' --prefix ' + prefix}` first")
    links, spaces = _names_in_use()
    clash = sorted(({bed.bridge} | {n["host_link"] for n in bed.nodes}) & links
                   | {n["netns"] for n in bed.nodes} & spaces)
    if clash:
        raise TestbedError(f"names of testbed {prefix!r} are taken on this machine: {', '.join(clash)}; "
                           "choose another --prefix (or `distnet-cluster down --prefix` an old one)")
    _check_subnet(net)
    os.makedirs(bed.state_dir)
    try:
        bed.save()
        _create(bed, bits)
    except BaseException:
        down(prefix)
        raise
    if owner:
        _reap_when_gone(bed, owner)
    return bed


def _create(bed, bits):
    _run(["ip", "link", "add", bed.bridge, "type", "bridge"])
    _run(["ip", "addr", "add", f"{bed.bridge_address}/{bed.prefixlen}", "dev", bed.bridge])
    _run(["ip", "link", "set", bed.bridge, "up"])
    here = os.path.dirname(os.path.abspath(__file__))
    for n in bed.nodes:
        ns = n["netns"]
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", n["host_link"], "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", n["host_link"], "master", bed.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{n['address']}/{bed.prefixlen}", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        node_dir = os.path.join(bed.state_dir, n["name"])
        home = os.path.join(node_dir, "home")
        os.makedirs(home)
        # what cluster.yaml's setup_commands leave on every node: distnet installed in ~/distnet-venv
        os.symlink(sys.prefix, os.path.join(home, "distnet-venv"))
        log = open(os.path.join(node_dir, "init.log"), "w")
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--pid", "--fork", "--mount-proc", "--uts",
                                 "--ipc", "--mount", "--propagation", "private", sys.executable,
                                 os.path.join(here, "node_init.py"), n["hostname"], node_dir],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        _wait_ready(proc, node_dir, n["name"])
    if bits:
        bed.set_rate(bed.link)
    with open(bed.hostfile, "w") as f:
        f.write("".join(f"{n['address']} slots={bed.slots}\n" for n in bed.nodes))
    with open(bed.agent, "w") as f:
        f.write(agent.render(bed.prefix, bed.state_dir, [(n["name"], n["hostname"], n["address"])
                                                         for n in bed.nodes]))
    os.chmod(bed.agent, 0o755)


def _wait_ready(proc, node_dir, name, timeout=30):
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(node_dir, "ready")):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(os.path.join(node_dir, "init.log")) as f:
                log = f.read()[-1000:]
            raise TestbedError(f"node {name} did not start (init exit code {proc.poll()}): {log}")
        time.sleep(0.05)
    children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
    with open(os.path.join(node_dir, "pid"), "w") as f:
        f.write(children[0])


def _reap_when_gone(bed, owner):
    """A detached process that takes the testbed down once process `owner` is gone (a test run that was killed
    cannot leave the testbed behind)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.Popen([sys.executable, "-m", "launch.testbed.cli", "down", "--prefix", bed.prefix, "--when-gone",
                      str(owner), "--id", bed.id], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)


def down(prefix=DEFAULT_PREFIX):
    """Remove testbed `prefix`: kill every process in its nodes, delete its links, namespaces, bridge and state.
    Works from the names alone when the state is lost. Returns what was removed."""
    if not _PREFIX.match(str(prefix)):
        raise TestbedError(f"no testbed can be named {prefix!r}")
    removed = []
    links, spaces = _names_in_use()
    ours = sorted(s for s in spaces if re.fullmatch(rf"{prefix}-node\d+", s))
    inodes = set()
    for ns in ours:
        try:
            inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    killed = _kill_in_netns(inodes)
    if killed:
        removed.append(f"{killed} process(es)")
    for link in sorted(v for v in links if re.fullmatch(rf"{prefix}-v\d+", v)):
        _run(["ip", "link", "del", link], check=False)
        removed.append(link)
    for ns in ours:
        _run(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    if f"{prefix}-br0" in links:
        _run(["ip", "link", "del", f"{prefix}-br0"], check=False)
        removed.append(f"{prefix}-br0")
    state = os.path.join(STATE_ROOT, prefix)
    if os.path.isdir(state):
        shutil.rmtree(state, ignore_errors=True)
        removed.append(state)
    return removed


def _kill_in_netns(inodes):
    """SIGKILL every process whose network namespace is one of `inodes` (a node's init among them: the kernel
    then ends its whole PID namespace); wait until they are gone."""
    def found():
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != os.getpid():
                try:
                    if os.stat(f"/proc/{p}/ns/net").st_ino in inodes and _state(p) not in "ZX":
                        out.append(int(p))
                except OSError:
                    continue
        return out
    return _kill_until_gone(found) if inodes else 0


def _kill_until_gone(find, timeout=10):
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
