"""Experiment folders → tidy pandas tables, statistics, figures and a report; never imports the
study driver, never needs Ray running.

    from results import load_experiment
    exp = load_experiment("runs/search-alpha_tau")
"""
from .experiment import Experiment, load_experiment
from .reader import ExperimentError

__all__ = ["Experiment", "ExperimentError", "load_experiment"]
