"""Experiment folders → tidy pandas tables, statistics, figures and a report; never imports the
study driver, never needs Ray running.

    from results import load_experiment
    exp = load_experiment("runs/search-alpha_tau")
"""
from .reader import ExperimentError

__all__ = ["Experiment", "ExperimentError", "load_experiment"]


def __getattr__(name: str):
    """pandas loads on first use, so that the study driver's checks (and `doctor`) start light."""
    if name in ("Experiment", "load_experiment"):
        from . import experiment
        return getattr(experiment, name)
    raise AttributeError(f"module 'results' has no attribute {name!r}")
