"""distnet-launch command line."""
import argparse
import os
import re
import shlex
import sys
import tempfile

from distnet.parallel import protocol

from . import hosts as hosts_mod
from . import mpi
from .elastic import HostPool
from .run import Job, run_once, run_with_restarts, say
from .testbed import Testbed, TestbedError


def _testbed(name):
    if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", name):
        raise mpi.LaunchError(f"--testbed-name takes a testbed name (as in distnet-cluster up --prefix NAME), "
                              f"received {name!r}")
    return Testbed.load(name)


DEFAULT_WATCHDOG = 60.0       # seconds, for elastic MPI jobs


def parser():
    p = argparse.ArgumentParser(
        prog="distnet-launch",
        description="Run a distnet training script on N workers over MPI (or Ray): local cores, --hosts, "
                    "--hostfile or --cluster cluster.yaml.",
        epilog="Example: distnet-launch -n 8 examples/train_cnn.py --epochs 5")
    p.add_argument("-n", "--np", dest="n", type=int, default=None,
                   help="number of workers (default: all slots of the hosts, or 1 on this machine)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--hosts", help="comma-separated host:slots, e.g. a:4,b:4")
    where.add_argument("--hostfile", help="Open MPI-style hostfile: one 'host slots=N' per line")
    where.add_argument("--cluster", help="a Ray cluster.yaml (provider.type local): its head_ip and worker_ips")
    where.add_argument("--testbed", action="store_true",
                       help="the emulated cluster of `distnet-cluster up`: its hostfile, ssh stand-in and bridge; "
                            "with --backend ray, its Ray head (distnet-cluster ray-up)")
    p.add_argument("--testbed-name", default="distnet", metavar="NAME",
                   help="which testbed (distnet-cluster up --prefix NAME); default distnet")
    p.add_argument("--ssh", default=None, metavar="COMMAND",
                   help="how to reach the hosts (MPI), e.g. 'ssh -p 2222' or a path (default: ssh)")
    p.add_argument("--iface", default=None, help="network interface between the hosts, e.g. eth1 (MPI)")
    p.add_argument("--network", choices=mpi.NETWORKS, default="auto",
                   help="MPI transports: auto; tcp (TCP between hosts, e.g. to measure a TCP network); tcp-only "
                        "(TCP between co-located ranks too)")
    p.add_argument("--slots-per-host", type=int, default=None, help="slots of each cluster.yaml host")
    p.add_argument("--backend", choices=["mpi", "ray"], default="mpi",
                   help="mpi (mpirun) or ray (workers as Ray actors); default mpi")
    p.add_argument("--address", default=None,
                   help="ray: the cluster to join (default $RAY_ADDRESS, else a private local instance)")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS threads per worker (default: cores / workers on this machine)")
    p.add_argument("--oversubscribe", action="store_true",
                   help="allow more workers than the listed hosts have slots")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart the whole job up to K times when a worker fails (resume from checkpoints)")
    p.add_argument("--min-workers", type=int, default=None, metavar="M",
                   help="elastic, down to M workers. MPI (with hosts): relaunch on the healthy hosts only "
                        "(unreachable ones, and a host that held the first failure twice, are left out); needs "
                        "--max-restarts. Ray: the survivors go on without a restart, and workers join again when "
                        "the cluster has room")
    p.add_argument("--watchdog-timeout", type=float, default=None, metavar="SECONDS",
                   help="end the job when a rank waits longer than this at a collective, naming the rank it waits "
                        f"for (MPI; default: off, {DEFAULT_WATCHDOG:g} s with --min-workers: a crashed host sends "
                        "nothing, and MPI would wait for it forever)")
    p.add_argument("--rank0-only", action="store_true", help="hide the output of ranks other than 0")
    p.add_argument("--dry-run", action="store_true", help="print the command that would run, and exit")
    p.add_argument("--python", default=sys.executable, help="the Python that runs the script on every worker")
    p.add_argument("-m", "--module", action="store_true",
                   help="run the training code as a module (python -m SCRIPT), as torchrun's -m")
    p.add_argument("script", help="the training script (with -m: the module)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return launch(args)
    except (mpi.LaunchError, hosts_mod.HostSpecError, TestbedError) as e:
        print(f"distnet-launch: error: {e}", file=sys.stderr)
        return 2
    except protocol.Interrupted as e:      # Ctrl-C, SIGTERM, SIGHUP: the job is stopped and cleaned up
        say(f"distnet-launch: {e.describe()}")
        return e.exit_code


def resolve_hosts(args):
    if args.testbed and args.backend == "mpi":
        bed = _testbed(args.testbed_name)
        args.ssh, args.iface = args.ssh or bed.agent, args.iface or bed.bridge
        return hosts_mod.parse_hostfile(bed.hostfile)
    if args.hosts:
        return hosts_mod.parse_hosts(args.hosts)
    if args.hostfile:
        return hosts_mod.parse_hostfile(args.hostfile)
    if args.cluster:
        return hosts_mod.parse_cluster_yaml(args.cluster, args.slots_per_host)
    return None


def program(args):
    if args.module:
        return [args.python, "-m", args.script, *args.args]
    if args.script == "-m":             # distnet-launch -n 2 -- -m module
        if not args.args:
            raise mpi.LaunchError("-m needs a module name, e.g. distnet-launch -n 2 -m mypackage.train")
        return [args.python, "-m", *args.args]
    if not os.path.isfile(args.script):
        raise mpi.LaunchError(f"script {args.script!r} does not exist (looked in {os.getcwd()})")
    return [args.python, args.script, *args.args]


def launch(args):
    hosts = resolve_hosts(args)
    slots = hosts_mod.total_slots(hosts) if hosts else None
    if args.backend == "ray" and (args.cluster or args.testbed) and args.n is None:
        raise mpi.LaunchError("with --backend ray and --cluster/--testbed, give the number of workers with -n")
    n = args.n if args.n is not None else (slots or 1)
    if n < 1:
        raise mpi.LaunchError(f"-n must be at least 1, received {n}")
    if args.threads is not None and args.threads < 1:
        raise mpi.LaunchError(f"--threads must be at least 1, received {args.threads}")
    if args.max_restarts < 0:
        raise mpi.LaunchError(f"--max-restarts must be >= 0, received {args.max_restarts}")
    if hosts and n > slots and not args.oversubscribe:
        spec = ",".join(f"{h}:{s}" for h, s in hosts)
        raise mpi.LaunchError(f"asked for {n} workers, but the hosts ({spec}) have {slots} slots in total; "
                              "lower -n, add slots, or pass --oversubscribe")
    pool = elastic_pool(args, hosts, n)
    prog = program(args)
    if args.backend == "ray":
        if args.watchdog_timeout is not None:
            raise mpi.LaunchError("--watchdog-timeout is for MPI jobs; Ray workers bound their collectives with "
                                  "distributed.init(watchdog_timeout=...) or distnet.ray.run(..., timeout=...)")
        return launch_ray(args, n, prog)
    mpirun = mpi.find_mpirun()
    kind = mpi.flavor(mpirun)
    local_workers = n if not hosts else None
    threads = args.threads if args.threads is not None else (
        protocol.blas_threads(local_workers) if local_workers else None)
    launch_dir_placeholder = "<temporary status directory>"
    if args.watchdog_timeout is not None and args.watchdog_timeout <= 0:
        raise mpi.LaunchError(f"--watchdog-timeout must be a positive number of seconds, received "
                              f"{args.watchdog_timeout:g}")
    watchdog = args.watchdog_timeout or (DEFAULT_WATCHDOG if pool else None)

    def env_for(launch_dir, restart):
        return mpi.worker_env(os.environ, kind, threads, launch_dir, restart, watchdog)
    env_preview = env_for(launch_dir_placeholder, 0)
    supervised = [args.python, "-m", "launch.supervise", "--", *prog]      # one supervisor per rank
    with tempfile.TemporaryDirectory(prefix="distnet-launch-ssh-") as tmp:
        ssh = mpi.ssh_wrapper(args.ssh, tmp) if args.ssh and kind == "hydra" else args.ssh
        def command(hosts, n):
            return mpi.command(mpirun, kind, n, hosts, supervised, env_names=sorted(env_preview), ssh=ssh,
                               iface=args.iface, network=args.network)
        cmd = command(hosts, n)
        if args.dry_run:
            assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env_preview.items())
                                   if k not in (protocol.LAUNCH_DIR, protocol.RESTART_COUNT))
            print(f"{assignments} {shlex.join(cmd)}")
            if ssh != args.ssh:
                print(f"# {ssh}: a script that runs {args.ssh} \"$@\"")
            return 0
        return run_with_restarts(command, hosts, n, env_for, args.max_restarts, args.rank0_only, pool)


def elastic_pool(args, hosts, n):
    """The HostPool of an elastic MPI job (--min-workers), or None."""
    if args.min_workers is None:
        return None
    if not 1 <= args.min_workers <= n:
        raise mpi.LaunchError(f"--min-workers must be between 1 and -n ({n}), received {args.min_workers}")
    if args.backend == "ray":
        return None                       # the Ray driver's elastic group (launch_ray passes --min-workers)
    if not hosts:
        raise mpi.LaunchError("--min-workers needs hosts (--hosts, --hostfile, --cluster or --testbed): on this "
                              "machine alone a relaunch has the same cores; use --max-restarts")
    if args.max_restarts < 1:
        raise mpi.LaunchError(f"--min-workers {args.min_workers} relaunches the job after a failure: give how many "
                              "times with --max-restarts K (K >= 1)")
    import shlex
    return HostPool(hosts, n, args.min_workers, ssh=shlex.split(args.ssh or "ssh"), oversubscribe=args.oversubscribe)


def launch_ray(args, n, prog):
    """The script runs inside n Ray actors; a driver process (python -m distnet.parallel.ray.job) places them,
    wires their ring, restarts the group on failure (--max-restarts) and names the rank that failed."""
    if args.hosts or args.hostfile:
        raise mpi.LaunchError("--hosts/--hostfile describe MPI hosts; with --backend ray give the cluster with "
                              "--address (or run inside `ray job submit`)")
    if prog[1] == "-m":
        raise mpi.LaunchError("--backend ray runs script files; -m module is not supported there")
    cmd = [args.python, "-m", "distnet.parallel.ray.job", "-n", str(n), "--max-failures", str(args.max_restarts)]
    address = args.address or (hosts_mod.cluster_head_address(args.cluster) if args.cluster else None)
    head = None
    if args.testbed:
        # the driver runs on the head node (as under `ray job submit`): Ray wants a raylet on the driver's node
        head = _testbed(args.testbed_name).node(1)["address"]
        address = address or f"{head}:6379"
    if address:
        cmd += ["--address", address]
    if args.threads:
        cmd += ["--cpus-per-worker", str(args.threads)]
    if args.min_workers is not None:
        cmd += ["--min-workers", str(args.min_workers)]
    cmd += prog[1:]
    if head:
        cmd = [_testbed(args.testbed_name).agent, head, shlex.join(cmd)]
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    import signal
    with tempfile.TemporaryDirectory(prefix="distnet-launch-") as launch_dir:
        env = {"PYTHONUNBUFFERED": "1", protocol.LAUNCH_DIR: launch_dir}
        # the driver stops the group, the actors and its private Ray instance on SIGINT (within a few seconds)
        return run_once(Job(cmd, env, args.rank0_only, launch_dir, stop_signal=signal.SIGINT, grace=20))
