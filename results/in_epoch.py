"""Where a running trial is inside its epoch, between two reports: the record each trial keeps in
`progress.json` beside its results, and what a reader makes of it — an ETA that counts down between
epoch reports, and whether the trial has stalled.

The study's trainable replaces the record whole (never half-written) at most every `interval_s`
seconds and at each phase change, e.g.

    {"epoch": 4, "epochs": 200, "stage": "epoch", "phase": "train", "done": 45, "total": 85,
     "images_per_s": 412.0, "batches_per_s": 3.2, "train_batches": 85, "train_batches_per_s": 3.2,
     "epoch_started": 1764150000.0, "time": 1764150014.2, "interval_s": 2.0}

`epoch` is the epoch under way (from 1; the trial has reported `epoch - 1`); in `stage` "cooldown" the
epoch just trained, whose cool-down rung is being scored before it is reported; in `stage` "final" (the
end-of-training evaluation) the last one. `phase` is "train" or the split being predicted (val, test,
test_full); `done`/`total` count its batches. Rates are measured since the phase's first batch ended
(null until a second one has); `train_batches*` keep the epoch's training phase through its
validation. Times are wall-clock seconds (`time.time()`): on a cluster, the nodes' clocks must agree.

A record is a live hint written by another process, so every number in it must be finite and in a range
a trial can reach (a rate of 5e-324 batches/s is no measurement: dividing by it overflows); a record that
is not is no position. ETAs are capped at MAX_ETA_S and shown as "over 99 days" past it.
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from balpoe.progress import format_duration

MIN_SILENCE_S = 60.0        # never stalled sooner
SILENT_WRITES = 10          # ... nor before this many of its writes were due
SILENT_BATCHES = 3          # ... nor before this many batches at its pace
PHASE_START_GRACE_S = 600.0  # at a phase boundary the next batch may compile the model (torch.compile on
                             # a CPU: minutes) or wait for a checkpoint and a report
MAX_COUNT = 10**9           # epochs or batches: more than any trial runs
MIN_RATE = 1e-6             # per second: one batch in 11 days; slower is no measurement
MAX_RATE = 1e12             # per second: images or batches, far beyond any device
MAX_CLOCK = 1e11            # wall-clock seconds (the year 5138): later is no time.time()
MAX_INTERVAL_S = 86400.0    # between two writes of the record
MAX_ETA_DAYS = 99
MAX_ETA_S = MAX_ETA_DAYS * 86400.0  # an ETA is capped here, and shown as "over 99 days"


class InEpochProgress(BaseModel):
    """One trial's position in its epoch, as written; anything else in the file is not a position."""
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", allow_inf_nan=False)

    epoch: int = Field(ge=1, le=MAX_COUNT)
    epochs: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    stage: Literal["epoch", "cooldown", "final"]
    phase: str = Field(min_length=1, max_length=40)
    done: int = Field(ge=0, le=MAX_COUNT)
    total: int = Field(ge=1, le=MAX_COUNT)
    images_per_s: float | None = Field(default=None, ge=MIN_RATE, le=MAX_RATE)
    batches_per_s: float | None = Field(default=None, ge=MIN_RATE, le=MAX_RATE)
    train_batches: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    train_batches_per_s: float | None = Field(default=None, ge=MIN_RATE, le=MAX_RATE)
    epoch_started: float = Field(ge=0, le=MAX_CLOCK)
    time: float = Field(ge=0, le=MAX_CLOCK)
    interval_s: float = Field(ge=0, le=MAX_INTERVAL_S)

    @model_validator(mode="after")
    def _done_within_total(self) -> "InEpochProgress":
        if self.done > self.total:
            raise ValueError(f"done {self.done} > total {self.total}")
        return self

    @classmethod
    def parse(cls, data: bytes | str) -> "InEpochProgress | None":
        """The record in `data`, or None when it is not one (damaged, cut short, another format)."""
        try:
            return cls.model_validate_json(data)
        except ValidationError:
            return None

    @property
    def phase_text(self) -> str:
        """`train`, `cool-down train` at a rung's cool-down, `final test_full` in the end-of-training evaluation."""
        return {"final": f"final {self.phase}", "cooldown": f"cool-down {self.phase}"}.get(self.stage, self.phase)

    def describe(self) -> str:
        """`epoch 4/200  train 45/85 batches` (`cool-down train 3/85` at a rung, `final test_full 3/20` at the end)."""
        epoch = f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}"
        return f"{epoch}  {self.phase_text} {self.done}/{self.total} batches"


def silence_limit(position: InEpochProgress) -> float:
    """Seconds without a new record after which the trial counts as stalled: much longer than both its
    writing interval and its pace per batch; longer still at a phase boundary (see PHASE_START_GRACE_S)."""
    limit = max(MIN_SILENCE_S, SILENT_WRITES * position.interval_s)
    if position.done in (0, position.total) or position.batches_per_s is None:
        return max(limit, PHASE_START_GRACE_S)
    return max(limit, SILENT_BATCHES / position.batches_per_s)


def is_current(position: InEpochProgress | None, epochs_run: int) -> bool:
    """Whether the record is about what the trial does after its `epochs_run` reported epochs: the next
    epoch, or the last one's end-of-training evaluation, which comes before its report (an older record
    is left from before the last report, or from a run before a restore)."""
    return position is not None and position.epoch == epochs_run + 1  # the last epoch reports after "final"


def epoch_pace(position: InEpochProgress | None, seconds_per_epoch: float) -> float:
    """Seconds per epoch: the measured ones when there are, else the training phase's batches at its
    in-epoch rate (validation left out: it is short); NaN when neither is known yet."""
    if not math.isnan(seconds_per_epoch) and seconds_per_epoch > 0:
        return seconds_per_epoch
    if position is not None and position.train_batches and position.train_batches_per_s:
        return position.train_batches / position.train_batches_per_s
    return math.nan


def seconds_into_epoch(position: InEpochProgress | None, epochs_run: int, now: float) -> float:
    """Wall-clock seconds spent in the epoch under way (0 when the record is not about it)."""
    if not is_current(position, epochs_run) or position.stage == "final":
        return 0.0
    return max(0.0, now - position.epoch_started)  # a cool-down rung belongs to its epoch


def trial_eta(position: InEpochProgress | None, epochs_run: int, stop_epoch: float, seconds_per_epoch: float,
              now: float, cooldown_ahead: float = 0.0) -> float:
    """Seconds until the trial has trained to `stop_epoch`: the epochs left (and the `cooldown_ahead`
    epochs of its cool-down rungs still to come) × seconds per epoch − the time already spent in the one
    under way (never below the epochs after it), so it counts down between reports. In the end-of-training evaluation, the time left of the split being predicted. NaN when
    no pace is known yet; at most MAX_ETA_S (a pace read from a report may be absurd)."""
    if is_current(position, epochs_run) and position.stage == "final":
        if position.batches_per_s is None:
            return math.nan
        return capped(max(0.0, (position.total - position.done) / position.batches_per_s - (now - position.time)))
    remaining = stop_epoch - epochs_run
    if not remaining > 0:
        return 0.0 if remaining <= 0 else math.nan
    pace = epoch_pace(position if is_current(position, epochs_run) else None, seconds_per_epoch)
    into = seconds_into_epoch(position, epochs_run, now)
    remaining += cooldown_ahead
    return capped(max((remaining - 1) * pace, remaining * pace - into))


def capped(seconds: float) -> float:
    """An ETA no longer than MAX_ETA_S (an infinite one too); NaN stays NaN."""
    return seconds if math.isnan(seconds) else min(seconds, MAX_ETA_S)


def format_eta(seconds: float) -> str:
    """An ETA as `1:02:03` (`02:03` under an hour), or `over 99 days` from MAX_ETA_S on."""
    return f"over {MAX_ETA_DAYS} days" if seconds >= MAX_ETA_S else format_duration(seconds)


def epoch_fraction_done(position: InEpochProgress | None, epochs_run: int, pace: float, now: float) -> float:
    """How much of the epoch under way is behind the trial (0…1), for a study ETA that counts down."""
    if math.isnan(pace) or pace <= 0:
        return 0.0
    return min(1.0, seconds_into_epoch(position, epochs_run, now) / pace)


def format_silence(seconds: float) -> str:
    """How long a trial has been silent: `45s`, `3m10s`, `2h05m`."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
