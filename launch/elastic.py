"""Elastic relaunches under MPI: which hosts the next attempt runs on.

An MPI communicator cannot shrink, so under distnet-launch elasticity means: when the job fails, relaunch it at
once on the healthy hosts only, and let the script resume from its newest backup (BackupAndRestore). The global
batch is split over however many workers there are, so the resumed run follows the same trajectory on fewer
workers. A host is left out when

- it cannot be reached (the launcher's ssh runs `true` there, with a timeout): it is probed again before each
  relaunch, and comes back when it answers; or
- it held the rank that failed first twice (a flaky host): it is left out for the rest of the job.

The job continues while the hosts left have at least --min-workers slots; below that it stops with a message
that names the hosts left out and why.
"""
import concurrent.futures
import socket
import subprocess

from .mpi import LaunchError

PROBE_TIMEOUT = 15.0      # seconds a host may take to answer the probe
STRIKES = 2               # a host that held the first failure this many times is left out


class NotEnoughWorkers(LaunchError):
    """The healthy hosts have fewer slots than --min-workers."""


def placement(hosts, n):
    """rank -> host for n workers on [(host, slots)], as mpirun places them by default (MPICH's Hydra and Open
    MPI's by-slot mapping): each host's slots in order, then round again when oversubscribed."""
    out = []
    while len(out) < n:
        for host, slots in hosts:
            out += [host] * min(slots, n - len(out))
    return out


def is_local(host):
    """This machine by name (mpirun starts its ranks here without ssh)."""
    return host in ("localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn())


def probe(host, ssh, timeout=PROBE_TIMEOUT):
    """None when `ssh host true` succeeds within `timeout` seconds, else what went wrong (one line)."""
    if is_local(host):
        return None
    argv = list(ssh) + ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(timeout)}", host, "true"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer within {timeout:.0f} s"
    except OSError as e:
        return f"cannot run {argv[0]!r}: {e}"
    if res.returncode == 0:
        return None
    said = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
    return f"{' '.join(argv[:1])} exited with code {res.returncode}: {said}"


class HostPool:
    """The hosts of an elastic MPI job and the state kept between its attempts.

    hosts: [(host, slots)]; n: the workers asked for (each attempt runs min(n, healthy slots));
    min_workers: the fewest workers worth running; ssh: the argv prefix that reaches a host."""

    def __init__(self, hosts, n, min_workers, ssh=("ssh",), oversubscribe=False, probe=probe):
        if min_workers < 1 or min_workers > n:
            raise LaunchError(f"--min-workers must be between 1 and -n ({n}), received {min_workers}")
        self.hosts, self.n, self.min_workers = list(hosts), n, min_workers
        self.ssh, self.oversubscribe, self._probe = list(ssh), oversubscribe, probe
        self.strikes = {h: 0 for h, _ in self.hosts}
        self.unreachable = {}             # host -> why (probed again before every relaunch)
        self.current = self.attempt_hosts()

    def attempt_hosts(self):
        return [(h, s) for h, s in self.hosts if h not in self.unreachable and self.strikes[h] < STRIKES]

    def workers(self, hosts):
        slots = sum(s for _, s in hosts)
        return self.n if self.oversubscribe and hosts else min(self.n, slots)

    def left_out(self):
        """{host: why} for every host the next attempt does not use."""
        out = {h: f"unreachable ({why})" for h, why in self.unreachable.items()}
        out.update({h: f"held the first failure {k} times" for h, k in self.strikes.items() if k >= STRIKES})
        return out

    def after_failure(self, failed_rank):
        """Decide the next attempt's hosts after a failure whose first failing rank was `failed_rank` (None when
        unknown). Returns (hosts, n, lines to print); NotEnoughWorkers when fewer than --min-workers remain."""
        before = self.current
        ranks = placement(before, self.workers(before))
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(self.hosts))) as pool:
            answers = dict(zip([h for h, _ in self.hosts], pool.map(lambda hs: self._probe(hs[0], self.ssh),
                                                                      self.hosts)))
        lines = []
        for host, why in answers.items():
            if why and host not in self.unreachable:
                lines.append(f"host {host} is unreachable ({why}): left out")
            elif not why and host in self.unreachable:
                lines.append(f"host {host} answers again: back in")
        self.unreachable = {h: why for h, why in answers.items() if why}
        # a crashed host explains the failure of the ranks that talked to it: no strike for the others
        lost = [h for h in set(ranks) if h in self.unreachable]
        if not lost and failed_rank is not None and 0 <= failed_rank < len(ranks):
            host = ranks[failed_rank]
            self.strikes[host] += 1
            if self.strikes[host] >= STRIKES:
                lines.append(f"host {host} held the first failure {self.strikes[host]} times: left out")
        hosts = self.attempt_hosts()
        n = self.workers(hosts)
        if n < self.min_workers:
            why = "; ".join(f"{h}: {w}" for h, w in self.left_out().items()) or "none"
            raise NotEnoughWorkers(f"only {n} worker slot(s) left on healthy hosts, fewer than --min-workers="
                                   f"{self.min_workers} (left out: {why}); giving up")
        if hosts != before or n != len(ranks):
            spec = ",".join(f"{h}:{s}" for h, s in hosts)
            lines.append(f"relaunching on {n} worker(s) (was {len(ranks)}): hosts {spec}")
        self.current = hosts
        return hosts, n, lines
