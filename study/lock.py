"""One study per experiment folder: an exclusive lock that a study's driver holds while it runs.

Two drivers started together with the same `--name` would both pass the "already exists" check and
write into one folder. The lock is `flock` on `.study.lock` in the experiment folder; the file also
says who holds it (pid, host, start time, command), so a second driver is told whom it collides with.
The kernel drops a `flock` when its process dies, so a driver killed without cleaning up leaves only
the file: the next driver takes the lock and says that it found one left behind — never silently.

An object store has no lock. There a driver holds a lease instead: `.study.lease` names it and is
rewritten every LEASE_RENEW_S seconds, and a second driver refuses to start while the lease is fresher
than LEASE_STALE_S. It is a check, not a lock: two drivers started within a second of each other can
both pass it, and the driver says so when it takes the lease. A lease that cannot be read (damaged, or
the store refused the read) is never guessed to be stale: the driver is refused, told which object to
delete once no driver of the experiment runs. A lease renewed "in the future" (its writer's clock runs
ahead, or it was edited) is judged by the time the store last wrote it, so it holds while it is being
renewed and runs out LEASE_STALE_S after the last renewal, as any other.
"""
from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

from results.settings import StudyError
from results.storage import Location, StorePath, location

LOCK_FILE = ".study.lock"
LEASE_FILE = ".study.lease"
LEASE_RENEW_S = 30.0
LEASE_STALE_S = 120.0


def study_lock(folder: str | Location, name: str):
    """The lock of a local experiment folder, the lease of one in an object store."""
    where = location(folder)
    return StoreLease(where, name) if isinstance(where, StorePath) else StudyLock(where, name)


class StudyLock:
    """`fcntl.flock`, not filelock: the locked file also holds the holder's record, read through the same handle."""

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


class StoreLease:
    """One driver per experiment in an object store, as far as a store allows (see the module's text)."""

    def __init__(self, folder: StorePath, name: str, renew_s: float = LEASE_RENEW_S,
                 stale_s: float = LEASE_STALE_S, clock=time.time):
        self.record, self.name = folder / LEASE_FILE, name
        self.renew_s, self.stale_s, self.clock = renew_s, stale_s, clock
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
        self.stop = threading.Event()
        self.renewer: threading.Thread | None = None

    def __enter__(self) -> "StoreLease":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        held, written = self._read()
        if held:
            now = self.clock()
            age = now - held["renewed"] if held["renewed"] <= now else now - written  # the store's clock
            if age < self.stale_s:
                raise StudyError(f"--name: experiment {self.name!r} is in use by another study driver "
                                 f"({describe(held)}; its lease was renewed {max(0, age):.0f} s ago); wait for it "
                                 f"to end, or pick another --name")
            print(f"note: experiment {self.name!r} was held by a driver whose lease ran out {age:.0f} s ago "
                  f"({describe(held)}); this driver takes it over", file=sys.stderr)
        self._write()
        print(f"note: {self.record.parent} is in an object store, which has no locks: this driver holds a lease "
              f"that it renews every {self.renew_s:g} s, and another driver of experiment {self.name!r} is "
              f"refused while it is fresh; two drivers started at the same moment are not caught",
              file=sys.stderr)
        self.renewer = threading.Thread(target=self._renew, name="study-lease", daemon=True)
        self.renewer.start()

    def _read(self) -> tuple[dict, float]:
        """The lease's record ({} when there is none) and when the store wrote it; StudyError when it is
        there but cannot be read as a lease."""
        try:
            opened = self.record.open_record()
            if opened is None:
                return {}, 0.0
            handle, info = opened
            with handle:
                held = json.loads(handle.read())
        except (OSError, ValueError) as err:  # the store's fault (StoreError), or not JSON
            self._refuse_unreadable(err.strerror if isinstance(err, OSError) else "not JSON")
        renewed = held.get("renewed") if isinstance(held, dict) else None
        if not isinstance(renewed, (int, float)) or isinstance(renewed, bool) or not math.isfinite(renewed):
            self._refuse_unreadable("no renewal time in it")
        return held, info.st_mtime

    def _refuse_unreadable(self, why: str) -> NoReturn:
        raise StudyError(f"--name: experiment {self.name!r} has a lease that cannot be read ({why}), so whether "
                         f"another driver holds it is unknown: {self.record}; once no driver of it runs, delete "
                         f"that object and start again") from None

    def _write(self) -> None:
        try:
            self.record.write_text(json.dumps({**self.holder, "renewed": self.clock()}))
        except OSError as err:
            raise StudyError(f"--storage-path: cannot write {self.record} ({err.strerror or err})") from None

    def _renew(self) -> None:
        while not self.stop.wait(self.renew_s):
            try:
                self._write()
            except StudyError as err:  # the store is away for now: try again at the next renewal
                print(f"warning: {err}", file=sys.stderr, flush=True)

    def release(self) -> None:
        if self.renewer is None:
            return
        self.stop.set()
        self.renewer.join()
        self.renewer = None
        try:
            self.record.unlink(missing_ok=True)
        except OSError:  # the lease runs out by itself
            pass


def describe(holder: dict) -> str:
    if holder.get("unreadable") or not holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}: "
            f"{holder.get('command', '')}")
