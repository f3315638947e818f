"""distnet-cluster: an emulated cluster of N nodes on this machine (network namespaces, rate-limited links).

    distnet-cluster up --nodes 4 --link 1gbit          # nodes node1..node4 at 10.77.0.11.., a hostfile, an ssh agent
    distnet-launch --testbed -n 4 examples/train_cnn.py # MPI across them (hostfile + agent + bridge interface)
    distnet-cluster exec node2 -- hostname             # run a command on a node
    distnet-cluster ray-up                             # Ray: cluster.yaml's head command on node1, workers elsewhere
    distnet-cluster link node2 down|up|rate 10gbit     # faults and link speed
    distnet-cluster status | hostfile | agent
    distnet-cluster down                               # remove every namespace, link, process and file it created
"""
import argparse
import os
import sys
import time

from . import lifecycle, nodes as tb


def parser():
    p = argparse.ArgumentParser(prog="distnet-cluster", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--prefix", default=tb.DEFAULT_PREFIX,
                   help=f"name of the testbed, prefix of everything it creates (default {tb.DEFAULT_PREFIX})")
    common = argparse.ArgumentParser(add_help=False)       # --prefix also after the subcommand
    common.add_argument("--prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, help):
        return sub.add_parser(name, help=help, parents=[common])
    u = add("up", "create the nodes, links and bridge")
    u.add_argument("--nodes", type=int, default=2)
    u.add_argument("--link", default="1gbit", help="rate of every link, each direction (e.g. 1gbit, 10gbit, none)")
    u.add_argument("--subnet", default=tb.DEFAULT_SUBNET, help="a private IPv4 network this machine does not use")
    u.add_argument("--slots", type=int, default=None, help="slots per node in the hostfile (default cores/nodes)")
    u.add_argument("--owner", type=int, default=None, help="take the testbed down when this process exits")
    d = add("down", "remove the testbed and every process in its nodes")
    d.add_argument("--when-gone", type=int, default=None, help=argparse.SUPPRESS)   # the reaper: owner pid,
    d.add_argument("--id", default=None, help=argparse.SUPPRESS)                     # and which testbed
    add("status", "nodes, their processes and the bytes on their links")
    add("hostfile", "print the path of the hostfile (one 'address slots=N' per node)")
    add("agent", "print the path of the ssh stand-in (for -launcher-exec / --ssh)")
    e = add("exec", "run a command on a node: exec NODE -- COMMAND...")
    e.add_argument("node")
    e.add_argument("argv", nargs=argparse.REMAINDER)
    k = add("kill", "SIGKILL every process of a node (the node stays up)")
    k.add_argument("node")
    c = add("crash", "the node fails: its link goes down and all its processes die, its init too (no restart)")
    c.add_argument("node")
    ln = add("link", "link NODE down | up, or link all rate RATE")
    ln.add_argument("node", help="a node, or 'all' with rate")
    ln.add_argument("action", choices=["down", "up", "rate"])
    ln.add_argument("rate", nargs="?")
    r = add("ray-up", "start Ray with cluster.yaml's head command on node1 and worker command on "
                                      "the others")
    r.add_argument("--config", default="cluster.yaml", help="the Ray cluster config whose commands to run")
    add("ray-down", "run `ray stop` on every node")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return run(args)
    except tb.TestbedError as e:
        print(f"distnet-cluster: error: {e}", file=sys.stderr)
        return 2


def run(args):
    if args.command == "up":
        bed = lifecycle.up(args.nodes, args.link, args.prefix, args.subnet, args.slots, args.owner)
        print(describe(bed))
        return 0
    if args.command == "down":
        if args.when_gone and not _wait_for_owner(args.prefix, args.when_gone, args.id):
            return 0
        removed = lifecycle.down(args.prefix)
        print(f"removed: {', '.join(removed)}" if removed else f"nothing of testbed {args.prefix!r} was left")
        return 0
    bed = tb.Testbed.load(args.prefix)
    if args.command == "hostfile":
        print(bed.hostfile)
    elif args.command == "agent":
        print(bed.agent)
    elif args.command == "status":
        print(describe(bed, counters=True))
    elif args.command == "exec":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            raise tb.TestbedError("exec needs a command: distnet-cluster exec NODE -- COMMAND...")
        cmd = bed.exec_argv(args.node, argv)
        os.execvp(cmd[0], cmd)
    elif args.command == "kill":
        print(f"killed {bed.kill_processes(args.node)} process(es) on {bed.node(args.node)['name']}")
    elif args.command == "crash":
        print(f"{bed.node(args.node)['name']} crashed: link down, {bed.crash(args.node)} process(es) killed")
    elif args.command == "link":
        if args.action == "rate":
            if args.node != "all" or not args.rate:
                raise tb.TestbedError("usage: distnet-cluster link all rate RATE (e.g. 10gbit, none)")
            bed.set_rate(args.rate)
        else:
            bed.set_link(args.node, args.action == "up")
        print(describe(bed))
    elif args.command == "ray-up":
        from . import ray_nodes
        print(f"Ray is up: head at {ray_nodes.up(bed, args.config)}")
    elif args.command == "ray-down":
        from . import ray_nodes
        ray_nodes.down(bed)
    return 0


def _wait_for_owner(prefix, owner, ident):
    """The reaper: wait until process `owner` is gone; True if testbed `ident` is still up then (not taken down,
    nor replaced by another of the same name)."""
    def ours():
        try:
            return tb.Testbed.load(prefix).id == ident
        except (tb.TestbedError, OSError, ValueError, KeyError):
            return False
    while os.path.exists(f"/proc/{owner}"):
        if not ours():
            return False
        time.sleep(1)
    return ours()


def describe(bed, counters=False):
    lines = [f"testbed {bed.prefix!r}: {len(bed.nodes)} node(s), links {bed.link} each way, bridge {bed.bridge} "
             f"{bed.bridge_address}/{bed.prefixlen}"]
    for n in bed.nodes:
        pid = bed.init_pid(n["name"])
        line = f"  {n['name']:<7} {n['address']:<15} {n['hostname']:<18} "
        if pid is None:
            line += "DOWN (no init process)"
        else:
            state = open(f"/sys/class/net/{n['host_link']}/operstate").read().strip()
            line += f"link {state}"
            if counters:
                c = bed.link_bytes(n["name"])
                line += f", {len(bed.processes(n['name']))} process(es), sent {c['tx']:,} B, received {c['rx']:,} B"
        lines.append(line)
    lines += [f"hostfile: {bed.hostfile}", f"ssh agent: {bed.agent}",
              f"MPI:  distnet-launch --testbed{'' if bed.prefix == tb.DEFAULT_PREFIX else ' ' + bed.prefix} "
              "-n N script.py   (= --hostfile HOSTFILE --ssh AGENT --iface " + bed.bridge + ")"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
