"""A compact live view of a study (instead of Tune's wall of text): one status line and one line per
running trial, at most every `interval` seconds, with an ETA.

Each running trial's line shows the epoch under way and where the trial is inside it, from the
`progress.json` it keeps in its folder (`results.in_epoch`), e.g.
`epoch 3/200  train 45/85 batches  412 img/s  eta 01:23  val_balanced_acc best 0.4123`, or
`stalled 3m10s` instead of the ETA when it has not moved for much longer than its pace.

The study ETA is the epochs still expected — each unfinished trial to its stop epoch, weighted by the
chance of surviving each ASHA rung ahead of it (1 / reduction factor per rung), less the part of the
current epoch each running trial has behind it, plus the trials not started — times the seconds per
epoch (median of the last reports; before the first, estimated from the running trials' in-epoch rate),
shared among the running trials: it counts down between reports. With neither it says "estimating"; past
99 days, "over 99 days" (a damaged record never makes it overflow)."""
from __future__ import annotations

import math
import statistics
import sys
import time
from collections import deque

from ray.tune import Callback

from balpoe.cooldown import cooldown_epochs_after
from balpoe.progress import format_duration
from results.in_epoch import (InEpochProgress, capped, epoch_fraction_done, epoch_pace, format_eta, format_silence,
                              is_current, silence_limit, trial_eta)
from results.reader import read_progress

from .ray_internals import trial_location

TIMED_EPOCHS = 20  # recent epoch durations the ETA's pace is the median of
TRIAL_EPOCHS = 5   # a trial's own recent epoch durations its ETA's pace is the median of


class CompactProgress(Callback):
    def __init__(self, settings, interval: float = 15.0, stream=None):
        self.metric, self.mode = settings.metric, settings.mode
        self.planned, self.expected = settings.stop_epoch, settings.expected_trials
        self.rungs, self.cooldowns = list(settings.asha_rungs), settings.cooldowns
        self.reduction, self.max_failures = settings.reduction_factor, settings.max_failures
        self.interval, self.stream = interval, stream
        self.trials: dict[str, dict] = {}
        self._start_clock()

    def _start_clock(self) -> None:
        self.started, self.last_print = time.monotonic(), 0.0
        self.epoch_seconds: deque[float] = deque(maxlen=TIMED_EPOCHS)

    def expected_remaining(self, epoch: int) -> float:
        """Epochs a trial at `epoch` is still expected to run: to the next rung surely, past each
        further rung with probability 1 / reduction factor; a cool-down rung adds its cool-down."""
        remaining, survive, start = 0.0, 1.0, epoch
        for boundary in [r for r in self.rungs if r > epoch] + [self.planned]:
            remaining += survive * (boundary - start + self.cooldowns.get(boundary, 0))
            survive /= self.reduction
            start = boundary
        return remaining

    def epochs_left(self, trial, position: InEpochProgress | None, pace: float, now: float) -> float:
        """A trial's expected epochs still to train; in its end-of-training evaluation, the time that
        evaluation has left, in epochs (its training is done, whatever epoch it has reported)."""
        reported = self._state(trial)["epoch"]
        if trial.status != "RUNNING":
            return self.expected_remaining(reported)
        if is_current(position, reported) and position.stage == "final":
            left = trial_eta(position, reported, self.planned, pace, now)
            return 0.0 if math.isnan(left) else left / pace
        return self.expected_remaining(reported) - epoch_fraction_done(position, reported, pace, now)

    def __setstate__(self, state: dict) -> None:
        """Tune pickles callbacks with the experiment; a restored study starts its own clock (and one
        pickled before the ETA knew ASHA's rungs estimates without them)."""
        self.__dict__.update({"rungs": [], "reduction": 2, "cooldowns": {}, **state})
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
        state = self.trials[trial.trial_id]
        state.setdefault("seconds", deque(maxlen=TRIAL_EPOCHS))  # (absent from a view pickled before)
        state.setdefault("heard_at", 0.0)  # time.time() of its last start or report
        return state

    def on_trial_result(self, iteration, trials, trial, result, **info):
        state = self._state(trial)
        seconds = result.get("time_this_iter_s")
        if result.get("epoch", 0) > state["epoch"] and isinstance(seconds, (int, float)) and 0 < seconds < math.inf:
            self.epoch_seconds.append(float(seconds))
            state["seconds"].append(float(seconds))
        state["epoch"] = result.get("epoch", state["epoch"])
        state["heard_at"] = time.time()
        value = result.get(self.metric)
        if value is not None and (state["best"] is None or self._better(value, state["best"])):
            state["best"] = value

    def on_trial_start(self, iteration, trials, trial, **info):
        """A (re)started trial is not stalled while it loads: a progress file left by an earlier run of it
        is older than this."""
        self._state(trial)["heard_at"] = time.time()

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

    def positions(self, trials) -> dict[str, InEpochProgress]:
        """The in-epoch position of each running trial that has one, read from its folder now."""
        found = {}
        for trial in trials:
            placed = trial.status == "RUNNING" and getattr(trial, "storage", None) is not None
            position = read_progress(trial_location(trial)) if placed else None
            if position is not None:
                found[trial.trial_id] = position
        return found

    def print_status(self, trials, now: float | None = None) -> None:
        """`now`: wall-clock seconds (time.time()), the clock the trials' progress files keep."""
        now = time.time() if now is None else now
        counts: dict[str, int] = {}
        for trial in trials:
            counts[trial.status] = counts.get(trial.status, 0) + 1
        for trial in trials:
            self._state(trial)
        bests = [(s["best"], tid) for tid, s in self.trials.items() if s["best"] is not None]
        best = (max if self.mode == "max" else min)(bests) if bests else None
        elapsed = time.monotonic() - self.started
        positions = self.positions(trials)
        eta = self.eta(trials, positions, now)
        eta = format_eta(eta) if eta is not None else "estimating"
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        best_text = f"best {self.metric} {best[0]:.4f} ({best[1]})" if best else "no results yet"
        self._print(f"[{format_duration(elapsed)}] trials {len(trials)}/{self.expected} ({status}) | {best_text} | "
                    f"ETA {eta}")
        for trial in trials:
            if trial.status == "RUNNING":
                self._print(f"    {trial.trial_id}  {self.trial_line(trial, positions.get(trial.trial_id), now)}")

    def trial_line(self, trial, position: InEpochProgress | None, now: float) -> str:
        """`epoch 3/200  train 45/85 batches  412 img/s  eta 01:23  <metric> best 0.4123`: the epoch under
        way (the reported ones + 1), its position, and the trial's ETA to its stop epoch (or how long it
        has been silent when it stalled)."""
        state = self._state(trial)
        reported = state["epoch"]
        best_value = f"{state['best']:.4f}" if state["best"] is not None else "-"
        parts = [f"epoch {min(reported + 1, self.planned):>4}/{self.planned}"]
        if is_current(position, reported):
            parts.append(f"{position.phase_text} {position.done}/{position.total} batches")
            if position.images_per_s is not None:
                parts.append(f"{position.images_per_s:.0f} img/s")
        silent = now - max(position.time, state["heard_at"]) if position is not None else 0.0
        if position is not None and silent > silence_limit(position):
            parts.append(f"stalled {format_silence(silent)}")
        else:
            measured = state["seconds"] or self.epoch_seconds
            eta = trial_eta(position, reported, self.planned,
                            statistics.median(measured) if measured else math.nan, now,
                            cooldown_ahead=cooldown_epochs_after(self.cooldowns, reported))
            if not math.isnan(eta):
                parts.append(f"eta {format_eta(eta)}")
        parts.append(f"{self.metric} best {best_value}")
        return "  ".join(parts)

    def eta(self, trials, positions: dict[str, InEpochProgress] | None = None,
            now: float | None = None) -> float | None:
        """Seconds until the study is expected to end, at most `in_epoch.MAX_ETA_S`; None until a pace is
        known (an epoch timed, or a running trial's in-epoch rate). `positions` as from `positions(trials)`
        (read when not given)."""
        now = time.time() if now is None else now
        positions = self.positions(trials) if positions is None else positions
        pace = statistics.median(self.epoch_seconds) if self.epoch_seconds else math.nan
        if math.isnan(pace):
            estimates = [epoch_pace(p, math.nan) for p in positions.values()]
            estimates = [e for e in estimates if not math.isnan(e)]
            pace = statistics.median(estimates) if estimates else math.nan
        if math.isnan(pace):
            return None
        unfinished = [t for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED")]
        epochs = sum(self.epochs_left(t, positions.get(t.trial_id), pace, now) for t in unfinished)
        epochs += max(0, self.expected - len(trials)) * self.expected_remaining(0)
        running = max(1, sum(t.status == "RUNNING" for t in trials))
        return capped(max(0.0, epochs) * pace / running)
