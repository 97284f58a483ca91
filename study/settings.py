"""Command line → `StudySettings`, built once and checked before Ray starts.

The model of `study.json` itself lives in `results.settings` (the results readers read it too); here
are the study driver's defaults and the checks of the storage folder that only a new study needs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from balpoe.cli import recipe_overrides
from balpoe.config import Config, load_file, path_problem
from balpoe.cooldown import default_fraction
from balpoe.files import writable_folder_problem
from balpoe.provenance import provenance
from balpoe.shell import shell_command
from results.storage_urls import resolved_storage_url, shown_url
from results.reader import anything_at, printable
from results.settings import SETTINGS_FILE, StudyError, StudySettings
from results.storage import Location, StorePath, is_uri, location
from search_spaces import get_space

from .lock import LEASE_FILE, LOCK_FILE

__all__ = ["SETTINGS_FILE", "StudyError", "StudySettings", "is_uri", "settings_from_args", "resume_settings"]

PRESETS = {
    "paper": {},
    "smoke": {"dataset": "synthetic-lt", "imb_factor": 0.1, "epochs": 2, "warmup_epochs": 1, "step1": 1,
              "step2": 2, "batch_size": 16, "save_period": 1},  # batch 16: epoch 1 already ranks trials, for ASHA
    "fmnist": {"dataset": "fashion-mnist-lt", "epochs": 10},
}


def base_config(args: argparse.Namespace) -> Config:
    """The recipe every trial starts from: a preset or config file, then the recipe options. Data paths
    are made absolute (trials run in Ray's folders), and trials never download: the driver does, once."""
    if args.config and args.preset != "paper":
        raise StudyError(f"--preset: {args.preset} would replace values of --config {args.config}; use one of "
                         f"them, and recipe options for changes")
    base = load_file(args.config) if args.config else Config()
    base = base.replace(**PRESETS[args.preset]) if PRESETS[args.preset] else base
    overrides = recipe_overrides(args)
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    data_dir = overrides.get("data_dir", base.data_dir)
    return base.replace(**{**overrides, "data_dir": str(Path(data_dir).resolve())})


def storage_root(path: str) -> str:
    if is_uri(path):
        try:
            return str(location(path))
        except ValueError as err:
            raise StudyError(f"--storage-path: {err}; give a folder, or a URI of an object store Ray Tune "
                             f"writes to (s3://BUCKET/PATH, gs://BUCKET/PATH)") from None
    problem = path_problem(path)  # '' (the current folder) or a `~user` that names no user
    if problem:
        raise StudyError(f"--storage-path: {problem} (got {path!r})")
    return str(Path(path).expanduser().resolve())


def default_name(kind: str, space: str | None, preset: str) -> str:
    """`baseline` / `search-<space>` for the paper recipe; other presets add their name, so a smoke run
    never takes the name of the real study."""
    name = "baseline" if kind == "baseline" else f"search-{space}"
    return name if preset == "paper" else f"{name}-{preset}"


def default_startup_trials(num_samples: int) -> int:
    """TPE samples at random until this many trials exist. Optuna's 10 would leave a 16-trial search
    almost nothing to model; a fifth of the budget (2…10) keeps some exploration at any size."""
    return max(2, min(10, num_samples // 5))


def default_cooldown_grace_period(config: Config, stop_epoch: int) -> int:
    """With cool-down rungs, the first rung at a tenth of the schedule (20 of 200), the earliest rung
    that `benchmarks/fidelity.py` scores (docs/studies.md, "Cool-down rungs")."""
    return max(1, min(config.epochs, stop_epoch) // 10)


def default_grace_period(config: Config, stop_epoch: int) -> int:
    """First ASHA rung just after the first LR step has settled (165 of 200 for the recipe): before the
    step, scores rank trials poorly and favour small mixup α (see docs/studies.md, "ASHA on a step
    schedule"). When trials stop before that (`--max-t`), halfway to their stop."""
    after_step = min(config.epochs, config.step1 + max(1, config.epochs // 40))
    return after_step if after_step < stop_epoch else max(1, stop_epoch // 2)


def distinct_ranges(ranges: list[tuple[str, tuple[float, float]]]) -> dict:
    names = [name for name, _ in ranges]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise StudyError(f"--range: {', '.join(repeated)} given more than once; give each parameter one range")
    return dict(ranges)


def settings_from_args(args: argparse.Namespace) -> StudySettings:
    """Every default resolved here, once; the result is checked as a whole and never changes."""
    config = base_config(args)
    kind = args.command
    max_t = config.epochs if getattr(args, "max_t", None) is None else args.max_t
    values = dict(
        kind=kind, storage_path=storage_root(args.storage_path), base=config,
        name=args.name if args.name is not None else default_name(kind, getattr(args, "space", None), args.preset),
        seeds=tuple(args.seeds) if kind == "baseline" else (config.seed,),
        cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
        max_concurrent=args.max_concurrent, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, max_failures=args.max_failures, min_free_mb=args.min_free_mb,
        versions=versions(),
        max_t=max_t, asha=False, grace_period=default_grace_period(config, max(1, max_t)))
    if kind == "search":
        space = get_space(args.space)
        check_not_searched(args, space)
        values.update(
            space=args.space, ranges=distinct_ranges(args.range),  # resolved by StudySettings
            num_samples=args.num_samples, objectives=tuple(map(tuple, args.objectives)),
            sampler_seed=args.sampler_seed, asha=not args.no_asha, reduction_factor=args.reduction_factor,
            startup_trials=args.startup_trials if args.startup_trials is not None
            else default_startup_trials(args.num_samples),
            optuna_storage=None if args.optuna_storage is None else resolved_storage_url(args.optuna_storage))
        if args.fidelity == "cooldown":
            values.update(fidelity="cooldown", grace_period=default_cooldown_grace_period(config, max(1, max_t)),
                          cooldown_fraction=args.cooldown_fraction if args.cooldown_fraction is not None
                          else default_fraction(config))
        elif args.cooldown_fraction is not None:
            raise StudyError("--cooldown-fraction: sets the length of cool-down rungs; add --fidelity cooldown")
        if args.grace_period is not None:
            values["grace_period"] = args.grace_period
    from .trackers import check_trackers
    values["trackers"] = tuple(map(str, check_trackers(args.log_to)))  # probed: a server answers
    settings = StudySettings(**values)
    if is_uri(settings.storage_path):
        check_store_name(settings.name)
        check_object_store(settings.storage_path)
        return settings
    problem = writable_folder_problem(settings.storage_path)
    if problem:
        raise StudyError(f"--storage-path: {problem}")
    free = free_mb(settings.storage_path)
    if free < settings.min_free_mb:
        raise StudyError(f"--storage-path: only {free:.0f} MB free under {settings.storage_path}; a study stops "
                         f"when less than {settings.min_free_mb:g} MB is left (--min-free-mb): free some space "
                         f"or choose another --storage-path")
    return settings


def free_mb(path: str) -> float:
    """Free space where `path` is or will be (its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free / 2**20


def check_not_searched(args: argparse.Namespace, space) -> None:
    """A recipe option the search space samples would be overwritten in every trial: refuse it."""
    searched = set(space.to_overrides(dict(space.PAPER_POINT), num_experts=1))  # only the keys matter
    given = sorted(searched & set(recipe_overrides(args)))
    if given:
        raise StudyError(f"--space {args.space}: it samples {', '.join(sorted(searched))}, so "
                         f"{', '.join('--' + g for g in given)} would be overwritten in every trial; drop "
                         f"{'it' if len(given) == 1 else 'them'}, or change the range with --range")


def check_fresh(settings: StudySettings) -> None:
    """The experiment folder is new (it holds only this study's lock): never someone else's files."""
    folder, root = location(settings.experiment_dir), settings.storage_path
    if any(p.name not in (LOCK_FILE, LEASE_FILE) for p in _entries(folder)):
        if (folder / SETTINGS_FILE).exists():
            raise StudyError(f"--name: experiment {settings.name!r} already exists in {root}; continue it with "
                             f"`{study_command('resume', settings)}` or pick another --name")
        raise StudyError(f"--storage-path/--name: {folder} is not empty and is not a study folder; "
                         f"pick another --name or --storage-path")


def _entries(folder: Location) -> list:
    try:
        return list(folder.iterdir())
    except FileNotFoundError:  # an object store has no empty folders
        return []


def experiment_folder(name: str, storage_path: str) -> Location:
    """A name is a folder under the storage path; a name with a slash is the folder's own path (or URI)."""
    if "/" in name:
        return location(name)
    return location(storage_root(storage_path)) / name  # a plain segment, never re-read as part of a URI


def resume_settings(args: argparse.Namespace) -> StudySettings:
    """The study's saved settings, placed where its folder is now (it may have been moved or copied)."""
    folder = experiment_folder(args.name, args.storage_path)
    if isinstance(folder, StorePath):
        check_store_name(folder.name)
        check_object_store(str(folder.parent))
    if not (folder / SETTINGS_FILE).exists():
        raise StudyError(f"resume: no study at {folder} (no {SETTINGS_FILE}); {studies_there(folder.parent)}")
    saved = StudySettings.load(folder)
    changed = saved.changes_since_start(folder)
    if changed:
        raise StudyError(f"{SETTINGS_FILE}: {folder / SETTINGS_FILE} was changed after the study started "
                         f"({'; '.join(changed)}); a started study keeps its settings: put the values back, or "
                         f"start a new study with them (another --name)")
    return saved.with_changes(storage_path=str(folder.resolve().parent), name=folder.name)


def studies_there(storage: Location, shown: int = 20) -> str:
    """The studies in `storage` (folders with a study.json), for a name that was mistyped."""
    try:
        names = sorted(p.name for p in storage.iterdir() if anything_at(p / SETTINGS_FILE))
    except OSError:
        names = []
    if not names:
        return f"no study in {storage}; check the name and --storage-path"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"the studies in {storage} are: {', '.join(map(printable, names[:shown]))}{more}"


def check_object_store(uri: str) -> None:
    """Before Ray starts, within a bounded time: the store answers, the bucket exists, and these
    credentials may write and delete there (a small object is written and removed)."""
    from .object_store import store_problem
    problem = store_problem(uri)
    if problem:
        raise StudyError(f"--storage-path: {problem}")


def check_store_name(name: str) -> None:
    from .object_store import store_name_problem
    problem = store_name_problem(name)
    if problem:
        raise StudyError(f"--name: {problem}")


def study_command(command: str, settings: StudySettings) -> str:
    """`python -m study.run COMMAND NAME --storage-path ROOT`, as it works pasted into the user's shell."""
    return shell_command("study.run", command, settings.name, options=("--storage-path", settings.storage_path))


def resume_command(settings: StudySettings) -> str:
    return f"continue it with:\n  {study_command('resume', settings)}"


def versions() -> dict:
    """Provenance of the study (toolkit version and commit, libraries, host, command), for its results."""
    import optuna
    import ray
    return {**provenance(), "ray": ray.__version__, "optuna": optuna.__version__,
            # each argument alone: one whole URL, whatever its password holds
            "command": " ".join(map(shown_url, [os.path.basename(sys.executable), *sys.argv]))}
