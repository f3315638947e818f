"""Where workers run: host lists from --hosts, an Open MPI-style hostfile, or a Ray cluster.yaml."""
import os
import re


class HostSpecError(ValueError):
    """A host list, hostfile or cluster file that cannot be used, with what was wrong and where."""


_HOST = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+$")


def parse_hosts(text):
    """'a:4,b:4' (or 'a,b' meaning one slot each) -> [('a', 4), ('b', 4)]."""
    hosts = []
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            raise HostSpecError(f"--hosts {text!r}: empty host name in the list")
        name, _, slots = item.rpartition(":") if ":" in item else (item, "", "1")
        hosts.append((_check_name(name, f"--hosts {text!r}"), _check_slots(slots, f"--hosts {text!r}, host {name!r}")))
    return _merge(hosts)


def parse_hostfile(path):
    """Open MPI hostfile lines 'host slots=N' (also 'host:N', 'host', comments with #) -> [(host, slots)]."""
    if not os.path.exists(path):
        raise HostSpecError(f"hostfile {path!r} does not exist")
    hosts = []
    with open(path) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"hostfile {path!r} line {lineno} ({raw.strip()!r})"
            fields = line.split()
            name, slots = fields[0], "1"
            if ":" in name:
                name, slots = name.rsplit(":", 1)
            for field in fields[1:]:
                key, _, value = field.partition("=")
                if key in ("slots", "max_slots", "max-slots") and value:
                    if key == "slots":
                        slots = value
                else:
                    raise HostSpecError(f"{where}: expected 'host slots=N', found {field!r}")
            hosts.append((_check_name(name, where), _check_slots(slots, where)))
    if not hosts:
        raise HostSpecError(f"hostfile {path!r} lists no hosts")
    return _merge(hosts)


def load_cluster_yaml(path):
    """The mapping a Ray cluster config holds; HostSpecError naming the file when it cannot be read."""
    try:
        import yaml
    except ImportError as e:
        raise HostSpecError("reading cluster.yaml needs PyYAML: pip install pyyaml (ray[default] includes it)") from e
    if not os.path.exists(path):
        raise HostSpecError(f"cluster file {path!r} does not exist")
    with open(path) as f:
        try:
            config = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise HostSpecError(f"cluster file {path!r} is not valid YAML: {e}") from e
    if not isinstance(config, dict):
        raise HostSpecError(f"cluster file {path!r} must hold a mapping, found {type(config).__name__}")
    return config


def parse_cluster_yaml(path, slots_per_host=None):
    """Hosts of a Ray cluster-launcher config with the local provider: head_ip then worker_ips.

    Slots per host: `slots_per_host` if given, else the CPU count the file declares for its nodes
    (available_node_types.<type>.resources.CPU), else 1."""
    config = load_cluster_yaml(path)
    provider = config.get("provider")
    if not isinstance(provider, dict) or provider.get("type") != "local":
        raise HostSpecError(f"cluster file {path!r}: distnet-launch reads clusters with provider.type 'local' "
                            f"(head_ip and worker_ips); found provider {provider!r}")
    head = provider.get("head_ip")
    workers = provider.get("worker_ips", []) or []
    if not head:
        raise HostSpecError(f"cluster file {path!r}: provider.head_ip is missing")
    if not isinstance(workers, list):
        raise HostSpecError(f"cluster file {path!r}: provider.worker_ips must be a list, found {workers!r}")
    if slots_per_host is None:
        cpus = [t.get("resources", {}).get("CPU") for t in (config.get("available_node_types") or {}).values()
                if isinstance(t, dict)]
        cpus = [c for c in cpus if isinstance(c, int) and c > 0]
        slots_per_host = min(cpus) if cpus else 1
    where = f"cluster file {path!r}"
    return _merge([(_check_name(str(h), where), _check_slots(slots_per_host, where)) for h in [head] + workers])


def cluster_head_address(path):
    """host:port of the Ray head a cluster.yaml describes (the --port of its head start command, else 6379)."""
    head = parse_cluster_yaml(path)[0][0]
    config = load_cluster_yaml(path)
    commands = " ".join(str(c) for c in config.get("head_start_ray_commands") or [])
    port = re.search(r"--port[= ](\d+)", commands)
    return f"{head}:{port.group(1) if port else 6379}"


def _check_name(name, where):
    if not name or not _HOST.match(name):
        raise HostSpecError(f"{where}: {name!r} is not a valid host name")
    return name


def _check_slots(slots, where):
    try:
        n = int(slots)
    except (TypeError, ValueError):
        raise HostSpecError(f"{where}: slots must be a positive integer, found {slots!r}") from None
    if n < 1:
        raise HostSpecError(f"{where}: slots must be a positive integer, found {slots!r}")
    return n


def _merge(hosts):
    """Repeated hosts add up their slots, keeping first-seen order."""
    out = {}
    for name, slots in hosts:
        out[name] = out.get(name, 0) + slots
    return list(out.items())


def total_slots(hosts):
    return sum(s for _, s in hosts)
