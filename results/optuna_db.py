"""Optuna's record of a search: where it is (an `optuna.db` in the experiment folder, or the study's
`--optuna-storage` URL), how to open it within a bounded time, and what is wrong with it, said in words.

Optuna (through SQLAlchemy) answers a directory, a file that is not SQLite and a database another
process holds locked with the same unrelated "invalid data in the commit"; `optuna_db_problem` uses the
standard library's sqlite3 so that the study driver and the readers can name the real cause. A database
server that does not answer would keep a driver waiting for minutes; `open_storage` gives up after
`CONNECT_TIMEOUT_S` and names the cause (refused, timed out, wrong password, no such database).

Storage URLs are what Optuna takes: any SQLAlchemy URL (`postgresql://user@host:5432/db`,
`mysql://…`, `sqlite:////abs/path.db`), or `journal:///abs/path.log` for Optuna's journal file
(`JournalStorage` with `JournalFileBackend`). Passwords never appear in what is printed: `hide_password`.
"""
from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 10
JOURNAL = "journal"
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^\s/]*(@)")  # to the host's @
QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|pwd)=)[^&\s\"']*")
DRIVER_EXTRAS = {"psycopg": "balpoe-study[postgres]"}


class StorageError(ValueError):
    """An Optuna storage that cannot be used; the message names it (password hidden) and the cause."""


def hide_password(text: str) -> str:
    """`text` with the password of every URL in it written `***` (`postgresql://me:***@host/db`, and a
    `password=` query parameter), for every line that is printed or shown on a page."""
    return QUERY_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1***\2", text))


def scheme_of(url: str) -> str | None:
    match = SCHEME.match(url)
    return match.group(1).lower() if match else None


def journal_path(url: str) -> Path | None:
    """The file of a `journal://PATH` URL (`journal:///abs/file.log`), else None."""
    return Path(url.split("://", 1)[1]) if scheme_of(url) == JOURNAL else None


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///PATH` URL (four slashes for an absolute path, as SQLAlchemy writes it), else None."""
    scheme = scheme_of(url)
    if scheme is None or scheme.split("+")[0] != "sqlite":
        return None
    path = url.split("://", 1)[1].removeprefix("/").split("?")[0]
    return Path(path) if path and path != ":memory:" else None


def folder_storage_url(folder: str | Path, file_name: str = "optuna.db") -> str:
    """The default: a SQLite file in the experiment folder."""
    return f"sqlite:///{Path(folder).resolve() / file_name}"


def storage_url_problem(url: str) -> str | None:
    """What is wrong with the form of an Optuna storage URL (None when Optuna may take it); whether the
    database answers is `open_storage`'s to say."""
    scheme = scheme_of(url)
    if scheme is None:
        return (f"{hide_password(url)!r} is no storage URL; give a database URL such as "
                f"postgresql://USER@HOST:5432/DB, or journal:///PATH/optuna.log for a journal file")
    if scheme == JOURNAL:
        return None if str(journal_path(url)) not in ("", ".") else \
            "journal:// needs a file, e.g. journal:///shared/optuna/studies.log"
    if scheme.split("+")[0] == "sqlite" and sqlite_path(url) is None:
        return f"{url} keeps the study in memory, where it dies with the driver; name a file: sqlite:////PATH/optuna.db"
    if scheme in ("s3", "gs", "gcs", "file", "http", "https", "redis", "rediss"):
        return (f"{scheme}:// is no Optuna storage this toolkit opens; give a database URL "
                f"(postgresql://, mysql://, sqlite:///) or journal:///PATH for a journal file on a shared filesystem")
    return None


def resolved_storage_url(url: str) -> str:
    """Relative SQLite and journal paths made absolute, so a resume from another folder finds the same file."""
    if storage_url_problem(url):
        return url  # refused as it was given
    for path, prefix in ((journal_path(url), f"{JOURNAL}://"), (sqlite_path(url), url.split("://")[0] + ":///")):
        if path is not None and not path.is_absolute():
            return prefix + str(path.expanduser().resolve())
    return url


STORE_COPY = {"s3": "aws s3 cp", "gs": "gcloud storage cp"}


def dashboard_command(url: str) -> str:
    """The `optuna-dashboard` command for a storage (a journal is given as its file), password hidden. An
    `optuna.db` in an object store is copied here first: SQLite reads only local files."""
    import shlex
    scheme = scheme_of(url)
    if scheme in STORE_COPY:
        return f"{STORE_COPY[scheme]} {shlex.quote(url)} optuna.db && optuna-dashboard sqlite:///optuna.db"
    journal = journal_path(url)
    return f"optuna-dashboard {shlex.quote(str(journal) if journal else hide_password(url))}"


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
    shown = hide_password(url)
    journal = journal_path(url)
    if journal is not None:
        return _journal(journal, create, shown)
    path = sqlite_path(url)
    if path is not None:
        problem = optuna_db_problem(path, writing=create)
        if problem:
            raise StorageError(problem)
        if not create and not path.exists():
            raise StorageError(f"{path} does not exist")
        if not path.parent.is_dir():
            raise StorageError(f"the folder {path.parent} of {shown} does not exist; create it first")
    kwargs = {}
    if path is None:
        kwargs = {"pool_pre_ping": True, "connect_args": {} if "connect_timeout=" in url
                  else {"connect_timeout": CONNECT_TIMEOUT_S}}
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
        raise StorageError(f"cannot open {shown} ({_cause(err, url)}); check the URL, that the server runs and "
                           f"answers from this machine, and the user's password and rights") from None


def _journal(path: Path, create: bool, shown: str):
    from optuna.storages.journal import JournalFileBackend, JournalStorage
    if not create and not path.exists():
        raise StorageError(f"{path} does not exist")
    if path.is_dir():
        raise StorageError(f"{path} is a directory; journal:// names Optuna's journal file in it, e.g. {path}/optuna.log")
    if not path.parent.is_dir():
        raise StorageError(f"the folder {path.parent} of {shown} does not exist; create it first")
    try:
        problem = _not_a_journal(path)
        if problem:
            raise StorageError(f"{path} is not an Optuna journal file ({problem}); name a new file or Optuna's own")
        storage = JournalStorage(JournalFileBackend(str(path)))
        storage.get_all_studies()  # the whole journal read once: a damaged record fails here
        return storage
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(f"cannot open {path} ({err.strerror or err})") from None
    except ValueError as err:  # a record that is not JSON
        raise StorageError(f"{path} is not an Optuna journal file ({err})") from None


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


def _cause(err: Exception, url: str) -> str:
    """The first line of what the driver said (SQLAlchemy wraps it), never with the password in it."""
    cause = getattr(err, "orig", None) or err
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0].removeprefix("connection failed: ")
    if "timeout expired" in text:
        text = f"no answer within {CONNECT_TIMEOUT_S} s"
    password = re.match(r"[^:]*://[^:/@]*:([^\s/]+)@", url)
    return hide_password(text.replace(password.group(1), "***") if password else text)


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
