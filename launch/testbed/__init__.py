"""An emulated multi-node cluster on one Linux machine, for running and measuring distnet across real (if
virtual) network links: `distnet-cluster` (cli.py), the nodes and their links (nodes.py; lifecycle.py brings
them up and down), the ssh stand-in that MPI launchers use to reach the nodes (agent.py), and Ray started on
the nodes with cluster.yaml's commands (ray_nodes.py). Standard library only, like the rest of launch/."""
from .lifecycle import down, problems, up
from .nodes import DEFAULT_PREFIX, Testbed, TestbedError

__all__ = ["DEFAULT_PREFIX", "Testbed", "TestbedError", "down", "problems", "up"]
