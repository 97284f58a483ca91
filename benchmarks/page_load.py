"""The live results page under load: latency (p50/p99) and errors of C concurrent requests per route.

It writes a storage folder of synthetic experiments (the files a real study leaves: `study.json`, and
per trial `params.json` and a `result.json` whose rows have the keys and value types of a BalPoE
trial's reports), serves the page's FastAPI app (`results.app.build_app`) with uvicorn on 127.0.0.1 in
a child process — the app that Ray Serve's replica runs, without Serve's proxy in front; with `--serve`,
the page as users get it, `python -m study.run dashboard` (a local Ray, Serve's proxy and the page's
one replica with its cap on requests at once) — and fires C
concurrent GET requests at each route in turn: the index (`/`), its JSON (`/api/experiments`), the
largest experiment's page and its trials JSON. Every request is bounded by --timeout; one untimed
request per route first ("first": what the first visitor after a change waits). `--damaged N` adds N
experiments the page cannot read in full (a `study.json` that is no JSON; every second one a trial
whose `result.json` is a folder), as a real storage path may hold.

    python benchmarks/page_load.py                     # --size big: a 200 MB experiment among 4 small ones
    python benchmarks/page_load.py --size smoke --damaged 1 --serve   # a smoke baseline beside a damaged one, on Serve
    python benchmarks/page_load.py --size tiny --concurrency 20
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from arguments import refuse  # noqa: E402
from synthetic_experiments import write_experiment  # noqa: E402

# size: (the largest experiment: name, kind, trials × epochs; number of other experiments, their trials × epochs)
SIZES = {"tiny": (("search-large", "search", 3, 3), 1, (2, 3)),
         "smoke": (("baseline-smoke", "baseline", 3, 2), 0, (0, 0)),  # what `study.run` with no arguments leaves
         "medium": (("search-large", "search", 40, 100), 4, (10, 20)),
         "big": (("search-large", "search", 300, 360), 4, (10, 20))}
SETTLE_S = 900  # at most this long for the first reading of the storage


def write_storage(root: Path, size: str, damaged: int = 0) -> float:
    """The experiments of a size preset under `root`, and `damaged` damaged ones; returns their size in MB."""
    (largest, kind, trials, epochs), others, (other_trials, other_epochs) = SIZES[size]
    write_experiment(root / largest, trials, epochs, last_running=True, kind=kind)
    for number in range(others):
        write_experiment(root / f"search-{number}", other_trials, other_epochs, seed=number + 1)
    for number in range(damaged):
        folder = root / f"damaged-{number}"
        write_experiment(folder, 2, 2, seed=100 + number)
        if number % 2 == 0:  # the experiment cannot be read: its row and page say why
            (folder / "study.json").write_text('{"kind": "search", "name": ')
        else:  # one trial's record cannot be read: its page warns, the other trial shows
            (folder / "trial_00000000" / "result.json").unlink()
            (folder / "trial_00000000" / "result.json").mkdir()
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def serve(storage: str, port: int) -> None:
    """The page on 127.0.0.1:port (run in a child process, as a Serve replica is)."""
    import uvicorn

    from results.app import ResultsSite, build_app
    uvicorn.run(build_app(ResultsSite(storage)), host="127.0.0.1", port=port, log_level="warning")


class Page:
    """The page on 127.0.0.1, until `stop()`: the app alone in a child process, or (`on_serve`) the
    `dashboard` command, which deploys it on a local Ray Serve and takes it down on SIGTERM."""

    def __init__(self, storage: Path, on_serve: bool, log: Path):
        self.port = free_port()
        if on_serve:
            command = [sys.executable, "-m", "study.run", "dashboard", "--storage-path", str(storage),
                       "--port", str(self.port), "--dashboard-port", str(free_port())]
            with open(log, "w") as output:
                self.process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
                                                env={**os.environ, "PYTHONPATH": str(ROOT)})  # this checkout's page
            self.alive = lambda: self.process.poll() is None
        else:
            self.process = multiprocessing.get_context("spawn").Process(target=serve, args=(str(storage), self.port),
                                                                        daemon=True)
            self.process.start()
            self.alive = self.process.is_alive
        self.base, self.log = f"http://127.0.0.1:{self.port}", log

    def stop(self) -> None:
        if isinstance(self.process, subprocess.Popen):
            self.process.send_signal(signal.SIGTERM)  # the command deletes the app and stops its Ray
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            return
        self.process.terminate()
        self.process.join(timeout=30)
        if self.process.is_alive():  # still busy with a request: stop it for good
            self.process.kill()
            self.process.join()


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


def wait_until_up(url: str, page: Page, timeout_s: float = 180.0) -> None:
    """Until the page answers at all (any HTTP status); a local Ray takes a while to start."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and page.alive():
        try:
            with opener.open(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    said = page.log.read_text(errors="replace").strip().splitlines()[-5:] if page.log.exists() else []
    raise SystemExit("\n".join([f"error: the page did not come up within {timeout_s:.0f} s", *said]))


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
    if not 0 <= args.damaged <= 1000:
        refuse("--damaged", "must be in 0…1000", args.damaged)
    if not 0 <= args.report_every <= 3600:
        refuse("--report-every", "must be in [0, 3600] seconds; 0 for files that do not change", args.report_every)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=SIZES, default="big",
                        help="tiny, smoke (a 3-trial baseline alone; seconds), medium, big (a ~200 MB experiment; "
                             "minutes to write) (default big)")
    parser.add_argument("--damaged", type=int, default=0,
                        help="damaged experiments beside them (a study.json that is no JSON, a trial's result.json "
                             "that is a folder) (default 0)")
    parser.add_argument("--serve", action="store_true",
                        help="serve the page with `python -m study.run dashboard` (a local Ray Serve) rather than "
                             "its app alone")
    parser.add_argument("--concurrency", type=int, default=200, help="requests at once per route (default 200)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one request may take (default 120)")
    parser.add_argument("--report-every", type=float, default=10.0,
                        help="seconds between the epochs a running trial of the largest experiment reports during "
                             "the requests; 0: the files do not change (default 10)")
    args = parser.parse_args(argv)
    check(args)
    with tempfile.TemporaryDirectory() as scratch:
        storage = Path(scratch) / "runs"
        size_mb = write_storage(storage, args.size, args.damaged)
        largest = SIZES[args.size][0][0]
        page = Page(storage, args.serve, Path(scratch) / "page.log")
        try:
            base = page.base
            wait_until_up(base + "/api/experiments/nope/trials", page)  # a 404: up, nothing read yet
            experiments = len(list(storage.iterdir()))
            print(f"{experiments} experiments ({args.damaged} damaged), {size_mb:.0f} MB of result files; "
                  f"{'Ray Serve' if args.serve else 'the app alone'}; {args.concurrency} concurrent "
                  f"requests per route, {args.timeout:g} s timeout; a running trial reports "
                  + (f"every {args.report_every:g} s" if args.report_every else "nothing"))
            print(f"first reading of every experiment: {settle(base + '/api/experiments', SETTLE_S):.1f} s")
            print(f"{'route':<40} {'first_s':>8} {'ok':>5} {'errors':>6} {'p50_s':>7} {'p99_s':>7} {'max_s':>7}")
            running_trial = sorted((storage / largest).glob("trial_*"))[-1]  # the one still running
            for route in ("/", "/api/experiments", f"/experiments/{largest}", f"/api/experiments/{largest}/trials"):
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
            page.stop()
    print(f"page process peak memory {peak_child_mb():.0f} MB")


if __name__ == "__main__":
    main()
