"""Optuna's record of a search: where it is (an `optuna.db` in the experiment folder, or the study's
`--optuna-storage` URL), how to open it within a bounded time, and what is wrong with it, said in words.

Optuna (through SQLAlchemy) answers a directory, a file that is not SQLite and a database another
process holds locked with the same unrelated "invalid data in the commit"; `optuna_db_problem` uses the
standard library's sqlite3 so that the study driver and the readers can name the real cause. A database
server that does not answer would keep a driver waiting for minutes; `open_storage` gives up after
`CONNECT_TIMEOUT_S` and names the cause (refused, timed out, wrong password, no such database).

Storage URLs are what Optuna takes: any SQLAlchemy URL (`postgresql://user@host:5432/db`,
`mysql://…`, `sqlite:////abs/path.db`), or `journal:///abs/path.log` for Optuna's journal file
(`JournalStorage` with `JournalFileBackend`). Passwords never appear in what is printed, recorded or shown:
`shown_url` for a URL, `hide_password` for any text, which also scrubs what a database driver says.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, unquote_plus

SQLITE_HEADER = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 10
LOCK_WAIT_S = 2.0  # how long a journal's lock may be held before it is taken for a dead driver's
JOURNAL = "journal"
FILE_SCHEMES = ("sqlite", JOURNAL)  # URLs of files: no credentials; an `@` in them is part of a path
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
URL_START = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*)://")
QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|pwd)=)([^&]*)")  # in a URL: to the next parameter
QUERY_PASSWORD_IN_TEXT = re.compile(r"(?i)([?&](?:password|pwd)=)[^&\"'\n]*")  # in text: to the line's end
SECRET_SEPARATORS = re.compile(r"[/@ :]")
MIN_SECRET_PIECE = 3
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


def _userinfo_end(url: str, start: int) -> int | None:
    """Where the userinfo of the URL whose `://` ends at `start` ends (its last `@`), or None when it has no
    password. The userinfo runs to the last `@`, since a password may hold `/`, ` `, `:` and even `@`."""
    at = url.rfind("@", start)
    return at if at > start and ":" in url[start:at] else None


def _hide_userinfo(line: str) -> str:
    """Each URL's password in `line` written `***`; the user name stays (`postgresql://me:***@host/db`)."""
    shown, position = [], 0
    while (match := URL_START.search(line, position)) is not None:
        start = match.end()
        end = None if match.group(1).split("+")[0].lower() in FILE_SCHEMES else _userinfo_end(line, start)
        if end is None:
            shown.append(line[position:start])
            position = start
            continue
        shown.append(line[position:start] + line[start:end].split(":", 1)[0] + ":***")
        position = end
    return "".join(shown) + line[position:]


def shown_url(url: str) -> str:
    """`url` as it may be printed, recorded or shown on a page: its password, and a `password=` query
    parameter, written `***`."""
    return QUERY_PASSWORD.sub(r"\1***", _hide_userinfo(url))


def secrets_of(url: str) -> list[str]:
    """Every form in which a message may quote the passwords of `url`, longest first: each as written and
    URL-decoded, and their pieces of 3 characters or more between `/`, `@`, ` ` and `:` (a driver that read
    an unencoded `@` as the host's says `failed to resolve host 'ssw0rd@db'`)."""
    match = URL_START.match(url)
    if match is None or match.group(1).split("+")[0].lower() in FILE_SCHEMES:
        return []
    end = _userinfo_end(url, match.end())
    passwords = [url[match.end():end].split(":", 1)[1]] if end is not None else []
    passwords += [value for _, value in QUERY_PASSWORD.findall(url)]
    forms = {form for password in passwords for form in (password, unquote(password), unquote_plus(password))
             if form}
    pieces = {piece for form in forms for piece in SECRET_SEPARATORS.split(form) if len(piece) >= MIN_SECRET_PIECE}
    return sorted(forms | pieces, key=len, reverse=True)


def hide_password(text: str, url: str | None = None) -> str:
    """`text` with no password in it, for every line that is printed, recorded or shown on a page. Given the
    storage `url` the text is about (a message of its database driver, of SQLAlchemy or Optuna), every form
    of that URL's password goes (`secrets_of`); without one, the password of each URL in the text, by its
    shape: everything between `://` and the last `@` on the line (`postgresql://me:***@host/db`)."""
    if url:
        text = text.replace(url, shown_url(url))
        for secret in secrets_of(url):
            text = text.replace(secret, "***")
        return text
    return "\n".join(QUERY_PASSWORD_IN_TEXT.sub(r"\1***", _hide_userinfo(line)) for line in text.split("\n"))


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
    userinfo_end = None if scheme.split("+")[0] in FILE_SCHEMES else _userinfo_end(url, len(scheme) + 3)
    if userinfo_end is not None and "@" in url[:userinfo_end].split(":", 2)[2]:
        return (f"the password in {shown_url(url)} holds an '@', which SQLAlchemy would read as the host's; "
                f"write it as %40 (percent-encode the password)")
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
    return f"optuna-dashboard {shlex.quote(str(journal) if journal else shown_url(url))}"


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
        return _journal(journal, create, shown)
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


def connect_timeout_s(url: str) -> int:
    """The seconds a database server has to answer: the URL's `connect_timeout` when it is 1 to
    `CONNECT_TIMEOUT_S`, else `CONNECT_TIMEOUT_S` (libpq would wait 600 s if told so, and for ever for 0)."""
    query = url.rpartition("@")[2].partition("?")[2]  # after the password, which may hold a `?`
    given = parse_qs(query).get("connect_timeout", [""])[-1]
    return int(given) if given.isdigit() and 0 < int(given) <= CONNECT_TIMEOUT_S else CONNECT_TIMEOUT_S


def _journal(path: Path, create: bool, shown: str):
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
