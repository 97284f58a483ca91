"""Experiment trackers a study is sent to (`--log-to mlflow[=URI]`, `--log-to wandb[=PROJECT]`): what
each run holds, and the checks made before Ray starts.

One run per trial, in one tracker experiment named after the study (MLflow's experiment, W&B's group):
its parameters are the trial's recipe, its metrics every per-epoch training and validation value (one
step per epoch) and the end-of-training test values, its tags say which study, kind, status and toolkit.
The same functions feed the live callbacks (`study.tracker_callbacks`) and `export-tracker`
(`study.tracker_export`), so a study logged live and one exported from its files give the same runs.
Imports no tracker package (nor pandas): `--help` and the checks stay fast, and a missing package is named.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import netrc
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.settings import StudyError, StudySettings
from results.trial_params import TrialParams

KINDS = ("mlflow", "wandb")
DEFAULT_WANDB_PROJECT = "balpoe"
PROBE_TIMEOUT_S = 5.0
METRIC_PREFIXES = ("train_", "val_", "test_", "shift_")
WANDB_REFUSED_CHARACTERS = set("/\\#?%:")   # W&B refuses these in a project name
WANDB_PROJECT_MAX = 128


@dataclass(frozen=True)
class Tracker:
    """`kind=target`: an MLflow tracking URI, or a W&B project. `target` is None until `resolve` fills in
    the default (MLflow's own: MLFLOW_TRACKING_URI or ./mlflow.db; W&B: WANDB_PROJECT or balpoe)."""
    kind: str
    target: str | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}={self.target}"

    @property
    def label(self) -> str:
        return {"mlflow": "MLflow", "wandb": "W&B"}[self.kind]


def tracker_option(text: str) -> Tracker:
    """`--log-to`/`--to`: mlflow[=TRACKING_URI] or wandb[=PROJECT] (syntax only; `check_trackers` probes)."""
    kind, equals, target = text.partition("=")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected mlflow[=TRACKING_URI] or wandb[=PROJECT]")
    if equals and not target:
        raise argparse.ArgumentTypeError(f"{text!r}: give the {'tracking URI' if kind == 'mlflow' else 'project'} "
                                         f"after '=', or leave out '=' for the default")
    return Tracker(kind, target or None)


def resolve(tracker: Tracker) -> Tracker:
    """The tracker with its default target filled in and local paths made absolute, so a resumed study
    (from any folder) sends to the same place."""
    if tracker.kind == "wandb":
        return Tracker("wandb", tracker.target or os.environ.get("WANDB_PROJECT") or DEFAULT_WANDB_PROJECT)
    uri = tracker.target or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    scheme = urllib.parse.urlsplit(uri).scheme
    if uri.startswith("sqlite:///"):
        uri = "sqlite:///" + str(Path(uri.removeprefix("sqlite:///")).expanduser().absolute())
    elif scheme in ("", "file"):
        uri = Path(uri.removeprefix("file://")).expanduser().absolute().as_uri()
    return Tracker("mlflow", uri)


def check_trackers(trackers, option: str = "--log-to") -> tuple[Tracker, ...]:
    """The trackers resolved, each checked before Ray starts: its package is installed, an MLflow server
    answers within PROBE_TIMEOUT_S, a W&B project is a name W&B takes and W&B has a login (or runs
    offline). A problem is a StudyError naming `option` and the tracker."""
    resolved = []
    for tracker in map(resolve, trackers):
        if importlib.util.find_spec(tracker.kind) is None:
            raise StudyError(f"{option} {tracker.kind}: the {tracker.kind} package is not installed here; "
                             f"install the toolkit's extra: pip install -e '.[{tracker.kind}]'")
        problem = mlflow_problem(tracker.target) if tracker.kind == "mlflow" else wandb_problem(tracker.target)
        if problem:
            raise StudyError(f"{option} {tracker.kind}: {problem}")
        if tracker not in resolved:
            resolved.append(tracker)
    return tuple(resolved)


def resumed_trackers(saved: tuple[str, ...], given: tuple[Tracker, ...]) -> tuple[Tracker, ...]:
    """A resumed study's trackers: its own (one that fails its check now costs a warning, never the study)
    and those given to this resume (`given`, already checked as a new study's are)."""
    kept = []
    for text in saved:
        try:
            kept += check_trackers([tracker_option(text)])
        except (StudyError, argparse.ArgumentTypeError) as err:
            print(f"warning: {err}; the study resumes without it", file=sys.stderr)
    return tuple(dict.fromkeys([*kept, *given]))


def mlflow_problem(uri: str) -> str | None:
    parts = urllib.parse.urlsplit(uri)
    if parts.password is not None or (parts.username and parts.scheme in ("http", "https")):
        return (f"{parts.scheme}://{parts.hostname}…: give the credentials in MLFLOW_TRACKING_USERNAME and "
                f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), not in the URI: it is recorded with the study")
    if parts.scheme not in ("http", "https"):
        return None  # a local store (sqlite, a folder) or a platform URI (databricks): MLflow opens it itself
    try:
        urllib.request.urlopen(urllib.parse.urljoin(uri.rstrip("/") + "/", "health"), timeout=PROBE_TIMEOUT_S)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return (f"{uri} refused these credentials (HTTP {err.code}); set MLFLOW_TRACKING_USERNAME and "
                    f"MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN")
        return None  # it answers (a server without /health)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return (f"no MLflow tracking server answers at {uri} within {PROBE_TIMEOUT_S:g} s ({reason}); start it "
                f"(`mlflow server --host 127.0.0.1 --port {parts.port or 5000}`) or check the URI")
    return None


def wandb_problem(project: str) -> str | None:
    refused = sorted(WANDB_REFUSED_CHARACTERS & set(project))
    if refused or len(project) > WANDB_PROJECT_MAX or not project.strip():
        return (f"W&B refuses the project name {project!r} (at most {WANDB_PROJECT_MAX} characters, none of "
                f"{' '.join(sorted(WANDB_REFUSED_CHARACTERS))}); pick another: --log-to wandb=PROJECT")
    if os.environ.get("WANDB_MODE") in ("offline", "disabled") or os.environ.get("WANDB_API_KEY"):
        return None
    host = urllib.parse.urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc().authenticators(host):
            return None
    except (OSError, netrc.NetrcParseError):
        pass
    return ("W&B has no login on this machine; run `wandb login`, set WANDB_API_KEY, or log offline with "
            "WANDB_MODE=offline (`wandb sync` uploads later)")


# --- what a run holds --------------------------------------------------------------------------------
def run_name(trial_id: str) -> str:
    return f"trial_{trial_id}"   # the trial's folder


def run_params(params: TrialParams) -> dict[str, Any]:
    """The trial's recipe as it trained: the searched parameters as themselves (mixup_alpha, tau_spread),
    tau_list as a list, precision, seed and every other recipe field (not where or how fast it ran)."""
    from results.tables import NOT_RECIPE
    recipe = params.recipe().to_dict()
    values = {key: value for key, value in recipe.items() if key not in NOT_RECIPE}
    values.update(params.point)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in values.items()}


def epoch_metrics(report: dict) -> dict[str, float]:
    """A report's training, validation and (on the last epoch) test values; never Tune's bookkeeping or a
    cool-down rung's scores."""
    from results.tables import is_rung_key
    return {key: float(value) for key, value in report.items()
            if (key.startswith(METRIC_PREFIXES) or key == "lr") and not is_rung_key(key)
            and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}


def run_tags(settings: StudySettings, trial_id: str, status: str) -> dict[str, str]:
    versions = settings.versions
    return {"study": settings.name, "kind": settings.kind, "trial_id": trial_id, "status": status,
            "toolkit_version": str(versions.get("toolkit", "")), "toolkit_commit": str(versions.get("commit", ""))}


def wandb_tags(tags: dict[str, str]) -> list[str]:
    """W&B's tags are labels, not pairs: `key:value`, at most 64 characters; the status is in the run's
    config instead (it changes)."""
    return [f"{key}:{value}"[:64] for key, value in tags.items() if key != "status"]


def ended_status(last_epoch: int, stop_epoch: int, failed: bool) -> str:
    """A trial Tune ended: as the results tables name it (`results.tables.trial_status`)."""
    if last_epoch >= stop_epoch:
        return "finished"
    return "errored" if failed else "asha_stopped"


def failure_reason(err: BaseException) -> str:
    """What a tracker's client said, as one printable line: its first line, no password, at most 300 characters."""
    from results.storage_urls import hide_password
    text = str(err).strip()
    return hide_password(text.splitlines()[0] if text else type(err).__name__)[:300]


def not_sent_warning(tracker: Tracker, settings: StudySettings, err: BaseException) -> str:
    """The one warning a tracker that fails mid-study costs: the study goes on, and the folder can be sent
    again later."""
    from .settings import study_command
    return (f"warning: --log-to {tracker}: {failure_reason(err)}; the study goes on without it (its folder is the "
            f"record: `{study_command('export-tracker', settings)} --to {tracker}` sends it later)")
