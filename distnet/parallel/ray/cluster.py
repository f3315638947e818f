"""Joining a Ray cluster, or starting a private one that listens on loopback only."""
import atexit
import os
import shutil
import sys
import tempfile
import time


def ray_module():
    try:
        import ray
    except ImportError as e:
        raise ImportError("distnet's Ray backend needs Ray: pip install 'distnet[ray]' (that is: pip install "
                          "'ray[default]')") from e
    return ray


def init_ray(address=None, num_workers=1, cpus_per_worker=1):
    """Join the Ray cluster at `address` (or $RAY_ADDRESS); without one, start a private single-node instance
    bound to 127.0.0.1 with the dashboard off and enough CPU slots for num_workers (oversubscribing cores)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # Ray 2.x resolves 127.0.0.1 to the machine's external address and listens on every interface; its
        # single-machine mode (the one it uses on macOS/Windows) binds everything to loopback instead.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray's metrics agents take CPU from the workers; on a 2-core machine, side by side with MPI, steps
        # measured 1.16-1.42x MPI's with them and 0.98-0.99x without (in 2 runs of 3; see BENCHMARKS.md)
        os.environ.setdefault("RAY_enable_metrics_collection", "0")
    os.environ.setdefault("RAY_COLOR_PREFIX", "1" if sys.stdout.isatty() else "0")
    ray = ray_module()
    global _PRIVATE_CPUS, _PRIVATE_DIR
    need = max(os.cpu_count() or 1, int(-(-num_workers * cpus_per_worker // 1)))
    if ray.is_initialized():
        if _PRIVATE_CPUS is None or _PRIVATE_CPUS >= need:
            return ray
        shutdown_private()                # our own local instance is too small for this job: start a larger one
    if address:
        check_reachable(address)
        ray.init(address=address, log_to_driver=True)
        _PRIVATE_CPUS = None
    else:
        # CPU slots are scheduling tokens: N workers on fewer cores oversubscribe, as mpirun -n N does.
        # address="local": a new instance even when a `ray start` cluster left /tmp/ray/ray_current_cluster.
        # Its files (sessions: logs, sockets) go to a directory of its own, not the shared /tmp/ray, and are
        # removed when it stops (shutdown_private, at exit at the latest).
        atexit.unregister(shutdown_private)
        atexit.register(shutdown_private)
        for attempt in range(STARTUP_ATTEMPTS):
            _PRIVATE_DIR = tempfile.mkdtemp(prefix=f"distnet-ray-{os.getpid()}-")
            try:
                ray.init(address="local", num_cpus=need, include_dashboard=False, log_to_driver=True,
                         _temp_dir=_PRIVATE_DIR)
                break
            except Exception as e:
                # Ray waits a fixed 30 s for its raylet to register; a machine whose cores are all busy can take
                # longer (seen at load average 10 on 2 cores): start afresh, once
                if "timed out during startup" not in str(e) or attempt + 1 == STARTUP_ATTEMPTS:
                    _kill_daemons_of_failed_start()
                    raise
                print(f"distnet.ray: the local Ray instance did not start in time ({e}); trying again",
                      file=sys.stderr, flush=True)
                _kill_daemons_of_failed_start()
        _PRIVATE_CPUS = need
    return ray


STARTUP_ATTEMPTS = 2      # tries to start a private local Ray instance
CONNECT_TIMEOUT = 10.0    # seconds to reach a cluster's address before giving up (Ray itself retries for minutes)


def check_reachable(address, timeout=CONNECT_TIMEOUT):
    """Fail fast, naming the address, when nothing listens at a 'host:port' Ray address."""
    import socket
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return                      # 'auto' and other forms: Ray resolves them itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ConnectionError(f"cannot reach the Ray cluster at {address!r} within {timeout:g} s ({e}); start it "
                              "with `ray start --head`, fix RAY_ADDRESS / --address, or leave the address out for "
                              "a private local instance") from None


_PRIVATE_CPUS = None      # CPU slots of the local Ray instance distnet started, or None
_PRIVATE_DIR = None       # its temporary directory (Ray's sessions: logs, sockets, spilled objects)


def shutdown_private():
    """Stop the local Ray instance distnet started (its daemons would otherwise keep taking CPU) and remove its
    session directory."""
    global _PRIVATE_CPUS, _PRIVATE_DIR
    if _PRIVATE_CPUS is not None:
        # the workers' last lines travel through Ray's log monitor: give them the half second Ray's own exit
        # handler gives them (without it the final lines of a run were lost in 4 runs of 10)
        time.sleep(LOG_FLUSH_S)
        ray_module().shutdown()
        _PRIVATE_CPUS = None
    if _PRIVATE_DIR is not None:
        shutil.rmtree(_PRIVATE_DIR, ignore_errors=True)
        _PRIVATE_DIR = None


def _kill_daemons_of_failed_start():
    """A ray.init that failed leaves the daemons it started (GCS, raylet, ...) unowned: kill them (their command
    lines name the session directory), then remove the directory."""
    from .. import protocol
    if _PRIVATE_DIR is not None:
        protocol.kill_and_wait(protocol.processes_matching("cmdline", _PRIVATE_DIR.encode() + b"/"))
    shutdown_private()


LOG_FLUSH_S = 0.5
