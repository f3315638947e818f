"""Creating and removing a testbed (see nodes.py for what a node is): `up` makes the bridge, the nodes' namespaces,
links, shaping, init processes, hostfile and ssh agent, undoing everything if a step fails; `down` removes
exactly what carries the testbed's prefix, with every process left in its nodes, even when the state is lost.
Only names with the prefix and addresses in the subnet are created; existing interfaces are never touched."""
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import time

from . import agent
from .nodes import (DEFAULT_PREFIX, DEFAULT_SUBNET, PREFIX_RE, STATE_ROOT, TOOLS, Testbed, TestbedError,
                    kill_until_gone, process_state, rate_bits, run_tool)


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


def _names_in_use():
    links = {ln.split()[1].split("@")[0].rstrip(":") for ln in run_tool(["ip", "-o", "link"]).stdout.splitlines()}
    spaces = {ln.split()[0] for ln in run_tool(["ip", "netns", "list"]).stdout.splitlines() if ln.strip()}
    return links, spaces


def _check_subnet(net):
    """Refuse a subnet that overlaps an address or route this machine already has."""
    lines = run_tool(["ip", "-o", "addr"]).stdout.splitlines() + run_tool(["ip", "-o", "route"]).stdout.splitlines()
    for line in lines:
        for word in line.split():
            try:
                other = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if other.version == net.version and other.overlaps(net) and other.prefixlen > 0:
                raise TestbedError(f"subnet {net} overlaps what this machine already uses ({line.strip()!r}); "
                                   "choose another with --subnet")


RAY_TMP = "/tmp/ray"                  # Ray's default session directory (node_init.py mounts each node's own on it)
RAY_TMP_MARK = "created-tmp-ray"     # in STATE_ROOT: a testbed created RAY_TMP


def up(nodes=2, link="1gbit", prefix=DEFAULT_PREFIX, subnet=DEFAULT_SUBNET, slots=None, owner=None):
    """Create the testbed and return it; on any failure remove what was created and raise TestbedError."""
    check_requirements()
    if not PREFIX_RE.match(str(prefix)):
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
    if not os.path.exists(RAY_TMP):      # each node bind-mounts its own Ray directory there: a mount point
        os.makedirs(RAY_TMP)
        open(os.path.join(STATE_ROOT, RAY_TMP_MARK), "w").close()        # ours: removed by the last down()
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
    run_tool(["ip", "link", "add", bed.bridge, "type", "bridge"])
    run_tool(["ip", "addr", "add", f"{bed.bridge_address}/{bed.prefixlen}", "dev", bed.bridge])
    run_tool(["ip", "link", "set", bed.bridge, "up"])
    here = os.path.dirname(os.path.abspath(__file__))
    for n in bed.nodes:
        ns = n["netns"]
        run_tool(["ip", "netns", "add", ns])
        run_tool(["ip", "link", "add", n["host_link"], "type", "veth", "peer", "name", "eth0", "netns", ns])
        run_tool(["ip", "link", "set", n["host_link"], "master", bed.bridge, "up"])
        run_tool(["ip", "-n", ns, "addr", "add", f"{n['address']}/{bed.prefixlen}", "dev", "eth0"])
        run_tool(["ip", "-n", ns, "link", "set", "eth0", "up"])
        run_tool(["ip", "-n", ns, "link", "set", "lo", "up"])
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
    if not PREFIX_RE.match(str(prefix)):
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
    killed = _kill_nodes(inodes, prefix)
    if killed:
        removed.append(f"{killed} process(es)")
    for link in sorted(v for v in links if re.fullmatch(rf"{prefix}-v\d+", v)):
        run_tool(["ip", "link", "del", link], check=False)
        removed.append(link)
    for ns in ours:
        run_tool(["ip", "netns", "del", ns], check=False)
        removed.append(ns)
    if f"{prefix}-br0" in links:
        run_tool(["ip", "link", "del", f"{prefix}-br0"], check=False)
        removed.append(f"{prefix}-br0")
    state = os.path.join(STATE_ROOT, prefix)
    if os.path.isdir(state):
        shutil.rmtree(state, ignore_errors=True)
        removed.append(state)
    mark = os.path.join(STATE_ROOT, RAY_TMP_MARK)
    others = [d for d in os.listdir(STATE_ROOT) if os.path.isdir(os.path.join(STATE_ROOT, d))] \
        if os.path.isdir(STATE_ROOT) else []
    if os.path.exists(mark) and not others:      # the last testbed is gone: the mount point it created goes too
        try:
            os.rmdir(RAY_TMP)                    # only when empty (Ray itself may have used it meanwhile)
            removed.append(RAY_TMP)
        except OSError:
            pass
        os.unlink(mark)
    return removed


def _kill_nodes(inodes, prefix):
    """SIGKILL every process whose network namespace is one of `inodes`, and every init of a node of `prefix`
    (even one whose namespace lost its name: the kernel ends a PID namespace with its init); wait until they are
    gone. Returns how many were killed."""
    init = re.compile(rf"node_init\.py\x00{prefix}-node\d+\x00".encode())

    def found():
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit() and int(p) != os.getpid():
                try:
                    if process_state(p) in "ZX":
                        continue
                    if os.stat(f"/proc/{p}/ns/net").st_ino in inodes:
                        out.append(int(p))
                    else:
                        with open(f"/proc/{p}/cmdline", "rb") as f:
                            if init.search(f.read()):
                                out.append(int(p))
                except OSError:
                    continue
        return out
    return kill_until_gone(found)
