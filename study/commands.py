"""The read-only commands: `show`, `report`, `export` and `export-tracker` read an experiment folder through `results`,
without Ray, while a study runs or after it crashed. Imported only when one of them runs."""
from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from balpoe.checkpoint import CheckpointError, trainer_from_checkpoint
from balpoe.cli import check_output_folder
from balpoe.datasets import DataError
from balpoe.export import check_export_folder, export_logits
from results import ExperimentError, load_experiment
from results.console import compute_text, progress_text, trials_text
from results.reader import TRAINER_STATE_FILE, NoExperimentThere, anything_at
from results.storage import local_outputs
from results.report import ReportError, write_report
from results.stats import NotComparable

from .settings import SETTINGS_FILE, StudyError, experiment_folder, studies_there


def open_experiment(name: str, storage_path: str, option: str = "experiment"):
    folder = experiment_folder(name, storage_path)
    try:
        return load_experiment(folder)
    except NoExperimentThere as err:  # the storage answered: list what is there
        raise StudyError(f"{option} {name!r}: {err}; {studies_there(folder.parent)}") from None
    except ExperimentError as err:
        hint = "" if SETTINGS_FILE in str(err) else "; check the name and --storage-path"
        raise StudyError(f"{option} {name!r}: {err}{hint}") from None


def show(args: argparse.Namespace) -> int:
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
    if compute_text(exp):
        print(compute_text(exp))
    print(f"experiment: {exp.path}")
    return 0


def report(args: argparse.Namespace) -> int:
    exp = open_experiment(args.name, args.storage_path)
    baseline = open_experiment(args.baseline, args.storage_path, "--baseline") if args.baseline else None
    try:
        index = write_report(exp, args.output, baseline)  # the comparison is checked before any file is written
    except (NotComparable, ReportError) as err:  # ReportError: --output cannot take it (nothing half-written)
        raise StudyError(str(err)) from None
    print(f"report: {index}")
    return 0


def export(args: argparse.Namespace) -> int:
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
    checkpoints = sorted((folder / TRAINER_STATE_FILE for folder in (exp.path / trial["folder"]).glob("checkpoint_*")
                          if anything_at(folder / TRAINER_STATE_FILE)), key=str)
    if not checkpoints:
        raise StudyError(f"--trial: trial {trial['trial_id']} has no checkpoint yet")
    output = Path(args.output) if args.output else local_outputs(exp.path) / "exports" / f"trial_{trial['trial_id']}"
    check_export_folder(output)  # before the checkpoint and its data are read
    check_output_folder(output, "--output")
    print(f"trial {trial['trial_id']} ({trial['status']}, epoch {trial['epochs_run']}): {checkpoints[-1]}")
    with local_copy(checkpoints[-1]) as checkpoint:
        try:
            trainer = trainer_from_checkpoint(str(checkpoint), args.data_dir, args.device)
        except (CheckpointError, DataError) as err:
            raise StudyError(f"--trial: {err}") from None
        export_logits(trainer, checkpoint, output, args.splits, checkpoint_name=str(checkpoints[-1]))
    return 0


@contextlib.contextmanager
def local_copy(path: Location):
    """A checkpoint as a local file: itself, or a copy of one in an object store while it is used."""
    if isinstance(path, Path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="balpoe-export-") as folder:
        copy = Path(folder, path.name)
        copy.write_bytes(path.read_bytes())
        yield copy


def export_tracker(args: argparse.Namespace) -> int:
    from .tracker_export import send
    from .trackers import check_trackers
    trackers = check_trackers(args.to, option="--to")
    exp = open_experiment(args.name, args.storage_path)
    if exp.settings is None:
        raise StudyError(f"experiment {args.name!r}: {exp.path} has no {SETTINGS_FILE}; export-tracker sends a "
                         f"study's trials (the tracker's experiment is named after the study)")
    return send(exp, trackers)
