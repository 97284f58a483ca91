"""Stopping a study cleanly before its disk is full.

A write that fails for want of space mid-study loses more than itself: Tune retries the trial, the
trial's result history gets holes, and the driver can die before it saves its own state. So the study
stops while there is still room: when free space under the storage path drops below a reserve, the
driver interrupts itself exactly as Ctrl-C does (Tune saves its state; `resume` continues later with
the whole history), and says why.
"""
from __future__ import annotations

import os
import signal
import sys

from ray.tune import Callback

from results.storage import StorePath

from .ray_internals import trial_location
from .settings import free_mb


class DiskGuard(Callback):
    """Interrupts the study (like Ctrl-C) once free space where its trials write drops below
    `reserve_mb`. It asks each trial's folder (Tune places those where the experiment is now, even
    after the folder was moved), so a resumed study checks the right disk; with an object store, the
    disk of the driver's copy of the trial's files."""

    def __init__(self, reserve_mb: float):
        self.reserve_mb = reserve_mb
        self.tripped = False

    def __setstate__(self, state: dict) -> None:
        """Tune pickles callbacks with the experiment: a resumed study checks afresh."""
        self.__dict__.update({**state, "tripped": False})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self.tripped:
            return
        folder = trial_location(trial)
        where = trial.local_path if isinstance(folder, StorePath) else folder  # a store: the driver's own copy
        try:
            free = free_mb(where)
        except (OSError, TypeError, ValueError):  # not a local folder (yet)
            return
        if free < self.reserve_mb:
            self.tripped = True
            print(f"error: --storage-path: only {free:.0f} MB free under {where} (the study keeps "
                  f"{self.reserve_mb:g} MB for checkpoints and its own state, --min-free-mb); stopping the study "
                  f"cleanly: free some space, then resume it", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGUSR1)  # Tune's graceful stop, as for Ctrl-C
