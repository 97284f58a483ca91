"""Opening Optuna's record of a search within a bounded time, and saying in words what is wrong with it.

Optuna (through SQLAlchemy) answers a directory, a file that is not SQLite and a database another
process holds locked with the same unrelated "invalid data in the commit"; `optuna_db_problem` uses the
standard library's sqlite3 so that the study driver and the readers can name the real cause. A database
server that does not answer would keep a driver waiting for minutes; `open_storage` gives up after
`storage_urls.CONNECT_TIMEOUT_S` and names the cause (refused, timed out, wrong password, no such database). The URLs
themselves, and hiding their passwords, are `storage_urls`'s.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path

from .storage_urls import connect_timeout_s, hide_password, journal_path, shown_url, sqlite_path

SQLITE_HEADER = b"SQLite format 3\x00"
LOCK_WAIT_S = 2.0  # how long a journal's lock may be held before it is taken for a dead driver's
DRIVER_EXTRAS = {"psycopg": "balpoe-study[postgres]"}
GONE_SQLSTATES = ("3D000", "42P01")  # PostgreSQL: no such database; no such table (Optuna's dropped)
# what is said without an SQLSTATE: PostgreSQL refusing a connection to a dropped database, SQLite
GONE_MESSAGES = re.compile(r'database ".*" does not exist|no such table')


class StorageError(ValueError):
    """An Optuna storage that cannot be used; the message names it (password hidden) and the cause. `gone`:
    why the database, its Optuna tables or the file is not there, when that is the cause (not answering is not)."""

    def __init__(self, message: str, gone: str | None = None):
        super().__init__(message)
        self.gone = gone


@contextlib.contextmanager
def open_storage(url: str, create: bool = True):
    """The Optuna storage at `url`, closed again on exit. `create`: make Optuna's tables or journal file if
    absent (a study driver); readers never create anything. Raises `StorageError` naming the cause."""
    storage = storage_at(url, create)
    try:
        yield storage
    finally:
        close_storage(storage)


def close_storage(storage) -> None:
    """Give back a database storage's connections (a journal file holds none open)."""
    engine = getattr(storage, "engine", None)
    if engine is not None:
        storage.remove_session()
        engine.dispose()


def storage_at(url: str, create: bool = True):
    """The Optuna storage at `url`, left open (the searcher holds it for the whole study); see `open_storage`."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = shown_url(url)
    journal = journal_path(url)
    if journal is not None:
        return _open_journal(journal, create, shown)
    path = sqlite_path(url)
    if path is not None:
        problem = optuna_db_problem(path, writing=create)
        if problem:
            raise StorageError(problem)
        if not create and not path.exists():
            raise StorageError(f"{path} does not exist", gone=f"{path} does not exist")
        if not path.parent.is_dir():
            raise StorageError(f"the folder {path.parent} of {shown} does not exist; create it first")
    kwargs = {}
    if path is None:  # the URL's own connect_timeout may shorten the wait, never lengthen it
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": connect_timeout_s(url)}}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create)
        optuna.get_all_study_names(storage)  # the first query: a database without Optuna's tables fails here
        return storage
    except ImportError as err:
        missing = getattr(err.__cause__, "name", None) or "its driver"
        extra = DRIVER_EXTRAS.get(missing)
        hint = f"pip install '{extra}'" if extra else f"pip install {missing}"
        raise StorageError(f"{shown} needs the Python package {missing}, which is not installed here; {hint}") from None
    except Exception as err:  # SQLAlchemy's, the driver's and Optuna's own errors, each named by its first line
        cause = driver_message(err, url)
        raise StorageError(f"cannot open {shown} ({cause}); check the URL, that the server runs and answers from "
                           f"this machine, and the user's password and rights",
                           gone=cause if is_gone(err) else None) from None


def _open_journal(path: Path, create: bool, shown: str):
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    if not create and not path.exists():
        raise StorageError(f"{path} does not exist", gone=f"{path} does not exist")
    if path.is_dir():
        raise StorageError(f"{path} is a directory; journal:// names Optuna's journal file in it, e.g. {path}/optuna.log")
    if path.exists() and not path.is_file():  # a pipe would be waited on, and a device written to
        raise StorageError(f"{path} is not a regular file (a named pipe or a device?); journal:// names Optuna's "
                           f"journal file")
    if not path.parent.is_dir():
        raise StorageError(f"the folder {path.parent} of {shown} does not exist; create it first")
    if create:
        _check_journal_lock(path)
    try:
        problem = _not_a_journal(path)
        if problem:
            raise StorageError(f"{path} is not an Optuna journal file ({problem}); name a new file or Optuna's own")
        damage = _cut_short(path) if create else None
        if damage:
            raise StorageError(f"{path} ends with {damage} (a driver died while writing it); remove that line, or "
                               f"restore the file from a copy")
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # the whole journal read once: a damaged record fails here
        return storage
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"cannot open {path} ({err.strerror or err})") from None
    except ValueError as err:  # a record that is not JSON
        raise StorageError(f"{path} is not an Optuna journal file ({err})") from None


def _check_journal_lock(path: Path) -> None:
    """Optuna holds its journal's lock (`PATH.lock`, a link it makes) only while it appends a record; one that
    stays longer was left by a driver that died while writing, and would keep this one waiting (for ever, when
    the link points nowhere). It is named before the study starts, not removed: another search may be writing."""
    lock = Path(f"{path}.lock")  # the name both of Optuna's journal locks use
    deadline = time.monotonic() + LOCK_WAIT_S
    while os.path.lexists(lock):
        if time.monotonic() > deadline:
            raise StorageError(f"{lock}, Optuna's lock on the journal, has been held for over {LOCK_WAIT_S:g} s: a "
                               f"driver that died while writing left it; remove it if no search is writing to "
                               f"{path}")
        time.sleep(0.05)


def _not_a_journal(path: Path) -> str | None:
    """Why an existing file is no Optuna journal, judged by its first line (each line is one JSON record with
    an `op_code`). Optuna skips a last line it cannot parse (one being written), so it would take a one-line
    file of notes for an empty journal, and append to it."""
    if not path.exists():
        return None
    with path.open("rb") as handle:
        first = handle.readline(1 << 16)
    if not first.strip():
        return None
    try:
        record = json.loads(first)
    except ValueError:
        return f"its first line is not JSON: {first[:20]!r}"
    return None if isinstance(record, dict) and "op_code" in record else "its first line is not one of Optuna's records"


def _cut_short(path: Path) -> str | None:
    """What is wrong with a journal's last record, which a driver died while writing (its lock is free now), or
    None. Optuna reads past such a last line, taking it for one being written, but the next record appended
    after it leaves it in the middle, where every later read of the journal fails."""
    data = path.read_bytes() if path.exists() else b""
    last = data.removesuffix(b"\n").rsplit(b"\n", 1)[-1]
    if not data.endswith(b"\n") and data:
        return f"a record cut short ({last[:20]!r})"
    try:
        json.loads(last or b"{}")
    except ValueError:
        return f"a damaged record ({last[:20]!r})"
    return None


def _root_cause(err: BaseException) -> BaseException:
    """What the database's driver raised: Optuna wraps SQLAlchemy's error in its own ("invalid data in the
    commit, e.g. exceeding max length", whatever happened), and SQLAlchemy wraps the driver's."""
    while getattr(err, "orig", None) is None and err.__cause__ is not None:
        err = err.__cause__
    return getattr(err, "orig", None) or err


def driver_message(err: BaseException, url: str) -> str:
    """The first line of what the driver said, with no trace of the password of `url` in it."""
    cause = _root_cause(err)
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0].removeprefix("connection failed: ")
    if "timeout expired" in text:
        text = f"no answer within {connect_timeout_s(url)} s"
    return hide_password(text, url)


def is_gone(err: BaseException) -> bool:
    """The database or Optuna's tables in it are not there (dropped, or never made), rather than not answering."""
    cause = _root_cause(err)
    return getattr(cause, "sqlstate", None) in GONE_SQLSTATES or GONE_MESSAGES.search(str(cause)) is not None


def storage_fault_text(err: BaseException, url: str) -> str:
    """What an error of Optuna's record in the middle of a study means, in words, without the password."""
    cause = driver_message(err, url)
    file = journal_path(url) or sqlite_path(url)
    if file is not None:
        return f"Optuna's record {file} cannot be written any more ({cause})"
    host = re.split(r"[/?]", shown_url(url).rpartition("@")[2].split("://")[-1])[0]
    return f"the database at {host} {'is gone' if is_gone(err) else 'stopped answering'} ({cause})"


def optuna_db_problem(path: Path, writing: bool = False, wait_s: float = 2.0) -> str | None:
    """Why `path` cannot serve as Optuna's SQLite database, or None when it can (or does not exist yet:
    Optuna creates it). `writing` also asks for the write lock, which another process may hold; readers
    only need what a committed database shows, so they wait `wait_s` for a writer's commit instead."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir():
        return f"{path} is a directory, not Optuna's SQLite database"
    if not path.is_file():
        return f"{path} is not a regular file (Optuna keeps its study in an SQLite file)"
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as err:
        return f"{path} cannot be read ({err.strerror or err})"
    if header and header != SQLITE_HEADER:
        return f"{path} is not an SQLite database (it starts with {header[:8]!r})"
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode={'rw' if writing else 'ro'}", uri=True,
                                     timeout=wait_s, isolation_level=None)
    except sqlite3.Error as err:
        return f"{path} cannot be opened as SQLite ({err})"
    try:
        if writing:
            connection.execute("BEGIN IMMEDIATE")  # the write lock a study needs, released at once
            connection.execute("ROLLBACK")
        damage = connection.execute("PRAGMA quick_check").fetchone()[0]
        if damage != "ok":
            return f"{path} is a damaged SQLite database ({damage})"
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return f"{path} is locked by another process (an Optuna dashboard or a second driver writing to it?)"
        return f"{path} cannot be read as SQLite ({err})"
    except sqlite3.DatabaseError as err:
        return f"{path} is a damaged SQLite database ({err})"
    finally:
        connection.close()
    return None
