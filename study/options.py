"""The command line of `python -m study.run`: every command and option, declared once.

Imports nothing heavy (no torch, Ray or pandas), so `--help` and every input check stay fast; the
commands import what they need when they run.
"""
from __future__ import annotations

import argparse
import os

from balpoe.cli import (SPLITS, HelpFormatter, Parser, add_recipe_options, parse_float, parse_int,
                        parse_path)
from results.settings import known_mode
from search_spaces import SPACE_NAMES

from .ports import DEFAULT_DASHBOARD_PORT
from .settings import PRESETS, StudySettings
from .trackers import tracker_option

DEFAULT_STORAGE = "./runs"
DEFAULT_PAGE_PORT = 8000  # Ray Serve's own default
DESCRIPTION = ("BalPoE studies on Ray Tune: baseline, search, resume, show, report, export, export-tracker, "
               "dashboard, doctor.")


def objective(text: str) -> tuple[str, str]:
    """METRIC:MODE; a metric without a mode takes the direction in which it improves (val_ece: min), and one
    whose direction is unknown needs its mode."""
    metric, colon, mode = text.partition(":")
    if colon:
        return metric, mode
    if known_mode(metric) is None:
        raise argparse.ArgumentTypeError(f"{metric!r} has no known direction; give {metric}:max or {metric}:min")
    return metric, known_mode(metric)


def experiment(text: str) -> str:
    """An experiment's name (a folder under --storage-path) or, with a '/' or a leading '~', its path."""
    if not text:
        raise argparse.ArgumentTypeError("name an experiment, or its folder (got '')")
    return parse_path(text) if "/" in text or text.startswith("~") else text


def value_range(text: str) -> tuple[str, tuple[float, float]]:
    name, _, bounds = text.partition("=")
    low, _, high = bounds.partition(":")
    try:
        return name, (float(low), float(high))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=LOW:HIGH, e.g. mixup_alpha=0:0.8") from None


def add_experiment_argument(parser: argparse.ArgumentParser, nargs: str | None = None, help: str | None = None) -> None:
    parser.add_argument("name", nargs=nargs, type=experiment, metavar="NAME",
                        help=help or "experiment name (a folder under --storage-path) or its path")
    parser.add_argument("--storage-path", type=parse_path, default=DEFAULT_STORAGE,
                        help="where the experiment folders are")


def add_page_options(group, prefix: str = "") -> None:
    """--host/--port (the dashboard command) or --results-host/--results-port (studies)."""
    group.add_argument(f"--{prefix}host", default="127.0.0.1",
                       help="interface the results page listens on (127.0.0.1: this machine only)")
    group.add_argument(f"--{prefix}port", type=parse_int,
                       help=f"port of the results page (default: {DEFAULT_PAGE_PORT}, Ray Serve's, or the next free "
                            f"one; a port given here must be free)")
    group.add_argument("--refresh", type=parse_int, default=15, help="seconds between the page's own reloads")


def add_cluster_options(group, study: bool = True) -> None:
    """Where Ray runs: attach with --address, or start a local Ray (loopback only). `study` adds the
    options only a study's local Ray takes."""
    group.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                       help="attach to a running Ray cluster (e.g. auto); default: start a local one")
    group.add_argument("--dashboard-host", default="127.0.0.1",
                       help="interface for the Ray dashboard of a local cluster")
    group.add_argument("--dashboard-port", type=parse_int,
                       help=f"port of a local Ray's dashboard (default: {DEFAULT_DASHBOARD_PORT}, or the next free "
                            f"one; a port given here must be free)")
    group.add_argument("--connect-timeout", type=parse_float, default=30.0,
                       help="seconds to wait for the cluster at --address to answer")
    group.add_argument("--num-cpus", type=parse_int, help="CPUs a local Ray may use (default: all)")
    if study:
        group.add_argument("--num-gpus", type=parse_int, help="GPUs a local Ray declares (default: those present)")
        group.add_argument("--progress-interval", type=parse_float, default=15.0, help="seconds between progress lines")
        group.add_argument("--serve-results", action="store_true",
                           help="serve the live results page (Ray Serve, no CPU reserved) while the study runs")
        add_page_options(group, prefix="results-")


def add_log_to_option(group, resume: bool = False) -> None:
    group.add_argument("--log-to", type=tracker_option, action="append", default=[], metavar="TRACKER",
                       help="also send every trial to an experiment tracker: mlflow[=TRACKING_URI] (default "
                            "MLFLOW_TRACKING_URI, else ./mlflow.db) or wandb[=PROJECT] (WANDB_MODE=offline works "
                            "without an account); repeatable" +
                            ("; added to the study's own for this run (on a complete study: sends its files)"
                             if resume else ""))


def add_study_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("study")
    group.add_argument("--name", help="experiment name (default: baseline / search-<space>, plus -<preset> for "
                       "presets other than paper)")
    group.add_argument("--storage-path", type=parse_path, default=DEFAULT_STORAGE,
                       help="where experiment folders go (on a multi-node cluster a path every node sees)")
    group.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                       help="paper: the canonical recipe; smoke: seconds on a laptop CPU (generated data); "
                            "fmnist: 10 epochs of offline Fashion-MNIST-LT")
    group.add_argument("-c", "--config", type=parse_path,
                       help="a balpoe config file (ours or official JSON) as the base")
    group.add_argument("--cpus-per-trial", type=parse_float, help="CPUs per trial (default: share the CPUs)")
    group.add_argument("--gpus-per-trial", type=parse_float,
                       help="GPUs per trial: 1, or a fraction (0.25 packs 4 trials on a GPU), or 0 for CPU-only "
                            "trials (default: 1 when GPUs exist)")
    group.add_argument("--max-concurrent", type=parse_int, help="at most this many trials at once")
    group.add_argument("--checkpoint-every", type=parse_int, default=10,
                       help="checkpoint every N epochs (and at the end)")
    group.add_argument("--keep-checkpoints", type=parse_int, default=2, help="checkpoints kept per trial")
    group.add_argument("--max-failures", type=parse_int, default=2,
                       help="retries of a crashed trial, from its checkpoint")
    group.add_argument("--min-free-mb", type=parse_float, default=StudySettings.model_fields["min_free_mb"].default,
                       help="stop the study cleanly (resumable) when less disk than this is free under --storage-path")
    add_log_to_option(group)
    add_cluster_options(group)
    add_recipe_options(parser, skip=("seed", "save_dir", "save_period"))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m study.run", description=DESCRIPTION, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, formatter_class=HelpFormatter, help=help, description=description)

    baseline = command("baseline", "the canonical recipe as one trial per seed",
                       "Run the BalPoE recipe (or a preset/config) as one Tune trial per seed.")
    baseline.add_argument("--seeds", type=parse_int, nargs="+", default=[1], help="one trial per seed")
    add_study_options(baseline)

    search = command("search", "Optuna search with ASHA early stopping",
                     "Search a space with Optuna (TPE, seeded with the paper's point) and ASHA on the epoch. "
                     "Objectives are validation metrics, never test metrics.")
    search.add_argument("--space", default="alpha_tau", help=f"search space: {', '.join(SPACE_NAMES)}")
    search.add_argument("--range", type=value_range, action="append", default=[], metavar="NAME=LOW:HIGH",
                        help="override a parameter's range, e.g. mixup_alpha=0:0.8")
    search.add_argument("--num-samples", type=parse_int, default=16, help="trials to sample")
    search.add_argument("--objectives", type=objective, nargs="+", default=[("val_balanced_acc", "max")],
                        metavar="METRIC[:MODE]", help="one objective, or several for a Pareto search "
                        "(default val_balanced_acc:max; ASHA uses the first); MODE is max or min, by default the "
                        "direction the metric improves in (max for accuracies; min for loss, NLL, ECE, MCE)")
    search.add_argument("--sampler-seed", type=parse_int, default=0, help="seed of Optuna's TPE sampler")
    search.add_argument("--seed", "-s", dest="seed", type=parse_int, default=1, help="training seed of every trial")
    search.add_argument("--grace-period", type=parse_int, help="first ASHA rung in epochs (default: just after the "
                        "first LR step, 165 of 200)")
    search.add_argument("--fidelity", choices=["trunk", "cooldown"], default="trunk",
                        help="what ASHA ranks at a rung before the first LR step: the trunk's score as it is "
                        "(trunk), or the score after a short cool-down forked from the trial's state (cooldown; "
                        "the first rung then defaults to a tenth of the schedule)")
    search.add_argument("--cooldown-fraction", type=parse_float, help="cool-down epochs per rung epoch "
                        "(default: the recipe's own, (epochs - step1) / step1 = 0.25)")
    search.add_argument("--reduction-factor", type=parse_int, default=2, help="ASHA keeps 1/N at each rung")
    search.add_argument("--max-t", type=parse_int, help="stop every trial at this epoch of the recipe's schedule, "
                        "with its end-of-training test evaluation; ASHA's last rung (default: the last epoch)")
    search.add_argument("--startup-trials", type=parse_int, help="TPE's random trials before it models the results "
                        "(default: a fifth of --num-samples, 2…10)")
    search.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    search.add_argument("--optuna-storage", metavar="URL",
                        help="keep Optuna's record in this database instead of optuna.db in the experiment folder: "
                             "postgresql://USER@HOST:5432/DB, any SQLAlchemy URL, or journal:///PATH for a journal "
                             "file; one Optuna study per experiment name (see docs/clusters.md)")
    add_study_options(search)

    resume = command("resume", "continue an interrupted experiment",
                     "Continue an interrupted or failed experiment: unfinished and errored trials resume from "
                     "their checkpoints; finished trials are not re-run.")
    add_experiment_argument(resume)
    add_log_to_option(resume, resume=True)
    add_cluster_options(resume.add_argument_group("cluster"))

    show = command("show", "the trials table of an experiment, best first",
                   "Print an experiment's trials, sorted by the (first) objective. Reads the files only: works "
                   "while the study runs, after a crash, without Ray.")
    add_experiment_argument(show)
    show.add_argument("--top", type=parse_int, help="show the best N trials only")
    show.add_argument("--columns", nargs="+", metavar="COLUMN", help="columns to show (default: status, key "
                      "config, objectives, test results); --list-columns names them all")
    show.add_argument("--list-columns", action="store_true", help="list the trials table's columns and exit")

    report = command("report", "tables, figures and an HTML page of an experiment",
                     "Write NAME/report/: index.html (offline), PNG figures and every table as CSV, Parquet and "
                     "Markdown. Reads the files only: works while the study runs.")
    add_experiment_argument(report)
    report.add_argument("--baseline", type=experiment, help="a seeded baseline experiment (name or path) to compare "
                        "every configuration with, against its seed noise")
    report.add_argument("--output", type=parse_path, help="report folder (default: the experiment's report/)")

    export = command("export", "per-expert logits of a trial, for downstream stages",
                     "Export a trial's per-expert logits from its last checkpoint, in `python -m balpoe "
                     "export-logits` layout (<split>.npz + manifest.json).")
    add_experiment_argument(export)
    export.add_argument("--trial", default="best", help="a trial id, or best: the finished trial best on the "
                        "(first) objective")
    export.add_argument("--output", type=parse_path, help="export folder (default: <experiment>/exports/trial_<id>)")
    export.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to export")
    export.add_argument("--data-dir", type=parse_path,
                        help="where the data set is on this machine, if not where the trial read it")
    export.add_argument("--device", help="auto, cpu, cuda, cuda:N")

    export_tracker = command("export-tracker", "send an experiment's trials to MLflow or W&B, from its files",
                             "Send every trial of an experiment (finished or not) to an experiment tracker as the runs "
                             "`--log-to` makes live, read from the experiment folder alone (no Ray). A trial's run "
                             "already there is replaced.")
    add_experiment_argument(export_tracker)
    export_tracker.add_argument("--to", type=tracker_option, action="append", required=True, metavar="TRACKER",
                                help="mlflow[=TRACKING_URI] or wandb[=PROJECT]; repeatable")

    page = command("dashboard", "the live results page of every experiment, on Ray Serve",
                   "Serve the results page (experiments under --storage-path: trials, figures, statistics, "
                   "running trials with ETAs) with Ray Serve until Ctrl-C. JSON tables under /api/experiments. "
                   "Read-only.")
    add_experiment_argument(page, nargs="?", help="open on this experiment (default: the index of all)")
    group = page.add_argument_group("page")
    add_page_options(group)
    group.add_argument("--detach", action="store_true",
                       help="leave the page up on a cluster started with `ray start` (needs --address)")
    group.add_argument("--stop", action="store_true", help="take down a page left up with --detach (needs --address)")
    add_cluster_options(page.add_argument_group("cluster"), study=False)

    doctor = command("doctor", "check that a study can run here",
                     "Check packages, GPUs, the data set, the storage path, Ray and its dashboard.")
    from .doctor import add_arguments as add_doctor_arguments
    add_doctor_arguments(doctor)
    return parser
