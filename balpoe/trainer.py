"""The BalPoE trainer: one class, an explicit lifecycle, exact resume.

Lifecycle
---------
    trainer = Trainer(config)              # build: data on the device, model, optimiser, loader
    trainer.load_state_dict(state)         # optional: resume (model, optimiser, epoch, best, all RNGs)
    metrics = trainer.train_epoch()        # one epoch; the LR for it comes from `lr_factor(epoch)`
    metrics |= trainer.evaluate("val")     # any split: "train", "val", "test", "test_full" (prefixed)
    metrics = trainer.run_epoch()          # the two above plus best-model tracking and timing
    final = trainer.final_metrics()        # test_* and test_full_* once training is done
    logits = trainer.predict_test_set()    # val, test and test_full logits from one pass over the test set
    final = trainer.fit(callbacks)         # run_epoch until done, callbacks per epoch, final metrics
    state = trainer.state_dict()           # everything needed to continue bit-for-bit

`self.epoch` counts completed epochs. Callbacks are objects with optional
`on_epoch_end(trainer, metrics)` and `on_fit_end(trainer, metrics)`; the metrics are one flat dict per
epoch (see `fit`). Within an epoch, optional `on_batch_end(trainer, phase, done, total)` is called after
each batch, with counts in batches: phase "train" from `train_epoch(callbacks)`, the split's name from
`predict(split, callbacks)`; `run_epoch(callbacks)` and `final_metrics(callbacks)` pass theirs to every
phase they run (a caller with its own loop, like the Tune trainable); during `fit(callbacks)` all of them
use fit's callbacks (validation and final metrics included); `progress.BatchProgress` shows it. The trainer writes no files:
`checkpoint.RunFolder` and the Tune trainable are callbacks that decide where results go.

Precision (`config.precision`): with bf16 the model's forward pass runs under `torch.autocast` (bf16
convolutions); its head, the logits, the loss (τ·log π adjustment, log-softmax, reductions), the
parameters and the optimizer state stay fp32, and `predict` returns fp32 logits, so every metric,
the temperature fit and the exported logits come from fp32 values.
"""
from __future__ import annotations

import json
import math
import random
import time
import warnings

import numpy as np
import torch

from .config import Config, ConfigError
from .data import BatchLoader, DataBundle, Normalise, build_data, eval_batches
from .evaluation import shift_metrics
from .losses import ExpertLoss
from .metrics import classification_metrics, expert_metrics, fit_temperature, reliability_bins, scores
from .model import build_model

MONITOR = "val_balanced_acc"
EVAL_BATCH_SIZE = 500
CHECKPOINT_FORMAT = "balpoe-checkpoint"
CHECKPOINT_VERSION = 2  # 2: only the loader's RNG state (1 also held global and per-GPU states)


class TrainingDiverged(ConfigError):
    """The loss is no longer a number: the config's step sizes are too large. Raised at the end of the
    epoch it happened in, before any checkpoint of that epoch is written."""


def lr_factor(epoch: int, config: Config) -> float:
    """Step schedule with linear warm-up; `epoch` counts from 0 (the reference's CustomLR)."""
    if epoch >= config.step2:
        factor = config.gamma ** 2
    elif epoch >= config.step1:
        factor = config.gamma
    else:
        factor = 1.0
    if epoch < config.warmup_epochs:
        factor *= (epoch + 1) / config.warmup_epochs
    return factor


def resolve_device(name: str) -> torch.device:
    """The torch device for `--device`, checked here before any data is read: asking for a GPU
    this machine lacks is the user's to fix, not a traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device: torch sees no CUDA GPU on this machine; use --device cpu or auto (got {name!r})")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device: this machine has {count} CUDA GPU(s), cuda:0…cuda:{count - 1} (got {name!r})")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device: MPS (Apple GPU) is not available here; use --device cpu or auto (got {name!r})")
    return device


def check_precision(device: torch.device, precision: str) -> None:
    """Refuse bf16 on a device that cannot compute in it, before any data is read. A CPU always can,
    but without bf16 instructions torch runs bf16 convolutions on its slow reference kernels: a
    warning says so (measured in docs/speed.md)."""
    if precision != "bf16":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ConfigError(f"precision: {torch.cuda.get_device_name(device)} has no bf16 arithmetic (that needs "
                          f"compute capability 8.0, Ampere, or newer); use --precision fp32 (got 'bf16')")
    if device.type == "mps" and not torch.backends.mps.is_macos_or_newer(14, 0):
        raise ConfigError("precision: bf16 on MPS needs macOS 14 or newer; use --precision fp32 (got 'bf16')")
    if device.type == "cpu" and not cpu_has_bf16_kernels():
        warnings.warn("precision bf16: this CPU has no bf16 instructions (avx512_bf16, AMX or AVX-512), so torch "
                      "runs bf16 convolutions on slow reference kernels, many times slower than fp32; "
                      "--precision fp32 is faster here", stacklevel=2)


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN (torch's CPU convolutions) has bf16 kernels for this CPU: torch's own check."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: Config, data: DataBundle | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        check_precision(self.device, config.precision)
        seed_everything(config.seed)
        self.data = data or build_data(config, self.device)
        self.model = build_model(config, self.data.num_classes).to(self.device)
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=memory_format)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         nesterov=config.nesterov, weight_decay=config.weight_decay)
        self.loss = ExpertLoss(config.tau_list, self.data.class_counts, self.device)
        self.normalise = Normalise(self.data.mean, self.data.std, self.device, config.channels_last)
        self.loader = BatchLoader(self.data.train, config.batch_size, self.normalise, seed=config.seed,
                                  mixup_alpha=config.mixup_alpha)
        self.epoch = 0
        self.best_metric = -float("inf")
        self.best_epoch = 0

    def autocast(self) -> torch.autocast:
        """The forward pass's precision context: bf16 autocast, or a disabled one for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    # --- one epoch ------------------------------------------------------------------------------
    def train_epoch(self, callbacks=None, lr: float | None = None) -> dict[str, float]:
        """One epoch, at the schedule's LR for it unless `lr` is given (a cool-down's). After each batch,
        `on_batch_end(trainer, "train", done, total)` of the callbacks that have it (counts in batches;
        default None: those of the `fit` under way, if any)."""
        hooks = [c.on_batch_end for c in (getattr(self, "_fit_callbacks", ()) if callbacks is None else callbacks)
                 if hasattr(c, "on_batch_end")]
        total = len(self.loader)
        if lr is None:
            lr = self.config.lr * lr_factor(self.epoch, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        experts = self.config.num_experts
        loss_sum = torch.zeros((), device=self.device)
        expert_sums = torch.zeros(experts, device=self.device)
        correct_sum = torch.zeros((), device=self.device)
        seen = 0
        start = time.perf_counter()
        for done, batch in enumerate(self.loader, 1):
            with self.autocast():
                logits = self.forward(batch.inputs)
            logits = logits.float()  # fp32 already (the model's head); the loss must never see bf16
            loss, per_expert = self.loss(logits, batch.targets, batch.mix_targets, batch.lam)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = len(batch.targets)
            seen += n
            with torch.no_grad():
                predicted = logits.mean(dim=1).argmax(dim=1)
                correct_sum += batch.lam * (predicted == batch.targets).sum() \
                    + (1 - batch.lam) * (predicted == batch.mix_targets).sum()
                loss_sum += loss.detach() * n
                expert_sums += per_expert.detach() * n
            for hook in hooks:  # counts only: no device sync, no random draw
                hook(self, "train", done, total)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        self.epoch += 1
        metrics = {"epoch": self.epoch, "lr": lr, "train_loss": float(loss_sum) / seen}
        if not math.isfinite(metrics["train_loss"]):
            raise TrainingDiverged(
                f"lr: training diverged: the loss became {metrics['train_loss']} in epoch {self.epoch} (lr {lr:g}, "
                f"norm_scale {self.config.norm_scale:g}, weight_decay {self.config.weight_decay:g}); lower --lr or "
                f"--norm_scale (got lr {self.config.lr!r})")
        metrics.update({f"train_loss_expert{e}": float(expert_sums[e]) / seen for e in range(experts)})
        metrics.update({"train_acc": float(correct_sum) / seen, "train_seconds": seconds,
                        "train_images_per_s": seen / seconds})
        return metrics

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, split_name: str, callbacks=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-expert fp32 logits (N, experts, classes) and labels of a split, on the CPU. After each batch,
        `on_batch_end(trainer, split_name, done, total)` of the callbacks that have it (counts in
        batches; default None: those of the `fit` under way, if any)."""
        split = getattr(self.data, split_name)
        hooks = [c.on_batch_end for c in (getattr(self, "_fit_callbacks", ()) if callbacks is None else callbacks)
                 if hasattr(c, "on_batch_end")]
        total = -(-len(split) // EVAL_BATCH_SIZE)
        self.model.eval()
        logits = []
        for done, (x, _) in enumerate(eval_batches(split, EVAL_BATCH_SIZE, self.normalise), 1):
            with self.autocast():
                logits.append(self.forward(x).float())
            for hook in hooks:  # counts only: no device sync
                hook(self, split_name, done, total)
        return torch.cat(logits).cpu(), split.labels.cpu()

    def predict_test_set(self, callbacks=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """`predict` of val, test and test_full from one pass over the whole test set, which holds the
        other two: one forward per image instead of two (`callbacks` see the phase "test_full")."""
        logits, labels = self.predict("test_full", callbacks)
        full = self.data.test_full.indices
        row_of = np.empty(int(full.max()) + 1, dtype=np.int64)
        row_of[full] = np.arange(len(full))
        predictions = {"test_full": (logits, labels)}
        for name in ("val", "test"):
            rows = torch.from_numpy(row_of[getattr(self.data, name).indices])
            predictions[name] = (logits[rows], labels[rows])
        return predictions

    def evaluate(self, split_name: str, callbacks=None) -> dict[str, float]:
        """The ensemble's metrics and the per-expert diagnostics of a split, prefixed with its name
        (`callbacks` as in `predict`)."""
        return self.split_metrics(split_name, *self.predict(split_name, callbacks))

    def split_metrics(self, split_name: str, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        metrics = classification_metrics(logits, labels, self.data.class_counts)
        metrics.update(expert_metrics(logits, labels, self.data.class_counts, self.config.tau_list))
        return {f"{split_name}_{k}": v for k, v in metrics.items()}

    # --- the loop -------------------------------------------------------------------------------
    def run_epoch(self, callbacks=None) -> dict[str, float]:
        """Train one epoch, validate, track the best model. Keys: epoch, lr, train_loss,
        train_loss_expert{e}, train_acc, train_images_per_s, val_* (acc, balanced_acc,
        many/medium/few_acc, nll, brier, ece, mce, expert{e}_acc, and the per-expert diagnostics of
        `metrics.expert_metrics`), best_val_balanced_acc, epoch_seconds. `callbacks` get every batch of
        every phase (default None: those of the `fit` under way, if any)."""
        start = time.perf_counter()
        metrics = self.train_epoch(callbacks)
        metrics.update(self.evaluate("val", callbacks))
        if metrics[MONITOR] > self.best_metric:
            self.best_metric, self.best_epoch = metrics[MONITOR], self.epoch
        metrics["best_" + MONITOR] = self.best_metric
        every = self.config.eval_shift_every
        if every and self.epoch % every == 0 and not self.finished:  # the last epoch gets them in final_metrics
            metrics.update(shift_metrics(*self.predict("test_full", callbacks), self.data.class_counts))
        metrics["epoch_seconds"] = time.perf_counter() - start
        return metrics

    def final_metrics(self, callbacks=None) -> dict[str, float]:
        """test_* on the reported test split, test_full_* on the whole test set (paper protocol), and
        shift_* — the test-agnostic protocol — from the same pass of logits over the whole test set;
        per-expert diagnostics on both; ECE after temperature scaling fitted on validation
        (`temperature`, `*_ece_after_ts`), a comparison only: the reported metrics are the model's.
        All from one pass over the test set (`predict_test_set`); `callbacks` get its batches (default
        None: those of the `fit` under way, if any)."""
        final = {"epoch": self.epoch, "best_epoch": self.best_epoch, "best_" + MONITOR: self.best_metric}
        predictions = self.predict_test_set(callbacks)
        temperature = fit_temperature(*predictions["val"])
        final["temperature"] = temperature
        for split in ("test", "test_full"):
            logits, labels = predictions[split]
            final.update(self.split_metrics(split, logits, labels))
            final[f"{split}_ece_after_ts"] = scores(logits.float().mean(dim=1) / temperature, labels,
                                                    self.data.class_counts)["ece"]
        final.update(shift_metrics(logits, labels, self.data.class_counts))  # the test_full logits
        # reliability-diagram data as one JSON value: [count, mean confidence, accuracy] per bin (null: empty)
        final["test_full_reliability"] = json.dumps([[b["count"], b["confidence"] if b["count"] else None,
                                                      b["accuracy"] if b["count"] else None]
                                                     for b in reliability_bins(logits, labels)])
        return final

    @property
    def finished(self) -> bool:
        return self.epoch >= self.config.epochs

    def fit(self, callbacks=()) -> dict[str, float]:
        """Run the remaining epochs, calling `on_epoch_end(trainer, metrics)` after each, then
        `on_fit_end(trainer, final_metrics)`. While it runs, `train_epoch` and `predict` (validation,
        final metrics) call the callbacks' `on_batch_end(trainer, phase, done, total)` after each batch."""
        callbacks = tuple(callbacks)
        self._fit_callbacks = callbacks  # the default of train_epoch's and predict's `callbacks`
        try:
            while not self.finished:
                metrics = self.run_epoch()
                for callback in callbacks:
                    if hasattr(callback, "on_epoch_end"):
                        callback.on_epoch_end(self, metrics)
            final = self.final_metrics()
        finally:
            self._fit_callbacks = ()
        for callback in callbacks:
            if hasattr(callback, "on_fit_end"):
                callback.on_fit_end(self, final)
        return final

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain tensors, numbers and strings only, so `torch.load(weights_only=True)` reads it back.
        Key names `arch`, `epoch`, `state_dict`, `optimizer`, `monitor_best`, `config` match the
        reference pipeline's checkpoints.

        The only random stream training draws from after construction is the loader's own generator
        (order, augmentation, mixup), so that is the only one saved: no global or per-GPU RNG state,
        which would tie a checkpoint to the number of GPUs of the machine that wrote it."""
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "arch": "ResNet32Model", "epoch": self.epoch,
            "state_dict": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": {"type": "CustomLR", "last_epoch": self.epoch},
            "monitor": MONITOR, "monitor_best": self.best_metric, "best_epoch": self.best_epoch,
            "config": self.config.to_dict(),
            "num_classes": self.data.num_classes, "class_counts": list(self.data.class_counts),
            "rng": {"loader": self.loader.state_dict()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint; global RNG states saved by older versions are ignored (unused)."""
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.best_metric = float(state["monitor_best"])
        self.best_epoch = int(state["best_epoch"])
        self.loader.load_state_dict(state["rng"]["loader"])
