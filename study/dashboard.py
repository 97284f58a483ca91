"""`python -m study.run dashboard`, and `--serve-results` on studies: the live results page on Ray Serve.

Locally the command starts Ray (or attaches with `--address`/`RAY_ADDRESS`), deploys the page, prints
its URL and Ray's dashboard URL, and stays in the foreground until Ctrl-C or SIGTERM, then deletes the
app. On a cluster started with `ray start`, `--detach` leaves the page up (Serve apps outlive their
driver there) and `--stop` takes it down. The page only reads the experiment folders.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from balpoe.shell import shell_command
from results.storage import StorePath, location

from .ports import check_port
from .resources import check_cluster_options
from .settings import StudyError, check_object_store, storage_root

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_page_options(host: str, port: int | None, refresh: int, option: str = "--port", host_option: str = "--host",
                       probe: bool = True, ray_dashboard_port: int | None = None) -> None:
    """Before Ray starts: a sane refresh interval and, when the page will be served (`probe`), a usable
    port that nothing else holds, nor the local Ray's dashboard (`ray_dashboard_port`; None when
    attaching to a cluster)."""
    if refresh < 1:
        raise StudyError(f"--refresh: must be >= 1 second (got {refresh})")
    if port is None:  # not served: no port was chosen
        return
    if not 1 <= port <= 65535:
        raise StudyError(f"{option}: must be in 1…65535 (got {port})")
    if not probe:
        return
    if port == ray_dashboard_port:  # said first: true whatever else holds the port now
        raise StudyError(f"{option}: {port} is also the Ray dashboard's port; choose another {option} or "
                         f"--dashboard-port")
    check_port(host, port, option, "another program (or another results page) may hold it", host_option)
    if host not in LOOPBACK:
        print(f"warning: the results page will listen on {host}:{port}; anyone who can reach it can read every "
              f"experiment under the storage path", file=sys.stderr)


def page_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


def deploy(storage_path: str, host: str, port: int, refresh: int, ray_dashboard_url: str | None) -> str:
    """Deploy the page on the connected Ray cluster; returns its URL once it answers."""
    from ray import serve

    from results.app import APP_NAME, REQUEST_TIMEOUT_S, ROUTE_PREFIX, serve_app, wait_until_up
    quiet_serve()
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": REQUEST_TIMEOUT_S})
    serve.run(serve_app(storage_path, refresh, ray_dashboard_url), name=APP_NAME, route_prefix=ROUTE_PREFIX)
    url = page_url(host, port)
    wait_until_up(url)
    return url


def undeploy() -> None:
    """Delete the page; with no other Serve app left on the cluster, stop Serve too (freeing the port)."""
    from ray import serve

    from results.app import APP_NAME
    quiet_serve()
    serve.delete(APP_NAME)
    if not serve.status().applications:
        serve.shutdown()


def quiet_serve() -> None:
    """Serve's INFO lines (deployments, proxies) would bury the command's own few lines."""
    for name in ("ray.serve", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)


def ray_dashboard(context) -> str | None:
    url = getattr(context, "dashboard_url", None)
    return (url if "://" in url else f"http://{url}") if url else None


def wait_for_stop() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass


def run(args: argparse.Namespace) -> int:
    """The `dashboard` command."""
    import ray

    from .local_ray import start_ray
    from .commands import open_experiment
    storage = location(storage_root(args.storage_path))
    if isinstance(storage, StorePath):
        check_object_store(str(storage))
    elif not storage.is_dir():
        raise StudyError(f"--storage-path: {storage} is not a folder of experiments")
    if args.name:
        open_experiment(args.name, str(storage))  # exit 2 for an unknown name, before Ray starts
    if (args.detach or args.stop) and not args.address:
        raise StudyError("--detach/--stop: need --address of a cluster started with `ray start` (a local Ray, "
                         "and its page, end with this command)")
    if not args.stop:
        check_page_options(args.host, args.port, args.refresh,
                           ray_dashboard_port=None if args.address else args.dashboard_port)
    check_cluster_options(args)
    context = start_ray(args)
    try:
        if args.stop:
            undeploy()
            print(f"results page stopped on {args.address}")
            return 0
        url = deploy(str(storage), args.host, args.port, args.refresh, ray_dashboard(context))
        print(f"results page: {url}{'experiments/' + args.name if args.name else ''}  ({storage})")
        if ray_dashboard(context):
            print(f"Ray dashboard: {ray_dashboard(context)}")
        if args.detach:
            stop = shell_command("study.run", "dashboard", options=("--stop", "--address", args.address))
            print(f"left running on the cluster; stop it with:\n  {stop}")
            return 0
        print("Ctrl-C stops the page (the experiment folders are only read)")
        wait_for_stop()
        if args.address:  # a local Ray ends with the command, Serve with it (see driver.run_study)
            undeploy()
        print("results page stopped")
        return 0
    finally:
        ray.shutdown()
