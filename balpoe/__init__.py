"""BalPoE (Balanced Product of Calibrated Experts) trainer in pure PyTorch; never imports Ray.

Everything is imported on first use: `Trainer` so that the config, the CLI's checks and `study.run
doctor` work without loading torch, and `Config` so that `python -m balpoe` is inside its own Ctrl-C
handling (`balpoe.__main__`) before pydantic loads.
"""
__all__ = ["Config", "ConfigError", "Trainer"]


def __getattr__(name: str):
    if name in ("Config", "ConfigError"):
        from . import config
        return getattr(config, name)
    if name == "Trainer":
        from .trainer import Trainer
        return Trainer
    raise AttributeError(f"module 'balpoe' has no attribute {name!r}")
