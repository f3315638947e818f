"""PID 1 of one emulated node (standard library only; started by launch/testbed/nodes.py in the node's namespaces).

    python node_init.py HOSTNAME NODE_DIR

The node runs in its own network, PID, UTS, IPC and mount namespaces. Here it takes its hostname, turns IPv6 off
(a node's addresses are its cluster address and loopback, nothing else), gets its own /dev/shm (a tmpfs:
co-located processes share memory, other nodes cannot) and its own /tmp/ray (Ray's default session directory,
so that `ray stop` and Ray's files stay per node, as on separate machines), then reaps the orphans that daemons
leave (Ray's raylet, Hydra's proxies) until it is killed. Killing it ends every process of the node at once:
the kernel kills a PID namespace with its first process.
"""
import os
import signal
import socket
import subprocess
import sys
import time


def main(hostname, node_dir):
    socket.sethostname(hostname)
    for conf in ("all", "default", "eth0"):    # IPv4 only: a node's addresses are its cluster address and loopback
        with open(f"/proc/sys/net/ipv6/conf/{conf}/disable_ipv6", "w") as f:
            f.write("1")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,mode=1777", f"{hostname}-shm", "/dev/shm"], check=True)
    ray_tmp = os.path.join(node_dir, "ray-tmp")
    os.makedirs(ray_tmp, exist_ok=True)
    os.makedirs("/tmp/ray", exist_ok=True)
    subprocess.run(["mount", "--bind", ray_tmp, "/tmp/ray"], check=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(os.path.join(node_dir, "ready"), "w") as f:
        f.write("ready\n")
    while True:                      # PID 1 adopts every orphan of the node: reap them
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.5)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
