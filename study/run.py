"""`python -m study.run` — BalPoE studies on Ray Tune: baseline, search, resume, doctor.

Every input is checked before Ray starts; the experiment folder holds Tune's results, `study.json`
(the resolved settings) and, for searches, the Optuna study (`optuna.db`).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from balpoe.__main__ import add_recipe_options, recipe_overrides
from balpoe.config import Config, ConfigError, load_file
from search_spaces import SPACE_NAMES, SpaceError

from .settings import SETTINGS_FILE, StudyError, StudySettings, is_uri, versions

PRESETS = {
    "paper": {},
    "smoke": {"dataset": "synthetic-lt", "imb_factor": 0.1, "epochs": 2, "warmup_epochs": 1, "step1": 1,
              "step2": 2, "batch_size": 16, "save_period": 1},  # batch 16: epoch 1 already ranks trials, for ASHA
    "fmnist": {"dataset": "fashion-mnist-lt", "epochs": 10},
}


def gpu_amount(text: str) -> float:
    value = float(text)
    if value <= 0 or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(
            f"{text}: a fraction in (0, 1] packs several trials per GPU, a whole number gives each trial "
            f"several GPUs; leave the option out for CPU-only trials")
    return value


def objective(text: str) -> list[str]:
    metric, _, mode = text.partition(":")
    return [metric, mode or "max"]


def value_range(text: str) -> tuple[str, tuple[float, float]]:
    name, _, bounds = text.partition("=")
    low, _, high = bounds.partition(":")
    try:
        return name, (float(low), float(high))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=LOW:HIGH, e.g. mixup_alpha=0:0.8") from None


def add_common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("study")
    group.add_argument("--name", help="experiment name (default: baseline / search-<space>)")
    group.add_argument("--storage-path", default="./runs", help="where experiment folders go (default ./runs; "
                       "on a multi-node cluster a path every node sees, or s3://…)")
    group.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                       help="paper: the canonical recipe; smoke: seconds on a laptop CPU (generated data); "
                            "fmnist: 10 epochs of offline Fashion-MNIST-LT")
    group.add_argument("-c", "--config", help="a balpoe config file (ours or official JSON) as the base")
    group.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: share the CPUs)")
    group.add_argument("--gpus-per-trial", type=gpu_amount,
                       help="GPUs per trial; 0.25 packs 4 trials on a GPU (default: 1 when GPUs exist)")
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
    group.add_argument("--dashboard-port", type=int, default=8265)
    group.add_argument("--num-cpus", type=int, help="CPUs a local Ray may use (default: all)")
    group.add_argument("--num-gpus", type=int, help="GPUs a local Ray declares (default: those present)")
    group.add_argument("--progress-interval", type=float, default=15.0, help="seconds between progress lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.run", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    baseline = sub.add_parser("baseline", help="the canonical recipe as one trial per seed",
                              description="Run the BalPoE recipe (or a preset/config) as one Tune trial per seed.")
    baseline.add_argument("--seeds", type=int, nargs="+", default=[1], help="one trial per seed (default 1)")
    add_common(baseline)
    add_recipe_options(baseline, skip=("seed", "save_dir", "save_period"))

    search = sub.add_parser("search", help="Optuna search with ASHA early stopping",
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
    search.add_argument("--max-t", type=int, help="ASHA's last rung (default: all epochs)")
    search.add_argument("--no-asha", action="store_true", help="run every trial to the end")
    add_common(search)
    add_recipe_options(search, skip=("seed", "save_dir", "save_period"))

    resume = sub.add_parser("resume", help="continue an interrupted experiment",
                            description="Continue an interrupted or failed experiment: unfinished and errored "
                            "trials resume from their checkpoints; finished trials are not re-run.")
    resume.add_argument("name", help="experiment name (a folder under --storage-path) or its path")
    resume.add_argument("--storage-path", default="./runs")
    add_cluster_options(resume.add_argument_group("cluster"))

    doctor = sub.add_parser("doctor", help="check that a study can run here",
                            description="Check packages, GPUs, the data set, the storage path, Ray and its dashboard.")
    from . import doctor as doctor_module
    doctor_module.add_arguments(doctor)
    return parser


# --- turning arguments into checked settings (no Ray yet) ---------------------------------------
def base_config(args: argparse.Namespace) -> Config:
    base = load_file(args.config) if args.config else Config()
    base = base.replace(**PRESETS[args.preset]) if PRESETS[args.preset] else base
    overrides = recipe_overrides(args)
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    config = base.replace(**overrides)
    return config.replace(data_dir=str(Path(config.data_dir).resolve()))  # trials run elsewhere


def storage_root(path: str) -> str:
    return path if is_uri(path) else str(Path(path).expanduser().resolve())


def check_storage(settings: StudySettings) -> None:
    """Writable, and the experiment folder is either absent or empty — never someone else's files."""
    if is_uri(settings.storage_path):
        return
    root = Path(settings.storage_path)
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise StudyError(f"--storage-path: {root} is not writable ({err.strerror})") from None
    folder = Path(settings.experiment_dir)
    if folder.exists() and any(folder.iterdir()):
        if (folder / SETTINGS_FILE).exists():
            raise StudyError(f"--name: experiment {settings.name!r} already exists in {root}; continue it with "
                             f"`python -m study.run resume {settings.name} --storage-path {root}` or pick "
                             f"another --name")
        raise StudyError(f"--storage-path/--name: {folder} is not empty and is not a study folder; "
                         f"pick another --name or --storage-path")


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    config = base_config(args)
    kind = args.command
    name = args.name or ("baseline" if kind == "baseline" else f"search-{args.space}")
    settings = StudySettings(
        kind=kind, name=name, storage_path=storage_root(args.storage_path), base=config.to_dict(),
        seeds=list(args.seeds) if kind == "baseline" else [config.seed],
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, max_failures=args.max_failures, versions=versions())
    if kind == "search":
        settings.space, settings.ranges = args.space, dict(args.range)
        settings.num_samples, settings.objectives = args.num_samples, args.objectives
        settings.sampler_seed, settings.asha = args.sampler_seed, not args.no_asha
        settings.grace_period, settings.reduction_factor, settings.max_t = (
            args.grace_period, args.reduction_factor, args.max_t)
    else:
        settings.asha = False
    settings.validate()
    check_storage(settings)
    return settings


def resume_settings(args: argparse.Namespace) -> StudySettings:
    folder = Path(args.name) if "/" in args.name else Path(storage_root(args.storage_path)) / args.name
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


def start_ray(args: argparse.Namespace) -> None:
    import ray
    quiet_ray()
    if args.address:
        context = ray.init(address=args.address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        if args.dashboard_host not in ("127.0.0.1", "localhost"):
            print(f"warning: the Ray dashboard will listen on {args.dashboard_host}:{args.dashboard_port}; "
                  f"anyone who can reach it can see and control this cluster", file=sys.stderr)
        context = ray.init(num_cpus=args.num_cpus, num_gpus=args.num_gpus, include_dashboard=True,
                           dashboard_host=args.dashboard_host, dashboard_port=args.dashboard_port,
                           log_to_driver=False, logging_level=logging.WARNING)
    url = context.dashboard_url
    if url:
        print(f"Ray dashboard: http://{url}" if "://" not in url else f"Ray dashboard: {url}")
    # SIGTERM would kill Tune without saving state; Tune treats SIGUSR1 like Ctrl-C, so forward it
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGUSR1))


def resolve_resources(settings: StudySettings) -> None:
    import ray
    from .cluster import check_shared_storage
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
    check_shared_storage(settings.storage_path)


def pareto_front(frame, objectives: list[list[str]]):
    """True for rows that no other row beats on every objective; rows missing a value are never on it."""
    import pandas as pd
    signs = pd.Series({metric: 1.0 if mode == "max" else -1.0 for metric, mode in objectives})
    values = frame[list(signs.index)].mul(signs).to_numpy()
    complete = ~pd.isna(values).any(axis=1)
    others = values[complete]
    on_front = []
    for row, ok in zip(values, complete):
        dominated = ((others >= row).all(axis=1) & (others > row).any(axis=1)).any()
        on_front.append(bool(ok) and not dominated)
    return pd.Series(on_front, index=frame.index)


def completed_frame(settings: StudySettings):
    """The trial table of a study with nothing left to run, read without starting Ray; else None."""
    from ray.tune import ExperimentAnalysis
    from .tuner import trial_status
    if not any(Path(settings.experiment_dir).glob("experiment_state-*.json")):
        return None
    frame = ExperimentAnalysis(settings.experiment_dir).dataframe()
    return frame if trial_status(settings, frame)["complete"] else None


def summarise(settings: StudySettings, frame, errors: int = 0) -> int:
    from .tuner import trial_status
    status = trial_status(settings, frame)
    metric = settings.metric
    objectives = [m for m, _ in settings.objectives] if settings.kind == "search" else [metric]
    columns = [c for c in ("trial_id", "seed", "mixup_alpha", "tau_list", "num_experts", "epoch", *objectives,
                           "best_val_balanced_acc", "test_balanced_acc", "test_full_acc", "test_full_ece")
               if c in frame.columns]
    columns = list(dict.fromkeys(columns))
    if len(objectives) > 1 and len(frame):  # Pareto among trials that ran all their epochs
        finished = frame["trial_id"].isin(status["finished"])
        frame["pareto"] = (pareto_front(frame[finished], settings.objectives)
                           .reindex(frame.index, fill_value=False).map({True: "*", False: ""}))
        columns.append("pareto")
    if len(frame):
        print()
        print(frame[columns].sort_values(metric, ascending=settings.mode == "min").to_string(
            index=False, float_format=lambda v: f"{v:.4f}"))
        if "pareto" in columns:
            print("pareto *: no other finished trial is at least as good on every objective and better on one")
    print(f"\n{len(status['finished'])} finished, {len(status['asha_stopped'])} stopped early by ASHA, "
          f"{len(status['unfinished'])} unfinished, {status['not_started']} not started, {errors} errored")
    print(f"results: {settings.experiment_dir}  (study.json, trial folders"
          f"{', optuna.db' if settings.kind == 'search' else ''})")
    if not status["complete"]:
        print(f"the study is not complete; continue it with:\n  python -m study.run resume {settings.name} "
              f"--storage-path {settings.storage_path}")
        return 130 if not errors else 1
    return 0


def run_study(settings: StudySettings, args: argparse.Namespace, resume: bool = False) -> int:
    import ray
    from .progress import CompactProgress
    from .tuner import build_tuner, restore_tuner
    if not resume:
        prepare_data(settings)
    start_ray(args)
    try:
        if not resume:
            resolve_resources(settings)
            Path(settings.experiment_dir).mkdir(parents=True, exist_ok=True)
            settings.save(settings.experiment_dir)
        print(f"{settings.kind} '{settings.name}': {settings.expected_trials} trial(s) × {settings.epochs} epochs, "
              f"{settings.cpus_per_trial:g} CPU / {settings.gpus_per_trial:g} GPU per trial -> {settings.experiment_dir}")
        if resume:  # the progress view comes back with the pickled run config
            tuner = restore_tuner(settings)
        else:
            tuner = build_tuner(settings, callbacks=[CompactProgress(settings, interval=args.progress_interval)])
        results = tuner.fit()
        return summarise(settings, results.get_dataframe(), errors=sum(1 for r in results if r.error))
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "doctor":
            from . import doctor
            return doctor.run(args)
        if args.command == "resume":
            settings = resume_settings(args)
            frame = completed_frame(settings)
            if frame is not None:
                print(f"{settings.kind} '{settings.name}' is already complete; nothing to resume")
                return summarise(settings, frame)
            return run_study(settings, args, resume=True)
        return run_study(settings_from_args(args), args)
    except (StudyError, ConfigError, SpaceError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
