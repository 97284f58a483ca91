"""The Optuna searcher: Tune's calls made by hand (no Ray) with Optuna's record read back; optuna.db faults
named; and a copied search folder resumed through the real CLI."""
from __future__ import annotations

import re
import shutil
import sqlite3

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from ray import tune

from conftest import SMOKE, interrupted_cli
from results.experiment import load_experiment, read_optuna
from results.reader import ExperimentError
from study.settings import StudyError
from study.searcher import OptunaSearcher, check_optuna_storage, to_distribution

SPACE = {"mixup_alpha": tune.uniform(0.0, 1.0), "tau_spread": tune.uniform(0.0, 4.0), "base": {"epochs": 4}}
PAPER = {"mixup_alpha": 0.4, "tau_spread": 1.0}
SINGLE = [("val_balanced_acc", "max")]


def searcher_in(folder, objectives=SINGLE, seed_point=None, **kwargs) -> OptunaSearcher:
    searcher = OptunaSearcher(folder, "study", objectives, stop_epoch=4, seed_point=seed_point, startup_trials=2,
                              **kwargs)
    assert searcher.set_search_properties(None, None, SPACE)
    return searcher


def stored_trials(folder, name: str = "study") -> list:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}").trials


def run(searcher: OptunaSearcher, trial_id: str, values: list[float], final: dict | None = None,
        error: bool = False) -> dict:
    """A Tune trial that reports one value per epoch; Tune withholds the last result from on_trial_result
    when the scheduler stopped the trial on it, and passes it to on_trial_complete."""
    config = searcher.suggest(trial_id)
    rows = [{"epoch": epoch, "training_iteration": epoch, "val_balanced_acc": value}
            for epoch, value in enumerate(values, 1)]
    for row in rows[:-1]:
        searcher.on_trial_result(trial_id, row)
    searcher.on_trial_complete(trial_id, final if final is not None else rows[-1], error=error)
    return config


def test_the_paper_point_comes_first_and_every_end_is_told_as_what_it_was(tmp_path):
    searcher = searcher_in(tmp_path, seed_point=PAPER)
    assert run(searcher, "finished", [0.2, 0.3, 0.4, 0.5]) == PAPER
    run(searcher, "stopped", [0.1, 0.15])  # ASHA stopped it at epoch 2 of 4
    run(searcher, "crashed", [0.3], error=True)
    run(searcher, "silent", [0.3], final={"epoch": 4})  # finished without the objective
    finished, stopped, crashed, silent = stored_trials(tmp_path)
    assert (finished.state, finished.value, finished.params) == (TrialState.COMPLETE, 0.5, PAPER)
    assert finished.intermediate_values == {1: 0.2, 2: 0.3, 3: 0.4}
    assert (stopped.state, stopped.intermediate_values, stopped.value) == (TrialState.PRUNED, {1: 0.1, 2: 0.15}, 0.15)
    assert crashed.state == TrialState.FAIL and silent.state == TrialState.FAIL
    assert all(0 <= t.params["mixup_alpha"] <= 1 and 0 <= t.params["tau_spread"] <= 4 for t in (stopped, crashed))


def test_a_nan_final_value_is_a_failure_not_a_best(tmp_path):
    searcher = searcher_in(tmp_path)
    with pytest.warns(UserWarning, match="nan"):
        run(searcher, "diverged", [0.2, 0.3, 0.3, float("nan")])
    assert stored_trials(tmp_path)[0].state == TrialState.FAIL


def test_several_objectives_take_no_intermediate_values(tmp_path):
    searcher = searcher_in(tmp_path, objectives=[("val_balanced_acc", "max"), ("val_ece", "min")])
    assert searcher.metric == ["val_balanced_acc", "val_ece"] and searcher.mode == ["max", "min"]
    searcher.suggest("a")
    searcher.on_trial_result("a", {"epoch": 1, "val_balanced_acc": 0.2, "val_ece": 0.3})
    searcher.on_trial_complete("a", {"epoch": 4, "val_balanced_acc": 0.4, "val_ece": 0.1})
    searcher.suggest("b")
    searcher.on_trial_complete("b", {"epoch": 2, "val_balanced_acc": 0.1, "val_ece": 0.5})
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_balanced_acc", "val_ece"]  # optuna-dashboard's axis names
    complete, pruned = study.trials
    assert (complete.state, complete.values, complete.intermediate_values) == (TrialState.COMPLETE, [0.4, 0.1], {})
    assert (pruned.state, pruned.values) == (TrialState.PRUNED, None)


def test_tpe_takes_over_after_the_startup_trials_with_the_settings_seed(tmp_path):
    def configs(folder, seed):
        folder.mkdir()
        searcher = searcher_in(folder, sampler_seed=seed)
        return [run(searcher, str(i), [0.1 * i, 0.2 * i, 0.3 * i, 0.4 * i]) for i in range(4)]
    first = configs(tmp_path / "a", 7)
    assert configs(tmp_path / "b", 7) == first  # reproducible from the seed
    assert configs(tmp_path / "c", 8) != first


def test_save_and_restore_into_a_copied_folder_leaves_the_original_alone(tmp_path):
    original, copy = tmp_path / "A", tmp_path / "B"
    original.mkdir()
    searcher = searcher_in(original, seed_point=PAPER)
    run(searcher, "done", [0.2, 0.3, 0.4, 0.5])
    searcher.suggest("running")
    searcher.on_trial_result("running", {"epoch": 1, "val_balanced_acc": 0.25})
    searcher.save(str(tmp_path / "searcher-state.pkl"))
    orphan = searcher.suggest("asked after the save")  # Tune's saved state will not know this trial
    shutil.copytree(original, copy)
    before = (original / "optuna.db").read_bytes()

    restored = OptunaSearcher.__new__(OptunaSearcher)  # as Tune does: a blank searcher, then its saved state
    restored.restore(str(tmp_path / "searcher-state.pkl"))
    with pytest.raises(RuntimeError, match="not opened in its experiment folder"):
        restored.suggest("too early")
    restored.open_in(copy)
    restored.on_trial_result("running", {"epoch": 1, "val_balanced_acc": 0.25})  # the repeated epoch
    restored.on_trial_result("running", {"epoch": 2, "val_balanced_acc": 0.35})
    restored.on_trial_complete("running", {"epoch": 4, "val_balanced_acc": 0.45})
    fresh = restored.suggest("new")
    restored.on_trial_complete("new", {"epoch": 1, "val_balanced_acc": 0.1})

    assert (original / "optuna.db").read_bytes() == before
    done, running, asked_after_save, new = stored_trials(copy)
    assert (running.state, running.value, running.intermediate_values) == (TrialState.COMPLETE, 0.45,
                                                                          {1: 0.25, 2: 0.35})
    assert asked_after_save.state == TrialState.FAIL and asked_after_save.params == orphan
    assert new.state == TrialState.PRUNED and new.params == fresh != orphan  # the sampler's state came back
    assert restored.trial_numbers == {"done": 0, "running": 1, "new": 3}


def test_a_trial_told_after_the_save_is_not_told_again(tmp_path):
    searcher = searcher_in(tmp_path)
    searcher.suggest("a")
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.on_trial_complete("a", {"epoch": 4, "val_balanced_acc": 0.5})
    restored = OptunaSearcher.__new__(OptunaSearcher)
    restored.restore(str(tmp_path / "state.pkl"))
    restored.open_in(tmp_path)
    restored.on_trial_result("a", {"epoch": 3, "val_balanced_acc": 0.4})  # Tune re-runs it from a checkpoint
    restored.on_trial_complete("a", {"epoch": 4, "val_balanced_acc": 0.6})
    (trial,) = stored_trials(tmp_path)
    assert (trial.state, trial.value, trial.intermediate_values) == (TrialState.COMPLETE, 0.5, {})


@pytest.mark.parametrize("domain, distribution", [
    (tune.uniform(0.5, 2.0), FloatDistribution(0.5, 2.0)),
    (tune.loguniform(1e-4, 1e-1), FloatDistribution(1e-4, 1e-1, log=True)),
    (tune.quniform(0.0, 1.0, 0.25), FloatDistribution(0.0, 1.0, step=0.25)),
    (tune.randint(2, 8), IntDistribution(2, 7)),  # Tune excludes the upper bound
    (tune.qrandint(2, 8, 2), IntDistribution(2, 8, step=2)),  # and includes it when quantized
    (tune.lograndint(1, 100), IntDistribution(1, 99, log=True)),
    (tune.choice(["a", "b"]), CategoricalDistribution(["a", "b"])),
])
def test_tune_domains_map_to_optuna_distributions(domain, distribution):
    assert to_distribution("x", domain) == distribution


@pytest.mark.parametrize("domain, message", [
    (tune.randn(0, 1), "no distribution for Tune's Normal sampler"),
    (tune.qloguniform(1e-4, 1e-1, 1e-4), "cannot sample a quantized log-uniform float"),
])
def test_domains_optuna_cannot_sample_are_refused_by_name(domain, message):
    with pytest.raises(ValueError, match=f"^x: .*{message}"):
        to_distribution("x", domain)


def test_the_search_spaces_all_map(tmp_path):
    from search_spaces import SPACE_NAMES, get_space, resolve_ranges, tune_domains
    for name in SPACE_NAMES:
        module = get_space(name)
        domains = tune_domains(module, resolve_ranges(module))
        for parameter, domain in domains.items():
            low, high, kind = module.PARAMS[parameter]
            distribution = to_distribution(parameter, domain)
            assert (distribution.low, distribution.high) == (low, high)
            assert isinstance(distribution, IntDistribution if kind == "int" else FloatDistribution)


# --- optuna.db that Optuna cannot use: named, on resume and when read -------------------------------
def locked(path):
    """Another process's write transaction, held open (sqlite3 locks across connections alike)."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


@pytest.mark.parametrize("damage, reason", [
    (lambda db: db.mkdir(), "is a directory, not Optuna's SQLite database"),
    (lambda db: db.write_text("these are my notes\n" * 10), "is not an SQLite database (it starts with b'these ar')"),
    (lambda db: db.write_bytes(b"SQLite format 3\x00" + b"\x07" * 4000), "is a damaged SQLite database (file is not a database)"),
])
def test_an_unusable_optuna_db_is_named_on_resume_and_when_read(tmp_path, damage, reason):
    damage(tmp_path / "optuna.db")
    with pytest.raises(StudyError, match="^" + re.escape(f"optuna.db: {tmp_path / 'optuna.db'} {reason}")):
        check_optuna_storage(tmp_path)
    with pytest.raises(ExperimentError, match=re.escape(reason)):
        read_optuna(tmp_path / "optuna.db", "study", ["val_balanced_acc"])


def test_a_locked_optuna_db_is_named_on_resume_and_read_when_its_writer_lets_go(tmp_path):
    searcher = searcher_in(tmp_path)
    run(searcher, "a", [0.1, 0.2, 0.3, 0.4])
    holder = locked(tmp_path / "optuna.db")
    try:
        with pytest.raises(StudyError, match="is locked by another process"):
            check_optuna_storage(tmp_path)
        with pytest.raises(ExperimentError, match="is locked by another process"):
            read_optuna(tmp_path / "optuna.db", "study", ["val_balanced_acc"])
    finally:
        holder.rollback() if holder.in_transaction else None
        holder.close()
    check_optuna_storage(tmp_path)  # nothing to say once it is free
    table = read_optuna(tmp_path / "optuna.db", "study", ["val_balanced_acc"])
    assert table[["state", "val_balanced_acc"]].values.tolist() == [["COMPLETE", 0.4]]


def test_an_optuna_db_without_the_study_is_named_when_read(tmp_path):
    searcher_in(tmp_path)
    with pytest.raises(ExperimentError, match="holds no Optuna study named 'other'"):
        read_optuna(tmp_path / "optuna.db", "other", ["val_balanced_acc"])


# --- a copied experiment folder resumes in the copy, and only there ---------------------------------
def files_of(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.ray
def test_a_copied_search_resumes_in_the_copy_and_leaves_the_original_alone(tmp_path):
    """Interrupted with one trial finished, one training and one not started; the copy's resume must finish
    the second (a restored trial), create the third (a new one) and tell Optuna, all inside the copy."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    argv = ["search", *SMOKE, "--space", "alpha_tau", "--num-samples", "3", "--max-concurrent", "1",
            "--grace-period", "1", "--name", "original", "--storage-path", str(tmp_path)]
    one_ended = False

    def ready(line: str) -> bool:  # once one trial ended and the next one is training
        nonlocal one_ended
        one_ended = "1 running, 1 terminated" in line or (one_ended and line.startswith("    "))
        return one_ended and "epoch    " in line
    interrupted_cli(argv, ready)
    shutil.copytree(original, copy)
    before = files_of(original)
    assert len(stored_trials(original, "original")) == 2

    from study.run import main
    assert main(["resume", "copy", "--storage-path", str(tmp_path), "--num-cpus", "2"]) == 0
    assert files_of(original) == before  # not a byte, not a new file
    trials = stored_trials(copy, "original")  # the study keeps the name it was created with
    assert len(trials) == 3 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    experiment = load_experiment(copy)
    assert experiment.progress()["complete"] and len(experiment.trials) == 3
    assert sorted(p.name for p in copy.glob("trial_*")) == sorted(f"trial_{t}" for t in experiment.trials["trial_id"])
