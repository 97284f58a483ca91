"""A compact live view of a study (instead of Tune's wall of text): one status line and one line per
running trial, at most every `interval` seconds, with an ETA from the study's own epoch rate."""
from __future__ import annotations

import sys
import time

from ray.tune import Callback

from balpoe.progress import format_duration


class CompactProgress(Callback):
    def __init__(self, settings, interval: float = 15.0, stream=None):
        self.metric, self.mode = settings.metric, settings.mode
        self.planned, self.expected = settings.epochs, settings.expected_trials
        self.interval, self.stream = interval, stream
        self.trials: dict[str, dict] = {}
        self._start_clock()

    def _start_clock(self) -> None:
        self.started, self.epochs_seen, self.last_print = time.monotonic(), 0, 0.0

    def __setstate__(self, state: dict) -> None:
        """Tune pickles callbacks with the experiment; a restored study starts its own clock."""
        self.__dict__.update(state)
        self._start_clock()

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def on_trial_result(self, iteration, trials, trial, result, **info):
        state = self.trials.setdefault(trial.trial_id, {"epoch": 0, "best": None})
        if result.get("epoch", 0) > state["epoch"]:
            self.epochs_seen += result["epoch"] - state["epoch"]
        state["epoch"] = result.get("epoch", state["epoch"])
        value = result.get(self.metric)
        if value is not None and (state["best"] is None or self._better(value, state["best"])):
            state["best"] = value

    def on_trial_error(self, iteration, trials, trial, **info):
        self._print(f"  trial {trial.trial_id} failed; it restarts from its last checkpoint while retries remain")

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
        bests = [(s["best"], tid) for tid, s in self.trials.items() if s["best"] is not None]
        best = (max if self.mode == "max" else min)(bests) if bests else None
        remaining = sum(self.planned - s["epoch"] for tid, s in self.trials.items()
                        if tid in {t.trial_id for t in trials if t.status in ("RUNNING", "PENDING", "PAUSED")})
        remaining += max(0, self.expected - len(trials)) * self.planned
        remaining += sum(self.planned for t in trials if t.status == "PENDING" and t.trial_id not in self.trials)
        elapsed = time.monotonic() - self.started
        rate = self.epochs_seen / elapsed if self.epochs_seen else 0.0
        eta = format_duration(remaining / rate) if rate else "--:--"
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
        best_text = f"best {self.metric} {best[0]:.4f} ({best[1]})" if best else "no results yet"
        self._print(f"[{format_duration(elapsed)}] trials {len(trials)}/{self.expected} ({status}) | {best_text} | "
                    f"ETA {eta}")
        for trial in trials:
            if trial.status == "RUNNING":
                state = self.trials.get(trial.trial_id, {"epoch": 0, "best": None})
                best_value = f"{state['best']:.4f}" if state["best"] is not None else "-"
                self._print(f"    {trial.trial_id}  epoch {state['epoch']:>4}/{self.planned}  "
                            f"{self.metric} best {best_value}")
