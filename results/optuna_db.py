"""What is wrong with an `optuna.db`, said in words, before Optuna meets it.

Optuna (through SQLAlchemy) answers a directory, a file that is not SQLite and a database another
process holds locked with the same unrelated "invalid data in the commit"; these checks use the
standard library's sqlite3 so that the study driver and the readers can name the real cause.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"


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
