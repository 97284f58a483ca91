"""Optuna storage URLs: their form checked, relative files made absolute, and passwords kept out of
everything printed, recorded or shown.

Storage URLs are what Optuna takes: any SQLAlchemy URL (`postgresql://user@host:5432/db`,
`mysql://…`, `sqlite:////abs/path.db`), or `journal:///abs/path.log` for Optuna's journal file
(`JournalStorage` with `JournalFileBackend`). `shown_url` hides the password of a URL, `hide_password` that
of any text, which also scrubs what a database driver says. Pure string work: no Optuna, no database.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, unquote_plus

CONNECT_TIMEOUT_S = 10
JOURNAL = "journal"
FILE_SCHEMES = ("sqlite", JOURNAL)  # URLs of files: no credentials; an `@` in them is part of a path
SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
URL_START = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*)://")
QUERY_PASSWORD = re.compile(r"(?i)([?&](?:password|pwd)=)([^&]*)")  # in a URL: to the next parameter
QUERY_PASSWORD_IN_TEXT = re.compile(r"(?i)([?&](?:password|pwd)=)[^&\"'\n]*")  # in text: to the line's end
SECRET_SEPARATORS = re.compile(r"[/@ :]")
MIN_SECRET_PIECE = 3


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


def connect_timeout_s(url: str) -> int:
    """The seconds a database server has to answer: the URL's `connect_timeout` when it is 1 to
    `CONNECT_TIMEOUT_S`, else `CONNECT_TIMEOUT_S` (libpq would wait 600 s if told so, and for ever for 0)."""
    query = url.rpartition("@")[2].partition("?")[2]  # after the password, which may hold a `?`
    given = parse_qs(query).get("connect_timeout", [""])[-1]
    return int(given) if given.isdigit() and 0 < int(given) <= CONNECT_TIMEOUT_S else CONNECT_TIMEOUT_S
