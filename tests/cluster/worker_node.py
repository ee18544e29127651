"""A Ray worker node on 127.0.0.1 that joins GCS_ADDRESS, as ``ray start --address ... --block`` would start it.

Run by the test session (``tests/cluster/conftest.py``), never collected as a test. ``ray start --address``
cannot start a loopback-only node: it turns 127.0.0.1 into the machine's routable address (and its
servers then listen on every interface) unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, under which it
refuses to start any worker node. So this starts the node through the same ``Node`` class
``ray start`` uses (and ``ray.cluster_utils.Cluster`` too), with the node address given as it is.
SIGTERM stops it; Ray's reaper takes the node's processes with it.

    python worker_node.py GCS_ADDRESS TEMP_DIR NUM_CPUS OBJECT_STORE_BYTES
"""

from __future__ import annotations

import signal
import sys
import time

from ray._private.node import Node
from ray._private.parameter import RayParams


def main(gcs_address: str, temp_dir: str, num_cpus: str, object_store_bytes: str) -> None:
    params = RayParams(
        gcs_address=gcs_address,
        node_ip_address="127.0.0.1",
        num_cpus=int(num_cpus),
        object_store_memory=int(object_store_bytes),
        temp_dir=temp_dir,
        node_manager_port=0,
        min_worker_port=0,
        max_worker_port=0,
        dashboard_agent_listen_port=None,  # any free port: the head's agent holds its own
        include_log_monitor=False,  # the head's monitor already follows this machine's logs
    )
    Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # exit through atexit: Node stops its processes
    print("worker node started", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(*sys.argv[1:5])
