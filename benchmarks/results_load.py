"""How fast a large experiment is read: `results.load_experiment` cold (files parsed) and warm (result
rows from the modification-time cache, tables rebuilt), and what the live results page's replica does
per request — the trials JSON, and the experiment page once its figures are drawn (first view) and
after (later views of an unchanged experiment).

It writes a synthetic experiment of T trials × E epochs: every trial folder holds a `params.json` and a
`result.json` whose rows have the keys and value types of a real BalPoE trial's reports (3 experts),
plus `study.json` — the same files a real study leaves, so the reader does the same work.

    python benchmarks/results_load.py                        # 100 trials × 200 epochs
    python benchmarks/results_load.py --trials 20 --epochs 50 --repeats 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from arguments import at_least  # noqa: E402
from results import load_experiment  # noqa: E402
from results.app import ResultsSite  # noqa: E402
from synthetic_experiments import write_experiment  # noqa: E402



def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3, help="warm reads to time")
    args = parser.parse_args(argv)
    at_least(1, trials=args.trials, epochs=args.epochs, repeats=args.repeats)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "big-search"
        write_experiment(folder, args.trials, args.epochs)
        size_mb = sum(p.stat().st_size for p in folder.rglob("*")) / 2**20
        start = time.perf_counter()
        exp = load_experiment(folder)
        cold = time.perf_counter() - start
        warm = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            load_experiment(folder)
            warm.append(time.perf_counter() - start)
        site = ResultsSite(scratch)
        trials_json = lambda: site.experiment("big-search").sorted_trials().to_json(  # noqa: E731
            orient="records", date_format="iso")
        timed = {"trials JSON": trials_json,
                 "page, first view (draws figures)": lambda: site.experiment_html("big-search")}
        page = {name: _seconds(call) for name, call in timed.items()}
        page["page, later view"] = statistics.median(_seconds(lambda: site.experiment_html("big-search"))
                                                     for _ in range(args.repeats))
    print(f"{args.trials} trials × {args.epochs} epochs ({size_mb:.0f} MB of result files): "
          f"{len(exp.trials)} trial rows, {len(exp.epochs)} epoch rows")
    print(f"cold load {cold:.2f} s, warm load {statistics.median(warm):.2f} s (median of {args.repeats})")
    for name, seconds in page.items():
        print(f"results page: {name} {seconds:.2f} s")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
