"""A resumed study writes only inside its own experiment folder, wherever that folder is now.

`Tuner.restore(folder)` re-bases the trials it restores onto `folder`, but three things pickled at the first
run still name that run's folder: the search algorithm's experiment (from which Tune creates a restored
search's new trials), the Optuna searcher's database and ASHA's record. Through them a resumed copy of a
folder wrote into the original. Tune shows the scheduler every trial before it starts, the restored ones
first, so the scheduler learns the folder from the first trial it is shown, opens the searcher there, and
moves into it any later trial that was created elsewhere.
"""
from __future__ import annotations

from pathlib import Path

from ray.tune.schedulers import FIFOScheduler

from results.storage import StorePath

from .ray_internals import experiment_location, move_trial, trial_location
from .searcher import OptunaSearcher


class KeepsStudyInFolder:
    """Scheduler mixin (list it before the scheduler class) that keeps a study's trials and its searcher's
    record in the experiment folder of the first trial shown. `folder` is None until then."""
    folder: Path | StorePath | None = None
    location = None

    def on_trial_add(self, tune_controller, trial) -> None:
        if self.location is None:
            self.location, self.folder = experiment_location(trial), trial_location(trial, experiment=True)
            self.on_folder_known(tune_controller)
        elif experiment_location(trial)[1:] != self.location[1:]:
            move_trial(trial, self.location)
        super().on_trial_add(tune_controller, trial)

    def on_folder_known(self, tune_controller) -> None:
        """Open the Optuna searcher here, unless it is open here already (a first run)."""
        searcher = tune_controller.search_alg
        while not isinstance(searcher, OptunaSearcher) and hasattr(searcher, "searcher"):
            searcher = searcher.searcher  # Tune's wrappers: SearchGenerator, ConcurrencyLimiter
        if isinstance(searcher, OptunaSearcher) and searcher.folder != self.folder.resolve():
            searcher.open_in(self.folder)


class InFolderFIFO(KeepsStudyInFolder, FIFOScheduler):
    """Tune's default scheduler, kept in the study's folder: for studies without ASHA. Named as before: Tune
    pickles the scheduler by class path, and `resume` of an older study unpickles it."""
