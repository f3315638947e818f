"""The testbed's stand-in for ssh: a shell script that runs a command inside an emulated node.

    AGENT [ssh options] HOST COMMAND...      (what MPI launchers run: Hydra's `-launcher ssh -launcher-exec AGENT`)

HOST is a node's address, name (node2) or hostname, optionally as user@HOST. ssh options before the host are
skipped, with their argument where ssh's takes one (Hydra passes -x; Open MPI may pass -o ..., -p PORT). Like
ssh, the words of COMMAND are joined and run by a shell on the node (`/bin/sh -c`), in the caller's working
directory (the nodes share this machine's file system) and with the caller's environment.
"""
import shlex

# ssh(1) options that take an argument: skip it too
_WITH_ARGUMENT = "BbcDEeFIiJLlmOoPpQRSWw"

TEMPLATE = """#!/bin/sh
# ssh stand-in for the distnet testbed {prefix!r}: [ssh options] HOST COMMAND... runs COMMAND on node HOST.
# Written by `distnet-cluster up`; removed by `distnet-cluster down`.
state={state}
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; break ;;
    -[{with_argument}]) shift 2 ;;
    -*) shift ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "usage: $0 [ssh options] HOST COMMAND... (HOST: one of {hosts})" >&2
  exit 255
fi
host=${{1#*@}}
shift
case "$host" in
{cases}
  *) echo "distnet testbed {prefix}: no node '$host' (nodes: {hosts})" >&2; exit 255 ;;
esac
pid=$(cat "$state/$node/pid" 2>/dev/null)
if [ -z "$pid" ] || [ ! -d "/proc/$pid" ]; then
  echo "distnet testbed {prefix}: node $node is down (no init process; distnet-cluster status)" >&2
  exit 255
fi
if [ $# -eq 0 ]; then set -- exec /bin/sh; fi
exec nsenter -t "$pid" -n -u -i -m -p --wd="${{PWD:-/}}" -- /bin/sh -c "$*"
"""


def render(prefix, state_dir, nodes):
    """The agent script for nodes [(name, hostname, address)]."""
    cases = "\n".join(f"  {shlex.quote(address)}|{shlex.quote(name)}|{shlex.quote(hostname)}) node={name} ;;"
                      for name, hostname, address in nodes)
    hosts = ", ".join(f"{address} ({name})" for name, _, address in nodes)
    return TEMPLATE.format(prefix=prefix, state=shlex.quote(state_dir), with_argument=_WITH_ARGUMENT,
                           cases=cases, hosts=hosts)
