"""Experiments as the live page sees them: each folder read once per change of its files, then shared
by every request until the next change.

A folder's fingerprint is the type, inode, size and modification time of every file the reader opens
(`study.json`, `asha_stopped.json`, each trial's `params.json`, `result.json`, `error.txt`) plus the
names in the folder: `stat` calls only, never an `open`. While it holds, the page answers from the
snapshot it read last (looking again at most once a second), and whatever it derives from one (tables,
JSON, figures, the index row) is computed once per snapshot. When it changes, a background thread
reads it again while requests keep getting the last reading, and the new one replaces it once complete.

A snapshot either holds the experiment or says why it cannot be read now (a damaged `study.json`,
anything the reader raises): the page flags that experiment and goes on with the others. A folder that
holds no experiment is remembered the same way, so neither is looked at again before its files change. The reader
itself never blocks on a record that is not a regular file (a named pipe) and notes damaged trial
records in the experiment's `warnings()`.
"""
from __future__ import annotations

import logging
import math
import os
import stat
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillReading
from dataclasses import dataclass, field
from typing import Callable

from .experiment import Experiment, load_experiment
from .storage import Location, StorePath
from .reader import (ASHA_STOPPED_FILE, ERROR_FILE, PARAMS_FILE, RESULT_FILE, SETTINGS_FILE, ExperimentError,
                     check_experiment_folder)

EXPERIMENT_FILES = (SETTINGS_FILE, ASHA_STOPPED_FILE)
TRIAL_FILES = (PARAMS_FILE, RESULT_FILE, ERROR_FILE)
log = logging.getLogger(__name__)


class NotAnExperiment(Exception):
    """The folder is gone, or holds no experiment: the page does not list it."""


class OncePerKey:
    """Values computed once per key, however many threads ask at once; a failure is not kept.

    Not `functools.cache`: it caches one function (each view brings its own `make`) and may compute twice at once."""

    def __init__(self):
        self._values: dict = {}
        self._locks: dict = {}
        self._guard = threading.Lock()

    def get(self, key, make: Callable):
        if key in self._values:
            return self._values[key]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                self._values[key] = make()
            return self._values[key]


class OncePerSecond:
    """The last value made for each key, kept while the clock stays in the same second: the pages show
    times to the second, so within one second a page drawn from the same reading is the same page.

    Not `functools.lru_cache`: it has no expiry, and a page must be drawn again each second."""

    def __init__(self):
        self._values: dict = {}
        self._making = threading.Lock()  # one request draws the page; the others at that moment take it

    def get(self, key, make: Callable, depends_on=None):
        kept = self._kept(key, depends_on)
        if kept is not None:
            return kept[2]
        with self._making:
            kept = self._kept(key, depends_on)
            if kept is None:
                kept = (int(time.time()), depends_on, make())
                self._values[key] = kept
            return kept[2]

    def _kept(self, key, depends_on) -> tuple | None:
        kept = self._values.get(key)
        return kept if kept is not None and kept[0] == int(time.time()) and kept[1] is depends_on else None


@dataclass
class Snapshot:
    """One reading of an experiment folder: the experiment, or why it cannot be read now."""
    fingerprint: tuple
    experiment: Experiment | None
    problem: str = ""
    pending: bool = False               # a placeholder: the folder's first reading is under way
    not_an_experiment: bool = False     # the folder holds no experiment (the page does not list it)
    views: OncePerKey = field(default_factory=OncePerKey)
    pages: OncePerSecond = field(default_factory=OncePerSecond)
    checked: float = -math.inf          # time.monotonic() when the fingerprint last matched the folder

    def view(self, key, make: Callable):
        """What the page derives from this reading (a table, its JSON, a figure), computed once."""
        return self.views.get(key, make)

    def page(self, key, make: Callable) -> str:
        """A page drawn from this reading, drawn at most once a second."""
        return self.pages.get(key, make)


def file_state(path: str) -> tuple:
    """(type, inode, size, mtime) of a file, () when absent, ("error", errno) when it cannot be looked at."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ()
    except OSError as err:
        return ("error", err.errno)
    return stat.S_IFMT(info.st_mode), info.st_ino, info.st_size, info.st_mtime_ns


def fingerprint(folder: Location) -> tuple:
    """Every name in the folder, with the state of each file the reader would open there and in its
    sub-folders (the trials). Raises OSError when the folder cannot be listed. In an object store: the
    size and time of every such object, from one listing."""
    if isinstance(folder, StorePath):
        return store_fingerprint(folder)
    marks = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in EXPERIMENT_FILES:
                marks.append((entry.name, file_state(entry.path)))
            elif _is_folder(entry):
                marks += [(f"{entry.name}/{name}", file_state(os.path.join(entry.path, name))) for name in TRIAL_FILES]
            else:
                marks.append((entry.name, None))
    return tuple(marks)


def store_fingerprint(folder: StorePath) -> tuple:
    files = folder.files_below()
    if not files and not folder.exists():
        raise FileNotFoundError(2, "no such folder", str(folder))
    prefix = folder.path + "/"
    marks = []
    for info in files:
        name = info.path.removeprefix(prefix)
        parts = name.split("/")
        if (len(parts) == 1 and name in EXPERIMENT_FILES) or (len(parts) == 2 and parts[1] in TRIAL_FILES):
            marks.append((name, (info.size, info.mtime_ns)))
        elif len(parts) <= 2:
            marks.append((name, None))
    return tuple(sorted(marks))


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


class Snapshots:
    """The current snapshot of each experiment folder, read again when its fingerprint changes.

    Readings happen in a few background threads, one per folder at a time: while a changed folder is
    read again, requests get the last reading (nobody waits for a re-read), and `prepare` runs on each
    new reading before it replaces the old one (the page draws its figures there). A folder's first
    reading is shown as soon as it is read, and prepared after. `prepare` runs in a thread of its own,
    so no reading ever queues behind the drawing of figures. Only a folder never read before makes a
    request wait: at most `wait_s` seconds (None: until it is read), then it gets a placeholder
    (`pending`). A snapshot checked less than `recheck_s` ago is served without looking at the files
    again, and by one request at a time (the others meanwhile get the current one): under a burst of
    requests a folder is looked at once a second, not once a request; that holds for a folder that
    holds no experiment, and for one that cannot be read, too."""

    def __init__(self, load: Callable[[Location], Experiment] = load_experiment, recheck_s: float = 1.0,
                 prepare: Callable[[Snapshot], None] | None = None, readers: int = 2):
        self._load = load
        self._prepare = prepare
        self.recheck_s = recheck_s
        self._current: dict[Location, Snapshot] = {}
        self._reading: dict[Location, Future] = {}
        self._looking: set[Location] = set()  # folders whose files a request is looking at now
        self._guard = threading.Lock()
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="experiment-reader")
        self._drawer = ThreadPoolExecutor(1, thread_name_prefix="experiment-drawer")  # figures: one at a time

    def get(self, folder: Location, wait_s: float | None = None) -> Snapshot:
        """The current snapshot of `folder`; raises NotAnExperiment when it is gone or holds no experiment."""
        snapshot = self._current_or_read(folder, wait_s)
        if snapshot.not_an_experiment:
            raise NotAnExperiment(folder)
        return snapshot

    def _current_or_read(self, folder: Location, wait_s: float | None) -> Snapshot:
        start = time.monotonic()
        current = self._current.get(folder)
        if current is not None:
            if start - current.checked < self.recheck_s:
                return current
            with self._guard:
                if folder in self._looking:
                    return current  # another request looks at its files now: one look, however many ask
                self._looking.add(folder)
        try:
            marks = self._fingerprint(folder)
        finally:
            if current is not None:
                with self._guard:
                    self._looking.discard(folder)
        with self._guard:
            current = self._current.get(folder)  # perhaps a reading made meanwhile
            if current is not None:
                current.checked = start  # unchanged, or a new reading is under way: look again in a second
                if current.fingerprint == marks:
                    return current
            reading = self._reading.get(folder)
            if reading is None:
                reading = self._readers.submit(self._read_and_keep, folder, marks, start)
                self._reading[folder] = reading
        if current is not None:
            return current  # the last reading, while the new one is made
        try:
            return reading.result(timeout=wait_s)
        except StillReading:
            return Snapshot(marks, None, pending=True)

    def keep_only(self, folders: set[Location]) -> None:
        """Forget folders that are gone (the index lists what is there now)."""
        with self._guard:
            for folder in set(self._current) - folders:
                self._current.pop(folder, None)

    def _read_and_keep(self, folder: Location, marks: tuple, start: float) -> Snapshot:
        try:
            snapshot = self._read(folder, marks)
        except BaseException:
            with self._guard:
                self._reading.pop(folder, None)
            raise
        snapshot.checked = start
        last = self._current.get(folder)
        if snapshot.experiment is not None and last is not None and last.experiment is not None:
            self._drawer.submit(self._prepare_and_keep, folder, snapshot)  # shown once its figures are drawn
        else:
            self._keep(folder, snapshot)  # a first reading is shown at once, and its figures drawn next
            if snapshot.experiment is not None:
                self._drawer.submit(self._prepared, snapshot)
        return snapshot

    def _keep(self, folder: Location, snapshot: Snapshot) -> None:
        with self._guard:
            self._current[folder] = snapshot
            self._reading.pop(folder, None)

    def _prepare_and_keep(self, folder: Location, snapshot: Snapshot) -> None:
        try:
            self._prepared(snapshot)
        finally:
            self._keep(folder, snapshot)

    def _prepared(self, snapshot: Snapshot) -> None:
        if self._prepare is not None and snapshot.experiment is not None:
            try:
                self._prepare(snapshot)
            except Exception:  # what was not prepared is made on request, where its error shows
                log.exception("cannot prepare the views of %s", snapshot.experiment.path)

    @staticmethod
    def _fingerprint(folder: Location) -> tuple:
        try:
            return fingerprint(folder)
        except OSError:
            if not folder.is_dir():
                raise NotAnExperiment(folder) from None
            return (("error",),)  # listed but not readable: the reading below says why

    def _read(self, folder: Location, marks: tuple) -> Snapshot:
        try:
            check_experiment_folder(folder)
        except ExperimentError as err:
            return Snapshot(marks, None, str(err), not_an_experiment=True)
        try:
            return Snapshot(marks, self._load(folder))
        except Exception as err:
            if not folder.is_dir():  # removed while it was read
                return Snapshot(marks, None, "removed while it was read", not_an_experiment=True)
            return Snapshot(marks, None, problem(err, folder))


def problem(err: Exception, folder: Location) -> str:
    """Why an experiment cannot be read, in a line for its row and its page."""
    if isinstance(err, ExperimentError):
        return str(err)
    if isinstance(err, OSError):
        return f"{err.filename or folder}: {err.strerror or err}"
    # a case the reader does not know yet: one experiment must not take down the page; the log says where
    log.exception("cannot read the experiment %s", folder)
    return f"cannot be read ({type(err).__name__}: {err})"
