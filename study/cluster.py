"""Starting a local Ray that only this machine can reach, and checks that only matter on a multi-node cluster."""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import math
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

from .ray_internals import cluster_mode_off, grpc_port_functions, replace_grpc_add_port
from .settings import StudyError, is_uri

DEFAULT_DASHBOARD_PORT = 8265  # Ray's own


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, "localhost", and IPv4-mapped loopback (::ffff:127.0.0.1, which dual-stack gRPC servers
    report; Python < 3.13 does not call that loopback)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


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


def check_port(host: str, port: int, option: str, holder: str, host_option: str = "--dashboard-host") -> None:
    """A port in range that this machine can listen on now (Ray would fail later, or pick another)."""
    if not 1 <= port <= 65535:
        raise StudyError(f"{option}: must be in 1…65535 (got {port})")
    _probe(host, port, option, holder, host_option)


def check_host(host: str, host_option: str = "--dashboard-host") -> None:
    """An interface of this machine, where some port is free."""
    _probe(host, 0, "", "", host_option)


def _probe(host: str, port: int, option: str, holder: str, host_option: str) -> None:
    if not host:
        raise StudyError(f"{host_option}: name an interface, e.g. 127.0.0.1 (got '')")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: closed connections don't count
        try:
            probe.bind((host, port))
        except socket.gaierror as err:
            raise StudyError(f"{host_option}: {host!r} is no address of this machine ({err.strerror})") from None
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise StudyError(f"{host_option}: {host} is no address of this machine ({err.strerror})") from None
            raise StudyError(f"{option}: cannot listen on {host}:{port} ({err.strerror}); {holder}: choose "
                             f"another {option}") from None


def check_cluster_options(args) -> None:
    """Cluster options that would otherwise fail inside Ray, or leave the study waiting forever."""
    interval = getattr(args, "progress_interval", 1.0)
    if not (math.isfinite(interval) and interval > 0):
        raise StudyError(f"--progress-interval: must be a number of seconds > 0 (got {interval})")
    if not (math.isfinite(args.connect_timeout) and 0 < args.connect_timeout <= 3600):
        raise StudyError(f"--connect-timeout: must be a number of seconds in (0, 3600] (got {args.connect_timeout})")
    if args.address:
        probe_address(args.address, args.connect_timeout)
        return  # the cluster's own size and ports are checked once connected
    if args.num_cpus is not None and args.num_cpus < 1:
        raise StudyError(f"--num-cpus: a local Ray needs at least 1 CPU, or no trial ever starts (got {args.num_cpus})")
    if getattr(args, "num_gpus", None) is not None and args.num_gpus < 0:
        raise StudyError(f"--num-gpus: must be >= 0 (got {args.num_gpus})")
    if args.dashboard_port is None:  # left to Ray, which takes the next free one: only the host is checked
        check_host(args.dashboard_host)
    else:
        check_port(args.dashboard_host, args.dashboard_port, "--dashboard-port",
                   "another Ray (a study already running here?) may hold it")


def probe_address(address: str, timeout_s: float) -> None:
    """Before anything else: a TCP connection to `--address` (host:port or ray://host:port), so that a
    refused or silent port is answered at once, or after `timeout_s`, not after Ray's minutes of retries."""
    if address == "auto":
        return  # Ray reads the address of the cluster started here, and says when there is none
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not (host.strip("[]") and port.isdigit() and 1 <= int(port) <= 65535):
        raise StudyError(f"--address: expected auto, HOST:PORT or ray://HOST:PORT with a port in 1…65535 "
                         f"(got {address!r})")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise StudyError(f"--address: nothing answers at {address} ({err.strerror or err}); check the cluster is "
                         f"up (`ray status --address {address}`) and the address") from None


def connect(address: str, timeout_s: float, **init_kwargs):
    """`ray.init(address=...)` that ends with a clear error within `timeout_s` instead of retrying for
    minutes (Ray keeps retrying a port that accepts connections but is no Ray). The watchdog ends the
    process with exit 2: nothing has been written yet, and Ray's retry loop cannot be interrupted.
    Callers probe the address first (`probe_address`, in `check_cluster_options`), before any work."""
    import ray
    connected = threading.Event()

    def give_up() -> None:
        if not connected.wait(timeout_s):
            print(f"error: --address: the Ray cluster at {address} did not answer within {timeout_s:g} s; check it "
                  f"with `ray status --address {address}`, or raise --connect-timeout", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=give_up, daemon=True).start()
    try:
        return ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise StudyError(f"--address: cannot attach to a Ray cluster at {address} ({err})") from None
    finally:
        connected.set()


def check_schedulable(cpus_per_trial: float, gpus_per_trial: float, nodes: list[dict] | None = None) -> None:
    """A trial runs on one node, so some alive node must hold its CPUs and GPUs; otherwise Tune would
    leave it pending forever. `nodes` are `ray.nodes()` entries (default: the connected cluster's)."""
    if nodes is None:
        import ray
        nodes = ray.nodes()
    sizes = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    if any(r.get("CPU", 0) >= cpus_per_trial and r.get("GPU", 0) >= gpus_per_trial for r in sizes):
        return
    largest = ", ".join(sorted({f"{r.get('CPU', 0):g} CPU/{r.get('GPU', 0):g} GPU" for r in sizes})) or "none alive"
    raise StudyError(f"--cpus-per-trial/--gpus-per-trial: no node can run a trial of {cpus_per_trial:g} CPU/"
                     f"{gpus_per_trial:g} GPU (nodes: {largest}); ask for less per trial, or add a larger node")


def check_gpu_request(device: str, gpus_per_trial: float | None, args) -> None:
    """GPU requests that no trial could meet, refused before the data is read and before Ray starts:
    `--device cuda` with `--gpus-per-trial 0`, and for a local Ray (whose trials run here) `--device cuda` on
    a machine without a CUDA GPU or more GPUs per trial than it has. An `--address` cluster's GPUs are
    known once attached (`driver.resolve_resources`)."""
    cuda = device.startswith("cuda")
    if cuda and gpus_per_trial == 0:
        raise StudyError(f"--device: {device} needs a GPU in every trial; drop --device (auto) or give "
                         f"--gpus-per-trial (got --gpus-per-trial 0)")
    if args.address or not (cuda or gpus_per_trial):
        return
    import torch
    present = torch.cuda.device_count()
    if cuda and not present:
        raise StudyError(f"--device: torch sees no CUDA GPU on this machine, where a local Ray runs the trials; "
                         f"drop --device (auto), or attach to a cluster with GPUs (--address) (got {device!r})")
    declared = present if args.num_gpus is None else args.num_gpus
    if gpus_per_trial and gpus_per_trial > declared:
        fix = f"ask for at most {declared}" if declared else "drop it (the trials run on CPUs)"
        raise StudyError(f"--gpus-per-trial: {gpus_per_trial:g} per trial but a local Ray here has {declared} GPU(s); "
                         f"{fix}, or attach to a cluster with GPUs (--address)")


def check_shared_storage(storage_path: str) -> None:
    """Trials on every node write to the storage path, so every node must see the same folder: the
    driver writes a marker and a zero-CPU task on each node looks for it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2 or is_uri(storage_path):
        return
    marker = Path(storage_path) / f".shared-check-{uuid.uuid4().hex}"
    marker.write_text("ok")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return Path(path).exists()

    try:
        checks = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = [node for node, ref in checks.items() if not ray.get(ref, timeout=60)]
    finally:
        marker.unlink()
    if blind:
        raise StudyError(f"--storage-path: {storage_path} is not shared: node(s) {', '.join(blind)} cannot see it. "
                         f"On a multi-node cluster put --storage-path on a filesystem every node mounts (NFS, Lustre, …)")


def keep_token_auth(args) -> None:
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


def free_port(host: str, preferred: int, option: str, host_option: str, avoid: tuple[int, ...] = ()) -> int:
    """`preferred`, or the next port this machine can listen on: a port the user left to us may be held
    by another study on the same machine, which is ordinary. Says so when it moves."""
    check_host(host, host_option)  # a host that is no interface here is the user's mistake, whatever the port
    for port in range(preferred, min(preferred + 100, 65536)):
        if port in avoid:
            continue
        try:
            check_port(host, port, option, "", host_option)
        except StudyError:  # taken
            continue
        if port != preferred:
            print(f"note: port {preferred} is taken (another study on this machine?); {option} {port} is used "
                  f"instead", file=sys.stderr)
        return port
    raise StudyError(f"{option}: no free port in {preferred}…{preferred + 99} on {host}; give one with {option}")
