"""Cool-down rungs: score a trial at epoch r as if its schedule ended there, then carry on unchanged.

The recipe's LR is a warm-up, a constant trunk until `step1`, then `gamma` until `step2` and `gamma**2`
to the end. Every shorter budget of that shape shares the trunk, so a trial in the trunk can be judged
by what a short cool-down from its current state reaches ("Budgeted Training", Li et al., ICLR 2020;
warm-up-stable-decay schedules): fork the whole training state, train `fraction · r` epochs at
`lr·gamma` then `lr·gamma**2` in the recipe's proportions, evaluate the validation split, and put the
state back. The test split is never touched, and a trial that survives is bit-identical to one that
was never cooled: the fork holds the weights, the optimizer's buffers, the epoch, the best-model record
and the loader's random stream (the only one training draws from).
"""
from __future__ import annotations

import copy
import time

from .config import Config

COOLED_PREFIX = "cooled_"  # a rung's cooled metrics: cooled_val_balanced_acc beside the trunk's val_balanced_acc


def default_fraction(config: Config) -> float:
    """The recipe's own cool-down share of its trunk: (epochs − step1) / step1, 40/160 = 0.25."""
    return (config.epochs - config.step1) / config.step1 if config.step1 else 0.0


def cooldown_epochs(rung_epoch: int, fraction: float) -> int:
    """c·r epochs, at least one."""
    return max(1, int(fraction * rung_epoch + 0.5))


def cooldown_epochs_after(cooldowns: dict[int, int], epoch: int) -> int:
    """The cool-down epochs still ahead of a trial that has reported `epoch` ({rung epoch: its cool-down})."""
    return sum(length for rung, length in cooldowns.items() if rung > epoch)


def in_trunk(epoch: int, config: Config) -> bool:
    """A cool-down makes sense only where the LR has not stepped yet; later rungs use the recipe as it is."""
    return epoch < config.step1 and config.step1 < config.epochs


def cooldown_lr_factors(epochs: int, config: Config) -> list[float]:
    """`epochs` LR factors: `gamma` then `gamma**2`, split as the recipe splits step1→step2→epochs
    (half and half for the paper's 160/180/200; an odd count gives the extra epoch to `gamma`)."""
    tail = config.epochs - config.step1
    share = (config.step2 - config.step1) / tail if tail else 1.0
    first = int(epochs * share + 0.5)
    return [config.gamma] * first + [config.gamma ** 2] * (epochs - first)


def cooled_metrics(trainer, epochs: int, callbacks=None) -> dict[str, float]:
    """The validation metrics after an `epochs`-long cool-down from the trainer's current state, each
    key prefixed `cooled_`, plus `cooldown_epochs` and `cooldown_seconds`. The trainer's state is put
    back exactly, even when the cool-down raises. `callbacks` see its batches as in `train_epoch`."""
    saved = copy.deepcopy(trainer.state_dict())
    start = time.perf_counter()
    try:
        for factor in cooldown_lr_factors(epochs, trainer.config):
            trainer.train_epoch(callbacks, lr=trainer.config.lr * factor)
        metrics = trainer.evaluate("val", callbacks)
    finally:
        trainer.load_state_dict(saved)
    cooled = {COOLED_PREFIX + key: value for key, value in metrics.items()}
    cooled.update(cooldown_epochs=epochs, cooldown_seconds=time.perf_counter() - start)
    return cooled
