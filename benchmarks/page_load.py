"""The live results page under load: latency (p50/p99) and errors of C concurrent requests per route.

It writes a storage folder of synthetic experiments (the files a real study leaves: `study.json`, and
per trial `params.json` and a `result.json` whose rows have the keys and value types of a BalPoE
trial's reports), serves the page's FastAPI app (`results.app.build_app`) with uvicorn on 127.0.0.1 in
a child process — the app that Ray Serve's replica runs, without Serve's proxy in front — and fires C
concurrent GET requests at each route in turn: the index (`/`), its JSON (`/api/experiments`), the
largest experiment's page and its trials JSON. Every request is bounded by --timeout; one untimed
request per route first ("first": what the first visitor after a change waits).

    python benchmarks/page_load.py                     # --size big: a 200 MB experiment among 4 small ones
    python benchmarks/page_load.py --size tiny --concurrency 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import refuse  # noqa: E402
from synthetic_experiments import write_experiment  # noqa: E402

# size: (trials × epochs of the largest experiment, number of other experiments, their trials × epochs)
SIZES = {"tiny": ((3, 3), 1, (2, 3)), "medium": ((40, 100), 4, (10, 20)), "big": ((300, 360), 4, (10, 20))}
LARGEST = "search-large"
SETTLE_S = 900  # at most this long for the first reading of the storage


def write_storage(root: Path, size: str) -> float:
    """The experiments of a size preset under `root`; returns their size in MB."""
    (trials, epochs), others, (other_trials, other_epochs) = SIZES[size]
    write_experiment(root / LARGEST, trials, epochs, last_running=True)
    for number in range(others):
        write_experiment(root / f"search-{number}", other_trials, other_epochs, seed=number + 1)
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def serve(storage: str, port: int) -> None:
    """The page on 127.0.0.1:port (run in a child process, as a Serve replica is)."""
    import uvicorn

    from results.app import ResultsSite, build_app
    uvicorn.run(build_app(ResultsSite(storage)), host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def fetch(session, url: str, timeout_s: float) -> tuple[float, str]:
    """(seconds, "" or what went wrong) of one GET."""
    import aiohttp
    start = time.perf_counter()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
            await response.read()
            problem = "" if response.status == 200 else f"HTTP {response.status}"
    except asyncio.TimeoutError:
        problem = "timeout"
    except Exception as err:  # a refused or reset connection counts as an error of the page, not of the benchmark
        problem = type(err).__name__
    return time.perf_counter() - start, problem


async def burst(url: str, concurrency: int, timeout_s: float, running_trial: Path | None,
                report_every_s: float) -> tuple[tuple[float, str], list[tuple[float, str]]]:
    """One request alone (the first), then `concurrency` requests at once, while the running trial
    reports an epoch every `report_every_s` seconds (as during a study)."""
    import aiohttp
    reporter = asyncio.create_task(report_epochs(running_trial, report_every_s)) if report_every_s else None
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
            first = await fetch(session, url, timeout_s)
            answers = await asyncio.gather(*(fetch(session, url, timeout_s) for _ in range(concurrency)))
    finally:
        if reporter is not None:
            reporter.cancel()
    return first, answers


async def report_epochs(trial: Path, every_s: float) -> None:
    """Append the next epoch's row to the trial's result.json, right away and then every `every_s`."""
    while True:
        result = trial / "result.json"
        last = json.loads(result.read_text().splitlines()[-1])
        epoch = last["epoch"] + 1
        with open(result, "a") as handle:
            handle.write(json.dumps({**last, "epoch": epoch, "training_iteration": epoch}) + "\n")
        await asyncio.sleep(every_s)


def settle(url: str, timeout_s: float) -> float:
    """Seconds until the index lists every experiment read (the page reads each one once at first)."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        try:
            with opener.open(url, timeout=timeout_s) as response:
                rows = json.loads(response.read())
            if not any(str(row.get("note") or "").startswith("being read") for row in rows):
                break
        except OSError:
            pass
        time.sleep(0.5)
    return time.perf_counter() - start


def wait_until_up(url: str, child: multiprocessing.Process, timeout_s: float = 60.0) -> None:
    """Until the page answers at all (any HTTP status)."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and child.is_alive():
        try:
            with opener.open(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"error: the page did not come up within {timeout_s:.0f} s")


def peak_child_mb() -> float:
    """The largest resident size of the child processes waited for (the page's), in MB."""
    import resource
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def check(args: argparse.Namespace) -> None:
    """Bad values are answered like the study CLIs answer them: one line, exit 2."""
    if not 1 <= args.concurrency <= 10_000:
        refuse("--concurrency", "must be in 1…10000", args.concurrency)
    if not 0 < args.timeout <= 3600:
        refuse("--timeout", "must be in (0, 3600] seconds", args.timeout)
    if not 0 <= args.report_every <= 3600:
        refuse("--report-every", "must be in [0, 3600] seconds; 0 for files that do not change", args.report_every)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="big",
                        help="tiny (seconds), medium, big (a ~200 MB experiment; minutes to write) (default big)")
    parser.add_argument("--concurrency", type=int, default=200, help="requests at once per route (default 200)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take (default 120)")
    parser.add_argument("--report-every", type=float, default=10.0,
                        help="seconds between the epochs a running trial of the largest experiment reports during "
                             "the requests; 0: the files do not change (default 10)")
    args = parser.parse_args(argv)
    check(args)
    with tempfile.TemporaryDirectory() as scratch:
        storage = Path(scratch)
        size_mb = write_storage(storage, args.size)
        port = free_port()
        child = multiprocessing.get_context("spawn").Process(target=serve, args=(str(storage), port), daemon=True)
        child.start()
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base + "/api/experiments/nope/trials", child)  # a 404: up, nothing read yet
            experiments = len(list(storage.iterdir()))
            print(f"{experiments} experiments, {size_mb:.0f} MB of result files; {args.concurrency} concurrent "
                  f"requests per route, {args.timeout:g} s timeout; a running trial reports "
                  + (f"every {args.report_every:g} s" if args.report_every else "nothing"))
            print(f"first reading of every experiment: {settle(base + '/api/experiments', SETTLE_S):.1f} s")
            print(f"{'route':<40} {'first_s':>8} {'ok':>5} {'errors':>6} {'p50_s':>7} {'p99_s':>7} {'max_s':>7}")
            running_trial = sorted((storage / LARGEST).glob("trial_*"))[-1]  # the one still running
            for route in ("/", "/api/experiments", f"/experiments/{LARGEST}", f"/api/experiments/{LARGEST}/trials"):
                (first, first_problem), answers = asyncio.run(burst(base + route, args.concurrency, args.timeout,
                                                                    running_trial, args.report_every))
                seconds = [s for s, problem in answers if not problem]
                problems = [problem for _, problem in answers if problem]
                kinds = ", ".join([f"{problems.count(p)} {p}" for p in sorted(set(problems))]
                                  + ([f"first: {first_problem}"] if first_problem else []))
                print(f"{route:<40} {first:8.2f} {len(seconds):5d} {len(problems):6d} {percentile(seconds, 50):7.2f} "
                      f"{percentile(seconds, 99):7.2f} {max(seconds, default=float('nan')):7.2f}"
                      + (f"  ({kinds})" if kinds else ""))
        finally:
            child.terminate()
            child.join(timeout=30)
            if child.is_alive():  # still busy with a request: stop it for good
                child.kill()
                child.join()
    print(f"page process peak memory {peak_child_mb():.0f} MB")


if __name__ == "__main__":
    main()
