"""Building the mpirun command for MPICH/Hydra (the `mpich` wheel) or Open MPI, and the workers' environment."""
import os
import shutil
import subprocess
import sys


from distnet.parallel import protocol


class LaunchError(RuntimeError):
    """Something the user must fix before the job can start; the message says what and how."""


def find_mpirun():
    """The mpirun next to this Python (a virtualenv with distnet[mpi]) or on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    found = here if os.path.exists(here) else shutil.which("mpirun") or shutil.which("mpiexec")
    if not found:
        raise LaunchError("MPI is not installed: no mpirun next to this Python or on PATH. Install it with\n"
                          "    pip install 'distnet[mpi]'      (that is: pip install mpi4py mpich)")
    return found


def flavor(mpirun):
    """'hydra' (MPICH, Intel MPI) or 'openmpi', from `mpirun --version`."""
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LaunchError(f"could not run {mpirun} --version: {e}") from e
    if "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "Intel(R) MPI" in text or "MPICH" in text:
        return "hydra"
    raise LaunchError(f"{mpirun} is neither MPICH/Hydra nor Open MPI (its --version says: {text[:200]!r})")


def worker_env(base, kind, threads, launch_dir, restart, watchdog=None):
    """Environment changes for the workers: BLAS threads (unless the user set any), MPI's settings for root and
    oversubscription, the launcher's status directory, and the collectives' watchdog (seconds; unless the user
    set DISTNET_WATCHDOG_TIMEOUT)."""
    env = {}
    if watchdog is not None and protocol.WATCHDOG_TIMEOUT not in base:
        env[protocol.WATCHDOG_TIMEOUT] = f"{watchdog:g}"
    if threads is not None and not protocol.user_chose_threads(base):
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[v] = str(threads)
    if kind == "openmpi":
        env.update({"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "PRTE_MCA_rmaps_default_mapping_policy": ":oversubscribe",
                    "OMPI_MCA_rmaps_base_oversubscribe": "1"})
    env[protocol.LAUNCH_DIR] = launch_dir
    env[protocol.RESTART_COUNT] = str(restart)
    env["PYTHONUNBUFFERED"] = "1"
    return env


NETWORKS = ("auto", "tcp", "tcp-only")


def command(mpirun, kind, n, hosts, program, env_names=(), ssh=None, iface=None, network="auto"):
    """The mpirun argv for n workers on `hosts` ([(host, slots)] or None for this machine).

    ssh: the program that reaches the hosts (one executable path; see ssh_wrapper for a command with options).
    iface: the network interface the launcher and the workers use between hosts.
    network: 'auto' (MPI's choice), 'tcp' (between hosts over TCP sockets, not RDMA or UCX's shared-memory
    transports; co-located ranks still use shared memory), 'tcp-only' (every pair over TCP, co-located too)."""
    if network not in NETWORKS:
        raise LaunchError(f"--network must be one of {', '.join(NETWORKS)}, received {network!r}")
    cmd = [mpirun, "-n", str(n)]
    if hosts:
        spec = ",".join(f"{h}:{s}" for h, s in hosts)
        cmd += ["-hosts", spec] if kind == "hydra" else ["--host", spec]
    if kind == "hydra":
        cmd += ["-launcher", "ssh", "-launcher-exec", ssh] if ssh else []
        cmd += ["-iface", iface] if iface else []
        for name, value in network_env(network).items():
            cmd += ["-genv", name, value]
    else:
        cmd += ["--mca", "plm_rsh_agent", ssh] if ssh else []
        cmd += ["--mca", "btl_tcp_if_include", iface, "--mca", "oob_tcp_if_include", iface] if iface else []
        if network != "auto":
            cmd += ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self" if network == "tcp-only" else "tcp,self,vader"]
        cmd += ["--oversubscribe"] if not hosts else []
        for name in env_names:                # Open MPI forwards only the variables named with -x
            cmd += ["-x", name]
    return cmd + list(program)


def network_env(network):
    """MPICH's settings for --network: UCX (the mpich wheel's netmod) over TCP only; NOLOCAL: no shared memory
    between co-located ranks either."""
    env = {}
    if network in ("tcp", "tcp-only"):
        env["UCX_TLS"] = "tcp,self"
    if network == "tcp-only":
        env["MPIR_CVAR_NOLOCAL"] = "1"
    return env


def ssh_wrapper(ssh, directory):
    """`ssh` as one executable: itself when it is one word, else a script in `directory` that runs the command
    with its options (Hydra's -launcher-exec takes a path, not a command line)."""
    import shlex
    words = shlex.split(ssh)
    if not words:
        raise LaunchError("--ssh needs a command, e.g. --ssh 'ssh -p 2222', received an empty string")
    if len(words) == 1:
        return words[0]
    path = os.path.join(directory, "ssh")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\n# distnet-launch --ssh {shlex.quote(ssh)}\nexec {shlex.join(words)} \"$@\"\n")
    os.chmod(path, 0o755)
    return path
