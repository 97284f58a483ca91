"""One study per experiment folder: an exclusive lock that a study's driver holds while it runs.

Two drivers started together with the same `--name` would both pass the "already exists" check and
write into one folder. The lock is `flock` on `.study.lock` in the experiment folder; the file also
says who holds it (pid, host, start time, command), so a second driver is told whom it collides with.
The kernel drops a `flock` when its process dies, so a driver killed without cleaning up leaves only
the file: the next driver takes the lock and says that it found one left behind — never silently.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from results.settings import StudyError

LOCK_FILE = ".study.lock"


class StudyLock:
    def __init__(self, folder: str | Path, name: str):
        self.folder, self.name = Path(folder), name
        self.handle = None
        self.created_folder = False

    def __enter__(self) -> "StudyLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.created_folder = not self.folder.exists()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.folder / LOCK_FILE, "a+", encoding="utf-8")
        except OSError as err:
            raise StudyError(f"--storage-path: cannot create {self.folder / LOCK_FILE} ({err.strerror})") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read()
            self.handle.close()
            self.handle = None
            raise StudyError(f"--name: experiment {self.name!r} is in use by another study driver "
                             f"({describe(holder)}); wait for it to end, or pick another --name") from None
        left = self._read()
        if left:
            print(f"note: experiment {self.name!r} was locked by a driver that ended without releasing it "
                  f"({describe(left)}); that process no longer holds the lock, so this one takes it over",
                  file=sys.stderr)
        self.handle.seek(0)
        self.handle.truncate()
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "command": " ".join([os.path.basename(sys.executable), *sys.argv])}, self.handle)
        self.handle.flush()

    def _read(self) -> dict:
        self.handle.seek(0)
        try:
            holder = json.loads(self.handle.read() or "{}")
        except json.JSONDecodeError:
            return {"unreadable": True}
        return holder if isinstance(holder, dict) else {"unreadable": True}

    def release(self) -> None:
        """Drop the lock and its file; remove the folder too if this study created it and left it empty."""
        if self.handle is None:
            return
        (self.folder / LOCK_FILE).unlink(missing_ok=True)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None
        if self.created_folder and not any(self.folder.iterdir()):
            self.folder.rmdir()


def describe(holder: dict) -> str:
    if holder.get("unreadable") or not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command', '')}")
