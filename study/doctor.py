"""`python -m study.run doctor`: check, before a long run, what a study needs.

A study fails late and expensively when a package, the data set, the storage folder or Ray is
missing, so each is tried here in seconds. One aligned row per check (ok / warn / FAIL), each failure
with the command or action that fixes it; the exit code is 1 when any check fails.
"""
from __future__ import annotations

import argparse
import importlib
import platform
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from balpoe.cli import parse_path
from balpoe.datasets import DATASET_NAMES, REGISTRY
from balpoe.files import writable_folder_problem

from results.storage import is_uri

PACKAGES = ("torch", "torchvision", "ray", "optuna", "pandas", "numpy")
INSTALL_FIX = "pip install -e . in this Python (for .venv: delete it and run bash scripts/run.sh again)"
DASHBOARD_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 30.0
NAME_WIDTH = max(len(f"data {d}") for d in DATASET_NAMES)  # fixed, so rows align while they are printed


def ray_cli() -> str:
    """The `ray` command of this Python: scripts/run.sh runs doctor from .venv, which is not on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else "ray"


def leftover_ray_fix() -> str:
    return (f"if no study runs here, a Ray left over from a killed one may block the start: "
            f"{ray_cli()} stop --force, then re-run doctor")


@dataclass
class Check:
    name: str
    status: str       # "ok", "warn" or "FAIL"
    detail: str
    fix: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", choices=DATASET_NAMES, help="data set the study will use: its absence fails "
                        "the check (default: every data set is looked at, and an absent one is only a warning)")
    parser.add_argument("--data-dir", type=parse_path, default="./data",
                        help="folder that holds (or will hold) the data set")
    parser.add_argument("--storage-path", type=parse_path, default="./runs",
                        help="where studies write their results")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to connect to (default: start a local Ray and stop it again)")
    parser.add_argument("--skip-ray", action="store_true", help="skip the Ray checks (the slow ones)")


# --- checks ----------------------------------------------------------------------------------------
def check_packages() -> list[Check]:
    """Import each package the trials need: a worker that cannot import one fails every trial."""
    checks = [Check("python", "ok", platform.python_version())]
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            checks.append(Check(name, "FAIL", f"not importable ({err})", INSTALL_FIX))
            continue
        checks.append(Check(name, "ok", getattr(module, "__version__", "installed")))
    try:  # the same import Ray uses to decide whether it can start the dashboard
        importlib.import_module("ray.dashboard.optional_deps")
        checks.append(Check("ray[default]", "ok", "dashboard dependencies importable"))
    except ImportError as err:
        checks.append(Check("ray[default]", "FAIL", f"dashboard dependencies missing ({err})",
                            f"{INSTALL_FIX} (it installs ray[default])"))
    return checks


def check_gpus() -> Check:
    """GPUs torch sees on this machine; none is normal on CPU machines, where trials are slow."""
    import torch
    count = torch.cuda.device_count()
    if count == 0:
        return Check("torch GPUs", "warn", "0 (trials run on CPU)")
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    return Check("torch GPUs", "ok", f"{count}: {names}")


def check_data(dataset: str, data_dir: str, required: bool = True) -> Check:
    """Whether the data set is already on disk; never downloads (that is the trainer's job). An absent
    one fails only when it is the one the user is about to run (`--dataset`)."""
    info, name = REGISTRY[dataset], f"data {dataset}"
    if dataset == "synthetic-lt":
        return Check(name, "ok", "generated in memory")
    folder = info.location(Path(data_dir)).resolve()
    missing = info.missing(Path(data_dir))
    if missing and not required:
        return Check(name, "warn", f"absent: {folder} lacks {', '.join(missing)}; "
                     f"`doctor --dataset {dataset}` before a study on it", info.fix)
    if missing:
        return Check(name, "FAIL", f"absent: {folder} lacks {', '.join(missing)}", info.fix)
    if info.canonical and not info.canonical(Path(data_dir)):
        return Check(name, "warn", f"present in {folder}, but not the official files (MD5 differs)")
    return Check(name, "ok", f"present{' and intact' if info.canonical else ''} in {folder}")


def check_storage(storage_path: str) -> Check:
    """Write and delete a probe file: a study that cannot save checkpoints loses its work."""
    name = "storage path"
    if is_uri(storage_path):
        from .object_store import store_problem
        problem = store_problem(storage_path)
        if problem:
            return Check(name, "FAIL", problem, "see docs/clusters.md, \"KubeRay (or cloud VMs) with an S3 bucket\"")
        return Check(name, "ok", f"{storage_path} writable (an object store: a test object written, read, removed)")
    folder = Path(storage_path).resolve()
    problem = writable_folder_problem(folder)
    if problem:
        return Check(name, "FAIL", problem, "choose a writable --storage-path, or fix the folder's owner/permissions")
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # the probe leaves no new folder
    free_gb = shutil.disk_usage(existing).free / 1e9
    return Check(name, "ok", f"{folder} writable, {free_gb:.1f} GB free")


def check_ray(address: str | None) -> list[Check]:
    """Start (or join) Ray, see its GPUs and ask its dashboard, timing each; always shut Ray down."""
    import ray
    from .attach import connect, probe_address
    from .local_ray import init_local_ray
    start = time.monotonic()
    try:
        if address:
            probe_address(address, CONNECT_TIMEOUT_S)
            context = connect(address, CONNECT_TIMEOUT_S, logging_level="WARNING")
        else:
            context = init_local_ray(num_cpus=1, logging_level="WARNING")  # a new one, never an existing one
    except Exception as err:  # Ray fails in many ways (ConnectionError, RuntimeError, timeouts)
        fix = (f"check the cluster is up: {ray_cli()} status --address {address}" if address
               else f"see /tmp/ray/session_latest/logs; {leftover_ray_fix()}")
        return [Check("ray start", "FAIL", f"{type(err).__name__}: {err}", fix)]
    try:
        where = f"joined {address}" if address else "started a local Ray"
        checks = [Check("ray start", "ok", f"{where} in {time.monotonic() - start:.1f} s")]
        start = time.monotonic()
        gpus = ray.cluster_resources().get("GPU", 0)
        took = f"({time.monotonic() - start:.1f} s)"
        checks.append(Check("ray GPUs", "ok" if gpus else "warn",
                            f"{gpus:g} {took}" if gpus else f"0, trials run on CPU {took}"))
        checks.append(check_dashboard(context.dashboard_url))
        return checks
    finally:
        ray.shutdown()


def check_dashboard(url: str | None) -> Check:
    """The dashboard is how a user watches a long study; its page answers even with token auth on
    (only its API wants the token), so any status below 500 means it is up."""
    name = "ray dashboard"
    if not url:
        return Check(name, "FAIL", "Ray started without a dashboard", f"{INSTALL_FIX} (it installs ray[default])")
    if "://" not in url:
        url = "http://" + url
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the dashboard is reached directly
    start = time.monotonic()
    while True:  # the dashboard's HTTP server may come up a moment after ray.init returns
        try:
            with opener.open(url, timeout=3) as response:
                status = response.status
            break
        except urllib.error.HTTPError as err:
            status = err.code
            break
        except OSError as err:
            if time.monotonic() - start > DASHBOARD_WAIT_S:
                return Check(name, "FAIL", f"{url} does not answer ({err})",
                             f"see /tmp/ray/session_latest/logs/dashboard.log; {leftover_ray_fix()}")
            time.sleep(0.5)
    took = f"({time.monotonic() - start:.1f} s)"
    if status >= 500:
        return Check(name, "FAIL", f"{url} answers HTTP {status} {took}",
                     "see /tmp/ray/session_latest/logs/dashboard.log")
    return Check(name, "ok", f"{url} answers HTTP {status} {took}")


# --- running and reporting --------------------------------------------------------------------------
def _guarded(name: str, check, *args) -> list[Check]:
    """One check that raises (a package missing, an unreadable folder) becomes a FAIL row, so the
    remaining checks still run and report."""
    try:
        result = check(*args)
    except Exception as err:
        fix = INSTALL_FIX if isinstance(err, ImportError) else "fix the error shown and re-run doctor"
        return [Check(name, "FAIL", f"{type(err).__name__}: {err}", fix)]
    return result if isinstance(result, list) else [result]


def print_check(check: Check) -> None:
    print(f"{check.status:<4}  {check.name:<{NAME_WIDTH}}  {check.detail}", flush=True)
    if check.fix:
        print(f"{'':<4}  {'':<{NAME_WIDTH}}  fix: {check.fix}")


def run(args: argparse.Namespace) -> int:
    datasets = [args.dataset] if args.dataset else DATASET_NAMES
    steps = [("packages", check_packages), ("torch GPUs", check_gpus),
             *[(f"data {name}", check_data, name, args.data_dir, bool(args.dataset)) for name in datasets],
             ("storage path", check_storage, args.storage_path)]
    if not args.skip_ray:
        steps.append(("ray start", check_ray, args.address))
    failed = 0
    for step in steps:  # print as each finishes: the Ray checks take seconds
        for check in _guarded(*step):
            print_check(check)
            failed += check.status == "FAIL"
    print("all checks passed" if not failed else
          f"{failed} check{'s' if failed > 1 else ''} failed: fix them before a long run")
    return 1 if failed else 0
