"""Writing files so that an interrupt, a crash or a full disk never leaves a half-written one in place,
and finding out that a folder cannot be written before any expensive work starts."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """`write(tmp)` then rename onto `path`. Whatever stops the write (Ctrl-C, SIGTERM, a full disk)
    removes the partial temporary file and leaves an earlier `path` untouched."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
        probe.write_text("probe")
        probe.unlink()
    except OSError as err:
        return f"{folder} is not writable ({err.strerror or err})"
    finally:
        for made in created:  # deepest first
            try:
                made.rmdir()
            except OSError:
                break
    return None
