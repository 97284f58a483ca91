"""BalPoE (Balanced Product of Calibrated Experts) trainer in pure PyTorch; never imports Ray."""
from .config import Config, ConfigError
from .trainer import Trainer

__all__ = ["Config", "ConfigError", "Trainer"]
