"""BalPoE (Balanced Product of Calibrated Experts) trainer in pure PyTorch; never imports Ray.

`Trainer` is imported on first use, so that the config, the CLI's checks and `study.run doctor` work
without loading torch.
"""
from .config import Config, ConfigError

__all__ = ["Config", "ConfigError", "Trainer"]


def __getattr__(name: str):
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(f"module 'balpoe' has no attribute {name!r}")
