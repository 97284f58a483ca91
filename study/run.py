"""`python -m study.run` — BalPoE studies on Ray Tune: baseline, search, resume, show, report, dashboard, doctor.

Every input is checked before Ray starts; the experiment folder holds Tune's results, `study.json`
(the resolved settings) and, for searches, the Optuna study (`optuna.db`).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from pathlib import Path

from balpoe.cli import SPLITS, HelpFormatter, add_recipe_options, check_output_folder, recipe_overrides
from balpoe.config import Config, ConfigError, load_file
from balpoe.datasets import DataError
from balpoe.files import writable_folder_problem
from search_spaces import SPACE_NAMES, SpaceError

from . import dashboard
from .cluster import check_cluster_options
from .lock import LOCK_FILE, StudyLock
from .settings import SETTINGS_FILE, StudyError, StudySettings, is_uri, versions

PRESETS = {
    "paper": {},
    "smoke": {"dataset": "synthetic-lt", "imb_factor": 0.1, "epochs": 2, "warmup_epochs": 1, "step1": 1,
              "step2": 2, "batch_size": 16, "save_period": 1},  # batch 16: epoch 1 already ranks trials, for ASHA
    "fmnist": {"dataset": "fashion-mnist-lt", "epochs": 10},
}


def objective(text: str) -> list[str]:
    metric, _, mode = text.partition(":")
    return [metric, mode or "max"]


def distinct_ranges(ranges: list[tuple[str, tuple[float, float]]]) -> dict:
    names = [name for name, _ in ranges]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StudyError(f"--range: {', '.join(repeated)} given more than once; give each parameter one range")
    return dict(ranges)


def value_range(text: str) -> tuple[str, tuple[float, float]]:
    name, _, bounds = text.partition("=")
    low, _, high = bounds.partition(":")
    try:
        return name, (float(low), float(high))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=LOW:HIGH, e.g. mixup_alpha=0:0.8") from None


def add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("study")
    group.add_argument("--name", help="experiment name (default: baseline / search-<space>, plus -<preset> for "
                       "presets other than paper)")
    group.add_argument("--storage-path", default="./runs", help="where experiment folders go (default ./runs; "
                       "on a multi-node cluster a path every node sees)")
    group.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                       help="paper: the canonical recipe; smoke: seconds on a laptop CPU (generated data); "
                            "fmnist: 10 epochs of offline Fashion-MNIST-LT")
    group.add_argument("-c", "--config", help="a balpoe config file (ours or official JSON) as the base")
    group.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: share the CPUs)")
    group.add_argument("--gpus-per-trial", type=float,
                       help="GPUs per trial: 1, or a fraction (0.25 packs 4 trials on a GPU), or 0 for CPU-only "
                            "trials (default: 1 when GPUs exist)")
    group.add_argument("--max-concurrent", type=int, help="at most this many trials at once")
    group.add_argument("--checkpoint-every", type=int, default=10, help="checkpoint every N epochs (and at the end)")
    group.add_argument("--keep-checkpoints", type=int, default=2, help="checkpoints kept per trial")
    group.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial, from its checkpoint")
    add_cluster_options(group)


def add_cluster_options(group) -> None:
    group.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                       help="attach to a running Ray cluster (e.g. auto); default: start a local one")
    group.add_argument("--dashboard-host", default="127.0.0.1",
                       help="interface for the Ray dashboard of a local cluster (default 127.0.0.1)")
    group.add_argument("--dashboard-port", type=int, default=8265, help="port of a local Ray's dashboard")
    group.add_argument("--connect-timeout", type=float, default=30.0,
                       help="seconds to wait for the cluster at --address to answer")
    group.add_argument("--num-cpus", type=int, help="CPUs a local Ray may use (default: all)")
    group.add_argument("--num-gpus", type=int, help="GPUs a local Ray declares (default: those present)")
    group.add_argument("--progress-interval", type=float, default=15.0, help="seconds between progress lines")
    group.add_argument("--serve-results", action="store_true",
                       help="serve the live results page (Ray Serve, no CPU reserved) while the study runs")
    dashboard.add_page_options(group, prefix="results-")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    baseline = sub.add_parser("baseline", formatter_class=HelpFormatter, help="the canonical recipe as one trial per seed",
                              description="Run the BalPoE recipe (or a preset/config) as one Tune trial per seed.")
    baseline.add_argument("--seeds", type=int, nargs="+", default=[1], help="one trial per seed (default 1)")
    add_common(baseline)
    add_recipe_options(baseline, skip=("seed", "save_dir", "save_period"))

    search = sub.add_parser("search", formatter_class=HelpFormatter, help="Optuna search with ASHA early stopping",
                            description="Search a space with Optuna (TPE, seeded with the paper's point) and "
                            "ASHA on the epoch. Objectives are validation metrics, never test metrics.")
    search.add_argument("--space", default="alpha_tau", help=f"search space: {', '.join(SPACE_NAMES)}")
    search.add_argument("--range", type=value_range, action="append", default=[], metavar="NAME=LOW:HIGH",
                        help="override a parameter's range, e.g. mixup_alpha=0:0.8")
    search.add_argument("--num-samples", type=int, default=16, help="trials to sample (default 16)")
    search.add_argument("--objectives", type=objective, nargs="+", default=[["val_balanced_acc", "max"]],
                        metavar="METRIC:MODE", help="one objective, or several for a Pareto search "
                        "(default val_balanced_acc:max; ASHA uses the first)")
    search.add_argument("--sampler-seed", type=int, default=0, help="seed of Optuna's TPE sampler")
    search.add_argument("--seed", "-s", dest="seed", type=int, default=1, help="training seed of every trial")
    search.add_argument("--grace-period", type=int, help="first ASHA rung in epochs (default: just after the "
                        "first LR step, 165 of 200)")
    search.add_argument("--reduction-factor", type=int, default=2, help="ASHA keeps 1/N at each rung")
    search.add_argument("--max-t", type=int, help="stop every trial at this epoch of the recipe's schedule, "
                        "with its end-of-training test evaluation; ASHA's last rung (default: the last epoch)")
    search.add_argument("--startup-trials", type=int, help="TPE's random trials before it models the results "
                        "(default: a fifth of --num-samples, 2…10)")
    search.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    add_common(search)
    add_recipe_options(search, skip=("seed", "save_dir", "save_period"))

    resume = sub.add_parser("resume", formatter_class=HelpFormatter, help="continue an interrupted experiment",
                            description="Continue an interrupted or failed experiment: unfinished and errored "
                            "trials resume from their checkpoints; finished trials are not re-run.")
    resume.add_argument("name", help="experiment name (a folder under --storage-path) or its path")
    resume.add_argument("--storage-path", default="./runs", help="where the experiment folders are")
    add_cluster_options(resume.add_argument_group("cluster"))

    show = sub.add_parser("show", formatter_class=HelpFormatter, help="the trials table of an experiment, best first",
                          description="Print an experiment's trials, sorted by the (first) objective. Reads the "
                          "files only: works while the study runs, after a crash, without Ray.")
    show.add_argument("name", help="experiment name (a folder under --storage-path) or its path")
    show.add_argument("--storage-path", default="./runs", help="where the experiment folders are")
    show.add_argument("--top", type=int, help="show the best N trials only")
    show.add_argument("--columns", nargs="+", metavar="COLUMN", help="columns to show (default: status, key "
                      "config, objectives, test results); --list-columns names them all")
    show.add_argument("--list-columns", action="store_true", help="list the trials table's columns and exit")

    report = sub.add_parser("report", formatter_class=HelpFormatter, help="tables, figures and an HTML page of an experiment",
                            description="Write NAME/report/: index.html (offline), PNG figures and every table as "
                            "CSV, Parquet and Markdown. Reads the files only: works while the study runs.")
    report.add_argument("name", help="experiment name (a folder under --storage-path) or its path")
    report.add_argument("--storage-path", default="./runs", help="where the experiment folders are")
    report.add_argument("--baseline", help="a seeded baseline experiment (name or path) to compare every "
                        "configuration with, against its seed noise")
    report.add_argument("--output", help="report folder (default: the experiment's report/)")

    export = sub.add_parser("export", formatter_class=HelpFormatter, help="per-expert logits of a trial, for downstream stages",
                            description="Export a trial's per-expert logits from its last checkpoint, in "
                            "`python -m balpoe export-logits` layout (<split>.npz + manifest.json).")
    export.add_argument("name", help="experiment name (a folder under --storage-path) or its path")
    export.add_argument("--trial", default="best", help="a trial id, or best: the finished trial best on the "
                        "(first) objective (default)")
    export.add_argument("--storage-path", default="./runs", help="where the experiment folders are")
    export.add_argument("--output", help="export folder (default: <experiment>/exports/trial_<id>)")
    export.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS, help="splits to export")
    export.add_argument("--data-dir", help="where the data set is on this machine, if not where the trial read it")
    export.add_argument("--device", help="auto, cpu, cuda, cuda:N")

    page = sub.add_parser("dashboard", formatter_class=HelpFormatter, help="the live results page of every experiment, on Ray Serve",
                          description="Serve the results page (experiments under --storage-path: trials, figures, "
                          "statistics, running trials with ETAs) with Ray Serve until Ctrl-C. JSON tables under "
                          "/api/experiments. Read-only.")
    dashboard.add_arguments(page)

    doctor = sub.add_parser("doctor", formatter_class=HelpFormatter, help="check that a study can run here",
                            description="Check packages, GPUs, the data set, the storage path, Ray and its dashboard.")
    from . import doctor as doctor_module
    doctor_module.add_arguments(doctor)
    return parser


# --- turning arguments into checked settings (no Ray yet) ---------------------------------------
def base_config(args: argparse.Namespace) -> Config:
    if args.config and args.preset != "paper":
        raise StudyError(f"--preset: {args.preset} would replace values of --config {args.config}; use one of "
                         f"them, and recipe options for changes")
    base = load_file(args.config) if args.config else Config()
    base = base.replace(**PRESETS[args.preset]) if PRESETS[args.preset] else base
    overrides = recipe_overrides(args)
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    config = base.replace(**overrides)
    return config.replace(data_dir=str(Path(config.data_dir).resolve()))  # trials run elsewhere


def storage_root(path: str) -> str:
    if not path:
        raise StudyError("--storage-path: name a folder, e.g. ./runs (got '')")
    try:
        return path if is_uri(path) else str(Path(path).expanduser().resolve())
    except RuntimeError:  # "~user" that names no user
        raise StudyError(f"--storage-path: '~' names no home directory here (got {path!r})") from None


def check_writable(settings: StudySettings) -> None:
    problem = writable_folder_problem(settings.storage_path)
    if problem:
        raise StudyError(f"--storage-path: {problem}")


def check_fresh(settings: StudySettings) -> None:
    """The experiment folder is new (it holds only this study's lock): never someone else's files."""
    folder, root = Path(settings.experiment_dir), settings.storage_path
    if any(p.name != LOCK_FILE for p in folder.iterdir()):
        if (folder / SETTINGS_FILE).exists():
            raise StudyError(f"--name: experiment {settings.name!r} already exists in {root}; continue it with "
                             f"`python -m study.run resume {settings.name} --storage-path {root}` or pick "
                             f"another --name")
        raise StudyError(f"--storage-path/--name: {folder} is not empty and is not a study folder; "
                         f"pick another --name or --storage-path")


def default_name(kind: str, space: str | None, preset: str) -> str:
    """`baseline` / `search-<space>` for the paper recipe; other presets add their name, so a smoke run
    never takes the name of the real study."""
    name = "baseline" if kind == "baseline" else f"search-{space}"
    return name if preset == "paper" else f"{name}-{preset}"


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    config = base_config(args)
    kind = args.command
    name = args.name if args.name is not None else default_name(kind, getattr(args, "space", None), args.preset)
    settings = StudySettings(
        kind=kind, name=name, storage_path=storage_root(args.storage_path), base=config.to_dict(),
        seeds=list(args.seeds) if kind == "baseline" else [config.seed],
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, max_failures=args.max_failures, versions=versions())
    if kind == "search":
        settings.space, settings.ranges = args.space, distinct_ranges(args.range)
        check_not_searched(args, settings.space)
        settings.num_samples, settings.objectives = args.num_samples, args.objectives
        settings.sampler_seed, settings.asha = args.sampler_seed, not args.no_asha
        settings.grace_period, settings.reduction_factor, settings.max_t = (
            args.grace_period, args.reduction_factor, args.max_t)
        settings.startup_trials = args.startup_trials
    else:
        settings.asha = False
    settings.validate()
    check_writable(settings)
    return settings


def check_not_searched(args: argparse.Namespace, space_name: str) -> None:
    """A recipe option the search space samples would be overwritten in every trial: refuse it."""
    from search_spaces import get_space
    space = get_space(space_name)
    searched = set(space.to_overrides(dict(space.PAPER_POINT), Config()))
    given = sorted(searched & set(recipe_overrides(args)))
    if given:
        raise StudyError(f"--space {space_name}: it samples {', '.join(sorted(searched))}, so "
                         f"{', '.join('--' + g for g in given)} would be overwritten in every trial; drop "
                         f"{'it' if len(given) == 1 else 'them'}, or change the range with --range")


def experiment_folder(name: str, storage_path: str) -> Path:
    """A name is a folder under the storage path; a name with a slash is the folder's own path."""
    return Path(name) if "/" in name else Path(storage_root(storage_path)) / name


def resume_settings(args: argparse.Namespace) -> StudySettings:
    folder = experiment_folder(args.name, args.storage_path)
    if not (folder / SETTINGS_FILE).exists():
        raise StudyError(f"resume: no study at {folder} (no {SETTINGS_FILE}); check the name and --storage-path")
    settings = StudySettings.load(folder)
    settings.storage_path, settings.name = str(folder.resolve().parent), folder.name
    return settings


# --- running -------------------------------------------------------------------------------------
def prepare_data(settings: StudySettings) -> None:
    """Download/check the data once, here, so trials never race to fetch it."""
    from balpoe.data import load_raw
    config = settings.config()
    load_raw(config)
    settings.base = config.replace(download=False).to_dict()


def quiet_ray() -> None:
    """Our progress view replaces Tune's: its banner table and INFO lines would bury it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    for name in ("ray", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def start_ray(args: argparse.Namespace):
    from .cluster import connect, init_local_ray
    quiet_ray()
    if args.address:
        context = connect(args.address, args.connect_timeout, log_to_driver=False, logging_level=logging.WARNING)
    else:
        if args.dashboard_host not in ("127.0.0.1", "localhost"):
            print(f"warning: the Ray dashboard will listen on {args.dashboard_host}:{args.dashboard_port}; "
                  f"anyone who can reach it can see and control this cluster", file=sys.stderr)
        context = init_local_ray(args.dashboard_host, num_cpus=args.num_cpus, num_gpus=args.num_gpus,  # loopback only
                                 dashboard_port=args.dashboard_port, log_to_driver=False, logging_level=logging.WARNING)
    if dashboard.ray_dashboard(context):
        print(f"Ray dashboard: {dashboard.ray_dashboard(context)}")
    # SIGTERM would kill Tune without saving state; Tune treats SIGUSR1 like Ctrl-C, so forward it
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))
    return context


def resolve_resources(settings: StudySettings) -> None:
    import ray
    from .cluster import check_schedulable, check_shared_storage
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 1), resources.get("GPU", 0)
    if settings.gpus_per_trial is None:
        settings.gpus_per_trial = 1.0 if gpus >= 1 else 0.0
    if settings.gpus_per_trial > gpus:
        raise StudyError(f"--gpus-per-trial: {settings.gpus_per_trial} per trial but the cluster has {gpus:g} GPUs")
    if settings.cpus_per_trial is None:
        parallel = min(settings.expected_trials, settings.max_concurrent or settings.expected_trials)
        settings.cpus_per_trial = 1.0 if settings.gpus_per_trial else float(max(1, int(cpus // max(1, parallel))))
    if settings.cpus_per_trial > cpus:
        raise StudyError(f"--cpus-per-trial: {settings.cpus_per_trial:g} per trial but the cluster has {cpus:g} CPUs")
    check_schedulable(settings.cpus_per_trial, settings.gpus_per_trial)
    device = settings.config().device
    if device.startswith("cuda") and not settings.gpus_per_trial:
        raise StudyError(f"--device: {device} needs a GPU in every trial; drop --device (auto) or give "
                         f"--gpus-per-trial (got --gpus-per-trial {settings.gpus_per_trial:g})")
    check_shared_storage(settings.storage_path)


def open_experiment(name: str, storage_path: str, option: str = "experiment"):
    from results import ExperimentError, load_experiment
    folder = experiment_folder(name, storage_path)
    try:
        return load_experiment(folder)
    except ExperimentError as err:
        hint = "" if SETTINGS_FILE in str(err) else "; check the name and --storage-path"
        raise StudyError(f"{option} {name!r}: {err}{hint}") from None


def completed_experiment(settings: StudySettings):
    """The experiment if it has nothing left to run, judged from the files (Tune shows interrupted
    trials as terminated); else None."""
    from results import load_experiment
    if not any(Path(settings.experiment_dir).glob("experiment_state-*.json")):
        return None
    exp = load_experiment(settings.experiment_dir)
    return exp if exp.progress()["complete"] else None


def resume_command(settings: StudySettings) -> str:
    return (f"continue it with:\n  python -m study.run resume {shlex.quote(settings.name)} "
            f"--storage-path {shlex.quote(settings.storage_path)}")


def summarise(settings: StudySettings, exp=None) -> int:
    """The end table, read back from the experiment folder like any later `show`."""
    from results import load_experiment
    from results.console import progress_text, trials_text
    exp = exp or load_experiment(settings.experiment_dir)
    progress = exp.progress()
    if len(exp.trials):
        print()
        print(trials_text(exp))
    print(f"\n{progress_text(progress)}")
    print(f"results: {settings.experiment_dir}  (study.json, trial folders"
          f"{', optuna.db' if settings.kind == 'search' else ''}); "
          f"`python -m study.run report {settings.name} --storage-path {settings.storage_path}` writes tables and figures")
    if not progress["complete"]:
        print(f"the study is not complete; {resume_command(settings)}")
        return 130 if not progress["errored"] else 1
    return 0


def show(args: argparse.Namespace) -> int:
    from results.console import progress_text, trials_text
    exp = open_experiment(args.name, args.storage_path)
    if args.list_columns:
        print("\n".join(exp.trials.columns))
        return 0
    if args.top is not None and args.top < 1:
        raise StudyError(f"--top: must be >= 1 (got {args.top})")
    try:
        print(trials_text(exp, columns=args.columns, top=args.top))
    except KeyError as err:
        raise StudyError(err.args[0]) from None
    print(f"\n{exp.kind} '{exp.name}': {progress_text(exp.progress())}")
    print(f"experiment: {exp.path}")
    return 0


def export(args: argparse.Namespace) -> int:
    from balpoe.checkpoint import CheckpointError, trainer_from_checkpoint
    from balpoe.datasets import DataError
    from balpoe.export import export_logits
    exp = open_experiment(args.name, args.storage_path)
    if args.trial == "best":
        finished = exp.sorted_trials()[lambda t: t["status"] == "finished"]
        if finished.empty:
            raise StudyError(f"--trial best: experiment {exp.name!r} has no finished trial yet; name one with "
                             f"--trial ID ({', '.join(exp.trials['trial_id'])})")
        trial = finished.iloc[0]
    else:
        chosen = exp.trials[exp.trials["trial_id"] == args.trial]
        if chosen.empty:
            raise StudyError(f"--trial: no trial {args.trial!r} in {exp.name!r}; trials: "
                             f"{', '.join(exp.trials['trial_id']) or 'none yet'}")
        trial = chosen.iloc[0]
    checkpoints = sorted((exp.path / trial["folder"]).glob("checkpoint_*/trainer_state.pth"))
    if not checkpoints:
        raise StudyError(f"--trial: trial {trial['trial_id']} has no checkpoint yet")
    output = Path(args.output) if args.output else exp.path / "exports" / f"trial_{trial['trial_id']}"
    check_output_folder(output, "--output")
    print(f"trial {trial['trial_id']} ({trial['status']}, epoch {trial['epochs_run']}): {checkpoints[-1]}")
    try:
        trainer = trainer_from_checkpoint(str(checkpoints[-1]), args.data_dir, args.device)
    except (CheckpointError, DataError) as err:
        raise StudyError(f"--trial: {err}") from None
    export_logits(trainer, checkpoints[-1], output, args.splits)
    return 0


def report(args: argparse.Namespace) -> int:
    from results.report import write_report
    from results.stats import NotComparable
    exp = open_experiment(args.name, args.storage_path)
    baseline = open_experiment(args.baseline, args.storage_path, "--baseline") if args.baseline else None
    try:
        index = write_report(exp, args.output, baseline)  # the comparison is checked before any file is written
    except NotComparable as err:
        raise StudyError(str(err)) from None
    print(f"report: {index}")
    return 0


def run_study(settings: StudySettings, args: argparse.Namespace, resume: bool = False) -> int:
    import ray
    from .progress import CompactProgress
    from .tuner import build_tuner, restore_tuner
    if not resume:
        prepare_data(settings)
    context = start_ray(args)
    served = False
    try:
        if not resume:
            resolve_resources(settings)
            Path(settings.experiment_dir).mkdir(parents=True, exist_ok=True)
            settings.save(settings.experiment_dir)
        if args.serve_results:
            url = dashboard.deploy(settings.storage_path, args.results_host, args.results_port, args.refresh,
                                   dashboard.ray_dashboard(context))
            served = True
            print(f"results page: {url}experiments/{settings.name}")
        print(f"{settings.kind} '{settings.name}': {settings.expected_trials} trial(s) × {settings.stop_epoch} epochs, "
              f"{settings.cpus_per_trial:g} CPU / {settings.gpus_per_trial:g} GPU per trial -> {settings.experiment_dir}")
        if resume:  # the progress view comes back with the pickled run config
            tuner = restore_tuner(settings)
        else:
            tuner = build_tuner(settings, callbacks=[CompactProgress(settings, interval=args.progress_interval)])
        tuner.fit()
        return summarise(settings)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C now would only cut the clean-up short
        if served:
            dashboard.undeploy()
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings, previous_sigint = None, signal.getsignal(signal.SIGINT)
    try:
        if args.command == "doctor":
            from . import doctor
            return doctor.run(args)
        if args.command in ("show", "report", "export"):
            return {"show": show, "report": report, "export": export}[args.command](args)
        if args.command == "dashboard":
            return dashboard.run(args, open_experiment)
        dashboard.check_page_options(args.results_host, args.results_port, args.refresh, "--results-port",
                                     "--results-host", probe=args.serve_results,
                                     ray_dashboard_port=None if args.address else args.dashboard_port)
        check_cluster_options(args)
        if args.command == "resume":
            settings = resume_settings(args)
            with StudyLock(settings.experiment_dir, settings.name):
                complete = completed_experiment(settings)
                if complete is not None:
                    print(f"{settings.kind} '{settings.name}' is already complete; nothing to resume")
                    return summarise(settings, complete)
                return run_study(settings, args, resume=True)
        settings = settings_from_args(args)
        with StudyLock(settings.experiment_dir, settings.name):  # held until the study ends
            check_fresh(settings)
            return run_study(settings, args)
    except (StudyError, ConfigError, SpaceError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before Ray (a download), or a second Ctrl-C while Tune was stopping
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the message and the resume command through
        print("\ninterrupted", file=sys.stderr)
        if settings is not None:
            print(resume_command(settings), file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous_sigint)


if __name__ == "__main__":
    sys.exit(main())
