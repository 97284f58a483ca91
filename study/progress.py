"""A compact live view of a study (instead of Tune's wall of text): one status line and one line per
running trial, at most every `interval` seconds, with an ETA.

The ETA is the epochs still expected — each unfinished trial to its stop epoch, weighted by the chance
of surviving each ASHA rung ahead of it (1 / reduction factor per rung), plus the trials not started —
times the measured seconds per epoch (median of the last reports), shared among the running trials.
Until an epoch has been timed it says "estimating"."""
from __future__ import annotations

import statistics
import sys
import time
from collections import deque

from ray.tune import Callback

from balpoe.progress import format_duration
from results.stats import asha_rungs

TIMED_EPOCHS = 20  # recent epoch durations the ETA's pace is the median of


class CompactProgress(Callback):
    def __init__(self, settings, interval: float = 15.0, stream=None):
        self.metric, self.mode = settings.metric, settings.mode
        self.planned, self.expected = settings.stop_epoch, settings.expected_trials
        self.rungs = [r for r in asha_rungs(settings.grace_period, settings.reduction_factor, settings.stop_epoch)
                      if r < self.planned] if settings.asha else []
        self.reduction, self.max_failures = settings.reduction_factor, settings.max_failures
        self.interval, self.stream = interval, stream
        self.trials: dict[str, dict] = {}
        self._start_clock()

    def _start_clock(self) -> None:
        self.started, self.last_print = time.monotonic(), 0.0
        self.epoch_seconds: deque[float] = deque(maxlen=TIMED_EPOCHS)

    def expected_remaining(self, epoch: int) -> float:
        """Epochs a trial at `epoch` is still expected to run: to the next rung surely, past each
        further rung with probability 1 / reduction factor."""
        remaining, survive, start = 0.0, 1.0, epoch
        for boundary in [r for r in self.rungs if r > epoch] + [self.planned]:
            remaining += survive * (boundary - start)
            survive /= self.reduction
            start = boundary
        return remaining

    def __setstate__(self, state: dict) -> None:
        """Tune pickles callbacks with the experiment; a restored study starts its own clock (and one
        pickled before the ETA knew ASHA's rungs estimates without them)."""
        self.__dict__.update({"rungs": [], "reduction": 2, **state})
        self._start_clock()

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _state(self, trial) -> dict:
        """What the view knows of a trial; a resumed study starts from Tune's last result of it."""
        if trial.trial_id not in self.trials:
            last = trial.last_result or {}
            self.trials[trial.trial_id] = {"epoch": last.get("epoch", 0), "best": last.get(self.metric)}
        return self.trials[trial.trial_id]

    def on_trial_result(self, iteration, trials, trial, result, **info):
        state = self._state(trial)
        if result.get("epoch", 0) > state["epoch"] and result.get("time_this_iter_s"):
            self.epoch_seconds.append(float(result["time_this_iter_s"]))
        state["epoch"] = result.get("epoch", state["epoch"])
        value = result.get(self.metric)
        if value is not None and (state["best"] is None or self._better(value, state["best"])):
            state["best"] = value

    def on_trial_error(self, iteration, trials, trial, **info):
        retry = (f"it restarts from its last checkpoint while retries remain (--max-failures {self.max_failures})"
                 if self.max_failures else "no retry (--max-failures 0)")
        self._print(f"  trial {trial.trial_id} failed; {retry}")

    def on_step_end(self, iteration, trials, **info):
        now = time.monotonic()
        if now - self.last_print >= self.interval:
            self.last_print = now
            self.print_status(trials)

    def on_experiment_end(self, trials, **info):
        self.print_status(trials)

    def print_status(self, trials) -> None:
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        for trial in trials:
            self._state(trial)
        bests = [(s["best"], tid) for tid, s in self.trials.items() if s["best"] is not None]
        best = (max if self.mode == "max" else min)(bests) if bests else None
        elapsed = time.monotonic() - self.started
        eta = self.eta(trials)
        eta = format_duration(eta) if eta is not None else "estimating"
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        best_text = f"best {self.metric} {best[0]:.4f} ({best[1]})" if best else "no results yet"
        self._print(f"[{format_duration(elapsed)}] trials {len(trials)}/{self.expected} ({status}) | {best_text} | "
                    f"ETA {eta}")
        for trial in trials:
            if trial.status == "RUNNING":
                state = self._state(trial)
                best_value = f"{state['best']:.4f}" if state["best"] is not None else "-"
                self._print(f"    {trial.trial_id}  epoch {state['epoch']:>4}/{self.planned}  "
                            f"{self.metric} best {best_value}")

    def eta(self, trials) -> float | None:
        """Seconds until the study is expected to end; None until an epoch has been timed."""
        if not self.epoch_seconds:
            return None
        unfinished = [t for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED")]
        epochs = sum(self.expected_remaining(self._state(t)["epoch"]) for t in unfinished)
        epochs += max(0, self.expected - len(trials)) * self.expected_remaining(0)
        running = max(1, sum(t.status == "RUNNING" for t in trials))
        return epochs * statistics.median(self.epoch_seconds) / running
