"""Writing files so that an interrupt, a crash or a full disk never leaves a half-written one in place,
and finding out that a folder cannot be written before any expensive work starts."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

STAGING_PREFIX = ".incoming-"
MAX_RECORD_BYTES = 16 << 20  # our JSON records (an evaluation, a manifest, a run's config) are far smaller


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` then rename onto `path`. Whatever stops the write (Ctrl-C, SIGTERM, a full disk)
    removes the partial temporary file and leaves an earlier `path` untouched."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.filename is None and err.errno is not None:  # a write through a handle names no file
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_folder(folder: str | Path, write: Callable[[Path], None], last: str, stale: Iterable[str] = ()) -> None:
    """Replace a folder's contents so that it is either as before or complete, never half new.
    `write(staging)` builds the new files in a hidden folder inside `folder`; only when it returns are
    they moved in (renames, which need no space), `last` (the file whose presence says the folder is
    complete: a report's index.html, an export's manifest) removed first and moved in last, and the
    names in `stale` that the new contents lack removed. Whatever stops `write` (Ctrl-C, a full disk, an
    error) removes the staging folder, and any folders made for `folder`, and is raised again. A
    staging folder left by a process killed outright is removed by the next call."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not os.path.lexists(p)]
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(STAGING_PREFIX + "*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        write(staging)
        new = sorted(p.relative_to(staging) for p in staging.rglob("*") if p.is_file())
        (folder / last).unlink(missing_ok=True)  # from here on the folder reads as cut short until `last` is back
        for name in set(stale) - {p.as_posix() for p in new}:
            (folder / name).unlink(missing_ok=True)
        for relative in new:
            if relative != Path(last):
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / relative, folder / relative)
        os.replace(staging / last, folder / last)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for made in created:  # deepest first; stops at the first that is not empty
            try:
                made.rmdir()
            except OSError:
                break
        raise
    shutil.rmtree(staging, ignore_errors=True)


def read_small_json(path: str | Path) -> Any:
    """What a regular file of at most MAX_RECORD_BYTES holds as JSON, or None when it is absent, not a
    regular file (never opened, so a named pipe is not waited on), larger, or not JSON: how a command
    tells a record it wrote itself, which it may replace, from a file it must leave alone."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return None
        return json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None


def writable_folder_problem(folder: str | Path) -> str | None:
    """Why files cannot be written in `folder`, or None when they can: a probe file is written and
    removed, which is what a permission bit, a read-only mount, a path through a file, a name too long
    or a full disk would stop. Folders the probe had to create are removed again, so a run that stops
    later for another reason leaves nothing behind."""
    try:
        folder = Path(folder).expanduser()
    except RuntimeError:  # "~user" that names no user
        return f"{folder}: '~' names no home directory here"
    created = []
    try:
        if folder.exists() and not folder.is_dir():
            return f"{folder} is a file, not a folder"
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, so no folder can be made under it"
        created = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{uuid.uuid4().hex}"
        try:
            probe.write_text("probe")
        finally:  # an interrupt between the write and the removal leaves no probe behind
            probe.unlink(missing_ok=True)
    except OSError as err:
        return f"{folder} is not writable ({err.strerror or err})"
    finally:
        for made in created:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
    return None


def os_error_line(err: OSError) -> str:
    """`path: reason` when the error names a file; the error's own words otherwise (a store's fault)."""
    if err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err) or type(err).__name__
