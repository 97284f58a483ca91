"""Starting Ray for a study: a local Ray that only this machine can reach, or an attached cluster.

Ray 2.60 has no public option to keep a local node on loopback, so its node IP is pinned while it starts
(`loopback_node_ip`) and each worker re-routes the gRPC servers Ray opens on every interface
(`loopback_worker_setup`, named by dotted path as Ray's `worker_process_setup_hook`).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

from .attach import connect
from .ports import DEFAULT_DASHBOARD_PORT, is_loopback
from .ray_internals import cluster_mode_off, grpc_port_functions, replace_grpc_add_port


def local_ray_options(dashboard_host: str = "127.0.0.1") -> dict:
    """`ray.init` keyword arguments for a local cluster: the dashboard on `dashboard_host` (anything but
    127.0.0.1/localhost is the user's explicit choice to expose it, and it alone) and every worker running
    `loopback_worker_setup`. Pass them through `init_local_ray`, which also pins the node's IP to loopback: that
    part is no `ray.init` argument (see `loopback_node_ip`)."""
    return {"include_dashboard": True, "dashboard_host": dashboard_host,
            "runtime_env": {"worker_process_setup_hook": f"{__name__}.loopback_worker_setup"}}


@contextlib.contextmanager
def loopback_node_ip():
    """While `ray.init` starts a local cluster, make Ray pick loopback as the node's IP address.

    Ray 2.60 binds every service of a node to that node's IP: the GCS, the raylet and object manager, each worker's
    gRPC server (min_worker_port..max_worker_port), the dashboard agent (gRPC, HTTP and metrics export), the runtime
    env agent and the autoscaler/dashboard metrics ports listen on localhost when the node IP is loopback, and on all
    interfaces (0.0.0.0/::) or the LAN address otherwise. No public option makes Ray pick loopback on Linux; a
    private flag does (`ray_internals.cluster_mode_off`), and it is put back afterwards, so a later
    `ray.init(address=...)` in the same process picks its IP as usual.
    """
    with cluster_mode_off():
        yield


def loopback_worker_setup() -> None:
    """`worker_process_setup_hook` of a local cluster's workers: gRPC servers that Ray's Python code opens on every
    interface ("[::]:0"), e.g. each Serve replica's inter-deployment server, listen on the node's IP instead, which
    `loopback_node_ip` made loopback. A no-op on a node whose IP is not loopback."""
    import ray
    functions = grpc_port_functions()
    if functions is None or getattr(functions.add_port, "loopback", False):  # another Ray: a worker must still start
        return

    def add_port_on_node_ip(server, address: str):
        host, _, port = address.rpartition(":")
        node_ip = ray.util.get_node_ip_address()
        if host.strip("[]") in ("", "0.0.0.0", "::") and is_loopback(node_ip):
            address = functions.build_address(node_ip, int(port))
        return functions.add_port(server, address)

    add_port_on_node_ip.loopback = True
    replace_grpc_add_port(add_port_on_node_ip)


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C while `ray.init` starts a cluster is held until it returns, then raised: cut short inside
    `ray.init`, Ray leaves the processes it has started running for minutes, beyond `ray.shutdown`'s reach.
    Once `ray.init` has returned, `ray.shutdown` (the caller's, or Ray's own at exit) stops them all."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def init_local_ray(dashboard_host: str = "127.0.0.1", **init_kwargs):
    """`ray.init` for a new single-machine cluster whose services all listen on loopback only (the dashboard on
    `dashboard_host`). Never for `--address`: nodes of a multi-node cluster must reach each other."""
    import ray
    options = {"address": "local", **local_ray_options(dashboard_host)}  # never join a `ray start` cluster here
    options["runtime_env"] = {**options["runtime_env"], **(init_kwargs.pop("runtime_env", None) or {})}
    with interrupts_held(), loopback_node_ip():
        context = ray.init(**options, **init_kwargs)
    node_ip = context.address_info.get("node_ip_address") or ""
    if not is_loopback(node_ip):  # joined an existing cluster, or a Ray whose IP logic changed
        print(f"warning: the local Ray node runs on {node_ip}, not loopback: its services may be reachable from "
              f"other machines", file=sys.stderr)
    return context


def default_to_token_auth(args) -> None:
    """A local Ray keeps Ray's token authentication on (its default). Saying so explicitly, with Ray's
    public switch, also keeps Ray from printing advice to turn it off. Ray reads the switch when it is
    imported, so this runs before anything imports Ray; a user's own RAY_AUTH_MODE wins."""
    if not getattr(args, "address", None):
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def start_ray(args):
    """Attach to the cluster at `--address`, or start a local Ray that listens on loopback only (its
    dashboard where `--dashboard-host` says). A dashboard port left to us is left to Ray, which takes the
    next free one after 8265 itself (a port probed here first could be taken before Ray binds it)."""
    import logging
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if args.address:
        return connect(args.address, args.connect_timeout, **quiet)
    if not is_loopback(args.dashboard_host):
        print(f"warning: the Ray dashboard will listen on {args.dashboard_host}:"
              f"{args.dashboard_port or DEFAULT_DASHBOARD_PORT}; "
              f"anyone who can reach it can see and control this cluster", file=sys.stderr)
    print("starting a local Ray (its services and dashboard take 10-30 s)…", flush=True)
    started = time.monotonic()
    context = init_local_ray(args.dashboard_host, num_cpus=args.num_cpus, num_gpus=getattr(args, "num_gpus", None),
                             dashboard_port=args.dashboard_port, **quiet)
    print(f"Ray started in {time.monotonic() - started:.0f} s", flush=True)
    port = int(context.dashboard_url.rpartition(":")[2]) if context.dashboard_url else None
    if args.dashboard_port is None and port not in (None, DEFAULT_DASHBOARD_PORT):
        print(f"note: port {DEFAULT_DASHBOARD_PORT} is taken (another study on this machine?); --dashboard-port "
              f"{port} is used instead", file=sys.stderr)
    return context
