"""Reading an experiment folder as Tune and the trainer left it: no Ray, no study driver.

An experiment folder holds `study.json` (the resolved study settings), `asha_stopped.json` (trials
ASHA stopped on purpose), `optuna.db` for searches, and one folder per trial with `params.json` (the
trial's Tune config), `result.json` (one JSON row per report), `error.txt` when the trial failed, and
`progress.json` while it runs (its position inside the epoch, `in_epoch.py`; read on demand only).
Everything here tolerates a study that is still running or crashed: a truncated last line, a trial
folder without results yet, a missing record file, a folder that vanishes while it is read. A record
that is there but cannot be one (a folder or a pipe where a file belongs, unreadable bytes) is named
in the trial's `damaged` list instead of failing the read, so one bad trial never hides the others.
"""
from __future__ import annotations

import io
import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .in_epoch import InEpochProgress
from .settings import SETTINGS_FILE, StudyError, StudySettings
from .storage import Location, StorePath, location

ASHA_STOPPED_FILE = "asha_stopped.json"
OPTUNA_FILE = "optuna.db"
RESULT_FILE = "result.json"
PARAMS_FILE = "params.json"
ERROR_FILE = "error.txt"
PROGRESS_FILE = "progress.json"
TRAINER_STATE_FILE = "trainer_state.pth"   # in each of a trial's checkpoint_* folders
PROGRESS_MAX_BYTES = 4096   # a record is a few hundred bytes: anything larger is not one
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"


class ExperimentError(ValueError):
    """The folder is not an experiment (or cannot be read); the message names the path."""


class NoExperimentThere(ExperimentError):
    """Nothing that is an experiment at the path (a mistyped name, most often): the storage answered."""


class DamagedFile(Exception):
    """A record file that is there but cannot be read as one; the message is `<file>: <why>`."""


FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a device"),
              (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))


def open_record(path: Location) -> tuple[io.BufferedReader, os.stat_result] | None:
    """`path` opened for binary reading with its `stat`, or None when it is absent. It is opened without
    blocking (a named pipe would otherwise wait for a writer forever) and must be a regular file before
    a byte is read; anything else raises `DamagedFile`. In an object store, a folder is the only thing
    that can stand where a file belongs."""
    if isinstance(path, StorePath):
        try:
            opened = path.open_record()
        except OSError as err:
            raise DamagedFile(f"{path.name}: cannot be read ({err.strerror or err})") from None
        if opened and stat.S_ISDIR(opened[1].st_mode):
            raise DamagedFile(f"{path.name}: a folder, not a regular file")
        return opened
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):  # absent, or its folder vanished or was replaced
        return None
    except OSError as err:
        raise DamagedFile(f"{path.name}: cannot be read ({err.strerror or err})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = next((name for test, name in FILE_KINDS if test(info.st_mode)), "something else")
        raise DamagedFile(f"{path.name}: {kind}, not a regular file")
    return os.fdopen(fd, "rb"), info


@dataclass
class TrialFiles:
    """What one trial folder holds, parsed."""
    folder: Path
    params: dict | None                  # the Tune config; None while Tune has not written it
    rows: list[dict]                     # the last report of each epoch, in epoch order
    failures: int = 0                    # "Failure # N" entries in error.txt
    error: str = ""                      # the last failure's first line
    failed_after_last_report: bool = False
    skipped_lines: int = 0               # unparsable lines (a report cut off mid-write), rows without an epoch
    last_update: float = field(default=math.nan)
    damaged: list[str] = field(default_factory=list)   # "<file>: <why>" for each record that cannot be read
    infinite: dict[str, list[int]] = field(default_factory=dict)  # metric -> epochs it was ±inf (now NaN)

    @property
    def trial_id(self) -> str:
        for row in reversed(self.rows):
            if "trial_id" in row:
                return str(row["trial_id"])
        return self.folder.name.removeprefix("trial_")


@dataclass(frozen=True)
class ResultRows:
    rows: list[dict]                     # the last report of each epoch, in epoch order
    skipped: int = 0                     # lines that were no report with a whole epoch
    infinite: dict = field(default_factory=dict)  # metric -> epochs whose value was ±inf (read as NaN)
    mtime: float = math.nan


_row_cache: dict[Location, tuple[tuple[int, int, int], ResultRows]] = {}


def read_result_rows(path: Location) -> ResultRows:
    """Rows of a `result.json`, keeping the last row per epoch: a trial restored from a checkpoint
    repeats the epoch it resumed from. Lines that are not JSON objects, and rows whose `epoch` (else
    Tune's `training_iteration`) is not a positive integer, are skipped and counted. An infinite value
    (`Infinity`, or `1e400`) is no score to rank by: it is read as NaN and the epoch is noted.
    Cached by inode, modification time and size, so re-reading a large, unchanged experiment (a live
    page polling it) costs an `open` and `fstat` per trial. Raises `DamagedFile` when it is no file."""
    opened = open_record(path)
    if opened is None:
        return ResultRows([])
    handle, info = opened
    key = (info.st_ino, info.st_mtime_ns, info.st_size)
    cached = _row_cache.get(path)
    by_epoch: dict = {}
    skipped = 0
    with io.TextIOWrapper(handle, encoding="utf-8", errors="replace", newline="\n") as lines:
        if cached and cached[0] == key:
            return cached[1]
        try:
            for line in lines:
                if not line.strip():
                    continue
                row = _json_or_none(line)
                epoch = row.get("epoch", row.get("training_iteration")) if isinstance(row, dict) else None
                if not is_count(epoch):  # unparsable, or a damaged row: no epoch to file it under
                    skipped += 1
                    continue
                by_epoch[epoch] = row if "epoch" in row else {**row, "epoch": epoch}
        except OSError as err:
            raise DamagedFile(f"{path.name}: cannot be read ({err.strerror or err})") from None
    rows, infinite = [], {}
    for epoch in sorted(by_epoch):
        row = by_epoch[epoch]
        bad = [k for k, v in row.items() if isinstance(v, float) and math.isinf(v)]
        for k in bad:
            infinite.setdefault(k, []).append(epoch)
        rows.append({**row, **dict.fromkeys(bad, math.nan)} if bad else row)
    result = ResultRows(rows, skipped, infinite, info.st_mtime)
    _row_cache[path] = (key, result)
    return result


def printable(text: str) -> str:
    """Text that can be written anywhere (HTML, JSON, UTF-8). A file or folder name that is no valid
    UTF-8 arrives with surrogates in it (os.fsdecode), which no encoder takes: its bytes are shown
    escaped instead (b"bad\\xff" as `bad\\xff`), and other lone surrogates as `\\ud800`."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte (a JSON escape such as "\\ud800")
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_or_none(text: str):
    """Parsed JSON, or None for text that is not JSON: cut short, nested too deeply for the parser, an
    integer too long to convert."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None


def is_count(value) -> bool:
    """A positive whole number that fits the tables' 64-bit integers (an epoch, an epoch count)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value < 2**63


def read_json(path: Location, default=None):
    """A JSON file, or `default` when it is absent. Raises `DamagedFile` when it is there but is no
    file or not JSON (a half-written record: the writers here replace files whole)."""
    opened = open_record(path)
    if opened is None:
        return default
    handle, _ = opened
    with handle:
        try:
            data = handle.read()
        except OSError as err:
            raise DamagedFile(f"{path.name}: cannot be read ({err.strerror or err})") from None
    value = _json_or_none(data.decode("utf-8", errors="replace"))
    if value is None and data.strip() != b"null":
        raise DamagedFile(f"{path.name}: not JSON" + (" (empty)" if not data.strip() else ""))
    return value


def read_progress(folder: str | Path) -> InEpochProgress | None:
    """A trial's position inside its epoch, from its `progress.json`; None when there is none to go by:
    no file yet, or one that is not a regular file, not such a record, or cannot be read. Never raises:
    the position is a live hint, and the next write replaces a damaged one."""
    try:
        opened = open_record(location(folder) / PROGRESS_FILE)
    except DamagedFile:
        return None
    if opened is None:
        return None
    handle, _ = opened
    with handle:
        try:
            data = handle.read(PROGRESS_MAX_BYTES + 1)
        except OSError:
            return None
    return InEpochProgress.parse(data) if len(data) <= PROGRESS_MAX_BYTES else None


def read_errors(folder: Location) -> tuple[int, str, float]:
    """(failures, last failure's first line, error file's modification time) from Tune's error.txt.
    Raises `DamagedFile` when error.txt is there but is no file."""
    opened = open_record(folder / ERROR_FILE)
    if opened is None:
        return 0, "", math.nan
    handle, info = opened
    with handle:
        try:
            text = handle.read().decode("utf-8", errors="replace")
        except OSError as err:
            raise DamagedFile(f"{ERROR_FILE}: cannot be read ({err.strerror or err})") from None
    blocks = [b for b in text.split("Failure # ") if b.strip()]
    last = blocks[-1].split("\n", 1)[1].strip() if blocks and "\n" in blocks[-1] else ""
    message = next((line for line in reversed(last.splitlines()) if line.strip()), "")
    return len(blocks), message[:300], info.st_mtime


def read_trial(folder: Location) -> TrialFiles:
    """One trial folder; each record that cannot be read is noted in `damaged` and read as absent."""
    damaged = []

    def attempt(read, default):
        try:
            return read()
        except DamagedFile as err:
            damaged.append(str(err))
            return default
    results = attempt(lambda: read_result_rows(folder / RESULT_FILE), ResultRows([]))
    params = attempt(lambda: read_json(folder / PARAMS_FILE), None)
    if params is not None and not isinstance(params, dict):
        damaged.append(f"{PARAMS_FILE}: not a mapping (got {type(params).__name__})")
        params = None
    if params is None and results.rows:
        params = results.rows[-1].get("config")
    failures, error, error_mtime = attempt(lambda: read_errors(folder), (0, "", math.nan))
    updated = max((t for t in (results.mtime, error_mtime, _mtime(folder / PARAMS_FILE)) if not math.isnan(t)),
                  default=math.nan)
    # Tune appends to error.txt at each failure; a trial retried from its checkpoint reports again
    # afterwards, so only a failure newer than the last report leaves it errored.
    failed_last = failures > 0 and (math.isnan(results.mtime) or error_mtime >= results.mtime)
    return TrialFiles(folder=folder, params=params if isinstance(params, dict) else None, rows=results.rows,
                      failures=failures, error=error, failed_after_last_report=failed_last,
                      skipped_lines=results.skipped, last_update=updated, damaged=damaged,
                      infinite=results.infinite)


def _mtime(path: Location) -> float:
    """A regular file's modification time; NaN when it is absent or no file."""
    try:
        info = path.stat()
    except OSError:
        return math.nan
    return info.st_mtime if stat.S_ISREG(info.st_mode) else math.nan


def anything_at(path: Location) -> bool:
    """Whether anything is at `path`; something that cannot even be looked at counts (it is damaged)."""
    try:
        path.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def trial_folders(folder: Location) -> list[Location]:
    """Tune's trial folders: any sub-folder holding a params.json or result.json (whatever they are)."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        raise ExperimentError(f"{folder}: no such folder (it was removed while being read)") from None
    except OSError as err:
        raise ExperimentError(f"{folder}: cannot be read ({err.strerror or err})") from None
    trials = [p for p in entries if _is_folder(p) and (anything_at(p / PARAMS_FILE) or anything_at(p / RESULT_FILE))]
    return sorted(trials, key=lambda p: p.name)


def _is_folder(path: Location) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long, a loop of links: not a trial folder
        return False


def check_experiment_folder(folder: Location) -> None:
    try:
        info = folder.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise NoExperimentThere(f"{folder}: no such folder") from None
    except OSError as err:
        raise ExperimentError(f"{folder}: cannot be read ({err.strerror or err})") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ExperimentError(f"{folder}: not a folder")
    if anything_at(folder / SETTINGS_FILE) or any(folder.glob(EXPERIMENT_STATE_GLOB)) or trial_folders(folder):
        return
    raise NoExperimentThere(f"{folder}: not an experiment folder (no {SETTINGS_FILE}, no Tune experiment state, "
                          f"no trial folders)")


def read_settings(folder: Location) -> StudySettings | None:
    """`study.json`, read and checked through the one model of it (`results.settings`); None for a plain
    Tune experiment without one."""
    if not anything_at(folder / SETTINGS_FILE):
        return None
    try:
        return StudySettings.load(folder)
    except StudyError as err:
        raise ExperimentError(str(err).removeprefix(f"{SETTINGS_FILE}: ")) from None


def read_asha_stopped(folder: Location) -> set[str]:
    """Trials ASHA stopped on purpose. Raises `DamagedFile` when the record is there but unreadable."""
    stopped = read_json(folder / ASHA_STOPPED_FILE, default=[])
    if not isinstance(stopped, list):
        raise DamagedFile(f"{ASHA_STOPPED_FILE}: not a list of trial ids")
    return {str(t) for t in stopped}
