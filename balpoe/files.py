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
    """Why files cannot be written in `folder` (creating it if needed), or None when they can: a
    probe file is written and removed, which is what a permission bit, a read-only mount, a path
    through a file or a full disk would stop."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        return f"{folder} is a file, not a folder"
    blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, so no folder can be made under it"
    probe = folder / f".write-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("probe")
        probe.unlink()
    except OSError as err:
        return f"{folder} is not writable ({err.strerror or err})"
    return None
