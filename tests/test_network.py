"""A local Ray is reachable from this machine only: every socket its processes listen on is loopback.

With Ray's token auth off (RAY_AUTH_MODE=disabled, as in these tests) anyone who reaches one of its ports (GCS,
raylet, object manager, the agents, any worker's gRPC server) can run code on this machine.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import SMOKE, eventually
from study.local_ray import init_local_ray
from study.ports import is_loopback
from study.ray_internals import cluster_mode

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening_sockets(root_pid: int) -> set[tuple[str, str, int, int, str]]:
    """(tcp|udp, address, port, pid, process name) of every socket that the process tree of `root_pid` listens on
    (TCP in LISTEN, unconnected UDP): a local Ray's GCS, raylet, dashboard, agents and workers all descend from the
    driver that started them."""
    import ray  # noqa: F401  puts Ray's bundled psutil on sys.path
    import psutil
    try:
        root = psutil.Process(root_pid)
        tree = {process.pid: process for process in [root, *root.children(recursive=True)]}
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for conn in psutil.net_connections(kind="inet"):  # one pass over /proc: far cheaper than per process
        udp = conn.type == socket.SOCK_DGRAM
        if conn.pid in tree and (conn.status == psutil.CONN_LISTEN or (udp and not conn.raddr)):
            try:
                name = tree[conn.pid].name()
            except psutil.Error:
                name = "?"
            found.add(("udp" if udp else "tcp", conn.laddr.ip, conn.laddr.port, conn.pid, name))
    return found


def describe(sockets) -> str:
    """One line per socket, with every title its process had while it listened (Ray workers retitle per task)."""
    titles: dict[tuple, list[str]] = {}
    for proto, address, port, pid, name in sorted(sockets, key=lambda s: (s[3], s[2], len(s[4]))):
        titles.setdefault((proto, address, port, pid), []).append(name)
    return "\n".join(f"  {proto} {address}:{port}  pid {pid} {' | '.join(names)}"
                     for (proto, address, port, pid), names in sorted(titles.items(), key=lambda t: (t[1][0], t[0][2])))


def exposed(sockets) -> set:
    return {s for s in sockets if not is_loopback(s[1])}


@pytest.mark.ray
def test_local_study_listens_on_loopback_only(tmp_path):
    """A whole local study serving its results page: the GCS, raylet and object manager, the dashboard and its
    agents, the runtime-env agent, the trial's worker and Serve's controller, proxy and replica all listen on
    127.0.0.1/::1 only, from Ray's start to its shutdown."""
    dashboard_port, results_port = free_port(), free_port()
    argv = [sys.executable, "-m", "study.run", "baseline", *SMOKE, "--seeds", "1", "--serve-results",
            "--results-port", str(results_port), "--dashboard-port", str(dashboard_port),
            "--storage-path", str(tmp_path)]
    driver = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(driver.stdout), daemon=True)
    reader.start()
    sockets: set = set()

    def collect() -> bool:  # adds what listens now; true once the study has ended
        if driver.poll() is not None:
            return True
        sockets.update(listening_sockets(driver.pid))
        return False
    try:
        eventually(collect, timeout_s=240, interval_s=0.5)  # look every 0.5 s while the study runs
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGTERM)  # Tune saves and returns; Ray shuts down
            try:
                driver.wait(timeout=60)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait()
        reader.join(timeout=10)
    out = "".join(lines)
    assert driver.returncode == 0, out
    assert "(raylet)" not in out  # our words only: Ray's own shutdown of Serve reports a retried task
    names = {name for *_, name in sockets}
    # the watch saw the whole cluster at work, not just its start or its end
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::ProxyActor"} <= names, describe(sockets)
    assert any(name.startswith("ray::ImplicitFunc") for name in names), describe(sockets)
    assert any(name.startswith("ray::ServeReplica") for name in names), describe(sockets)
    assert {dashboard_port, results_port} <= {port for _, _, port, *_ in sockets}, describe(sockets)
    if exposed(sockets):
        pytest.fail(f"a local Ray listens beyond loopback:\n{describe(exposed(sockets))}", pytrace=False)


@pytest.mark.ray
def test_an_exposed_dashboard_exposes_nothing_else():
    """`--dashboard-host 0.0.0.0` is the user's explicit choice for the dashboard, and for nothing else; and the
    loopback pin ends with `ray.init`, so a later `ray.init(address=...)` in this process picks its IP as usual."""
    import ray
    dashboard_port = free_port()
    mode_before = cluster_mode()
    context = init_local_ray("0.0.0.0", num_cpus=1, dashboard_port=dashboard_port, log_to_driver=False)
    try:
        assert cluster_mode() == mode_before
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker, with its gRPC server, is up
        sockets: set = set()

        def agents_listen() -> bool:  # what listens now, kept in `sockets`; true once the agents and dashboard do
            sockets.clear()
            sockets.update(listening_sockets(os.getpid()))
            names = {name for *_, name in sockets}
            ports = {s[2] for s in sockets}
            return {"ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names and dashboard_port in ports
        eventually(agents_listen, timeout_s=60, interval_s=0.5)  # the agents come up a little after ray.init returns
    finally:
        ray.shutdown()
    names = {name for *_, name in sockets}
    assert {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"} <= names, describe(sockets)
    if {(address, port) for _, address, port, *_ in exposed(sockets)} != {("0.0.0.0", dashboard_port)}:
        pytest.fail(f"only the dashboard (0.0.0.0:{dashboard_port}) may listen beyond loopback, not:\n"
                    f"{describe(exposed(sockets))}", pytrace=False)
    assert is_loopback(context.address_info["node_ip_address"])


def test_the_loopback_pin_is_undone_when_ray_init_fails(monkeypatch):
    import ray

    def fails(**kwargs):
        assert cluster_mode() is False
        raise RuntimeError("no Ray today")

    before = cluster_mode()
    monkeypatch.setattr(ray, "init", fails)
    with pytest.raises(RuntimeError, match="no Ray today"):
        init_local_ray(num_cpus=1)
    assert cluster_mode() == before


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.53", True), ("::1", True), ("::ffff:127.0.0.1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fe80::1%eth0", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback
