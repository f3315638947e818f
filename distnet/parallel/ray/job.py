"""Driver for a script on Ray actors (what `distnet-launch --backend ray` runs):

    python -m distnet.parallel.ray.job -n 4 [--address ADDR] [--max-failures K] [--min-workers M] script.py [args...]
"""
import argparse
import signal
import sys


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m distnet.parallel.ray.job")
    p.add_argument("-n", "--num-workers", type=int, required=True)
    p.add_argument("--address", default=None)
    p.add_argument("--max-failures", type=int, default=0)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--min-workers", type=int, default=None, help="elastic: go on with as few as M workers")
    p.add_argument("--wait-for-workers", type=float, default=60.0,
                   help="elastic: seconds to wait for capacity below --min-workers")
    p.add_argument("script")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args(argv)
    from .. import protocol
    from .group import WorkerFailure, run_script

    def stop(signum, frame):      # a closed terminal: stop the group as Ctrl-C does (Ray handles SIGTERM itself)
        raise protocol.Interrupted(signum)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)     # even when started with SIGINT ignored
    try:
        run_script(a.script, a.args, a.num_workers, {"CPU": a.cpus_per_worker}, a.max_failures, a.address,
                   timeout=a.timeout, min_workers=a.min_workers, wait_for_workers=a.wait_for_workers)
    except WorkerFailure as e:
        print(f"distnet.ray: the job failed.\n  first failure: {e}", file=sys.stderr)
        return 1
    except ConnectionError as e:          # the cluster address is unreachable (cluster.check_reachable)
        print(f"distnet.ray: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:        # stopped (the group and the private instance are already shut down);
        return getattr(e, "exit_code", 130)   # distnet-launch, which sent the signal, says so
    return 0


if __name__ == "__main__":
    sys.exit(main())
