"""Cool-down rungs in a study: the settings that ask for them, and how the results read them back — the
`rungs` table beside (never inside) the trunk's `epochs`, the compute a search spent, ρ per fidelity."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from balpoe.config import Config
from results import load_experiment
from results.figures import learning_curves
from results.settings import StudyError
from study.options import build_parser
from study.settings import StudySettings, settings_from_args
from test_results_robustness import write_trial

# 10 epochs, LR steps after 8 and 9; ASHA from epoch 2 by halves: rungs 2, 4, 8, of which 2 and 4 in the trunk
BASE = Config(dataset="synthetic-lt", imb_factor=0.1, epochs=10, warmup_epochs=1, step1=8, step2=9, batch_size=16,
              device="cpu", download=False)
SEARCH = dict(kind="search", name="cooled", base=BASE, space="alpha_tau", num_samples=5, startup_trials=2,
              ranges={"mixup_alpha": [0.0, 1.0], "tau_spread": [0.0, 1.5]}, asha=True, grace_period=2,
              reduction_factor=2, max_t=10)


def settings(**changes) -> StudySettings:
    return StudySettings(**{**SEARCH, "storage_path": "/tmp/runs", **changes})


def test_cooldown_rungs_are_the_asha_rungs_in_the_trunk_and_asha_decides_on_their_key():
    cooled = settings(fidelity="cooldown", cooldown_fraction=0.25)
    assert cooled.cooldown_rungs == (2, 4) and cooled.asha_metric == "rung_val_balanced_acc"
    trunk = settings()
    assert trunk.cooldown_rungs == () and trunk.asha_metric == "val_balanced_acc"
    assert settings(fidelity="cooldown", cooldown_fraction=0.25, asha=False).cooldown_rungs == ()


@pytest.mark.parametrize("changes, option", [
    (dict(fidelity="cooldown", cooldown_fraction=0.25, grace_period=8), "--fidelity"),  # no rung before step 8
    (dict(fidelity="cooldown", cooldown_fraction=0.0), "--cooldown-fraction"),
    (dict(fidelity="cooldown", cooldown_fraction=float("nan")), "--cooldown-fraction"),
    (dict(fidelity="cooldown"), "--cooldown-fraction"),
    (dict(fidelity="warm"), "fidelity"),
])
def test_cooldown_settings_that_cannot_work_are_refused_by_option(changes, option):
    with pytest.raises(StudyError) as refused:
        settings(**changes)
    assert str(refused.value).startswith(option)


def test_the_command_line_resolves_a_tenth_of_the_schedule_and_the_recipes_own_fraction(tmp_path):
    parse = build_parser().parse_args
    base = ["search", "--preset", "paper", "--storage-path", str(tmp_path), "--num-samples", "8"]
    cooled = settings_from_args(parse([*base, "--fidelity", "cooldown"]))
    assert (cooled.fidelity, cooled.grace_period, cooled.cooldown_fraction) == ("cooldown", 20, 0.25)
    assert cooled.cooldown_rungs == (20, 40, 80)
    chosen = settings_from_args(parse([*base, "--fidelity", "cooldown", "--grace-period", "10",
                                       "--cooldown-fraction", "0.5"]))
    assert (chosen.grace_period, chosen.cooldown_fraction, chosen.cooldown_rungs) == (10, 0.5, (10, 20, 40, 80))
    assert settings_from_args(parse(base)).fidelity == "trunk"
    with pytest.raises(StudyError) as refused:
        settings_from_args(parse([*base, "--cooldown-fraction", "0.5"]))
    assert str(refused.value).startswith("--cooldown-fraction")


# --- the results of a search with cool-down rungs ----------------------------------------------
FINALS = {"a": 0.60, "b": 0.55, "c": 0.50, "d": 0.45}   # finished; "e" was stopped at the first rung


def row(trial_id: str, epoch: int, trunk: float, cooled: float | None = None) -> dict:
    report = {"epoch": epoch, "val_balanced_acc": trunk, "val_nll": 1.0, "training_iteration": epoch,
              "trial_id": trial_id, "planned_epochs": 10, "stop_epoch": 10, "rung_val_balanced_acc": trunk}
    if cooled is not None:
        report.update(cooled_val_balanced_acc=cooled, cooled_val_nll=0.5, cooldown_epochs=max(1, epoch // 4),
                      cooldown_seconds=0.1 * epoch, rung_val_balanced_acc=cooled)
    return report


def trial_rows(trial_id: str, last_epoch: int, final: float, rank: int) -> list[dict]:
    """Trunk scores that rank the trials backwards; cooled scores at rungs 2 and 4 that rank them as the end."""
    rows = []
    for epoch in range(1, last_epoch + 1):
        trunk = final if epoch == 10 else 0.1 + 0.01 * rank + 0.001 * epoch
        cooled = final - 0.2 + 0.01 * epoch if epoch in (2, 4) else None
        rows.append(row(trial_id, epoch, trunk, cooled))
    if last_epoch == 10:
        rows[-1].update(test_balanced_acc=final - 0.05)
    return rows


@pytest.fixture
def cooled_search(tmp_path) -> Path:
    folder = tmp_path / "cooled"
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps(
        settings(fidelity="cooldown", cooldown_fraction=0.25, storage_path=str(tmp_path)).model_dump(mode="json")))
    params = {"base": BASE.to_dict(), "space": "alpha_tau", "mixup_alpha": 0.4, "tau_spread": 1.0, "stop_epoch": 10}
    for rank, (trial_id, final) in enumerate(FINALS.items()):
        write_trial(folder, trial_id, trial_rows(trial_id, 10, final, rank), params)
    write_trial(folder, "e", trial_rows("e", 2, 0.3, 9), params)
    (folder / "asha_stopped.json").write_text(json.dumps(["e"]))
    return folder


def test_cooled_rungs_are_their_own_table_and_never_in_the_trunk_curve(cooled_search):
    exp = load_experiment(cooled_search)
    assert not [c for c in exp.epochs.columns if c.startswith(("cooled_", "rung_", "cooldown_"))]
    assert len(exp.epochs) == 4 * 10 + 2 and exp.trials.set_index("trial_id")["status"]["e"] == "asha_stopped"
    rungs = exp.rungs.set_index(["trial_id", "epoch"])
    assert sorted(rungs.index) == sorted([(t, e) for t in FINALS for e in (2, 4, 8)] + [("e", 2)])
    assert rungs.loc[("a", 2), "fidelity"] == "cooldown" and rungs.loc[("a", 8), "fidelity"] == "trunk"
    assert rungs.loc[("a", 4), "cooldown_epochs"] == 1 and rungs.loc[("a", 8), "cooldown_epochs"] == 0
    assert rungs.loc[("a", 4), "val_balanced_acc"] == pytest.approx(0.60 - 0.2 + 0.04)  # the cooled score
    assert rungs.loc[("a", 8), "val_balanced_acc"] == pytest.approx(0.1 + 0.008)        # the trunk's
    assert rungs.loc[("a", 2), "val_nll"] == 0.5


def test_a_search_counts_its_trunk_and_cool_down_epochs_against_no_asha(cooled_search):
    spent = load_experiment(cooled_search).compute()
    cooldowns = 4 * (1 + 1) + 1  # rungs 2 and 4 of the finished trials, rung 2 of the stopped one
    assert spent == {"trunk_epochs": 42.0, "cooldown_epochs": float(cooldowns), "trained_epochs": 42.0 + cooldowns,
                     "without_asha_epochs": 50.0, "fraction": pytest.approx((42 + cooldowns) / 50)}


def test_the_fidelity_table_ranks_by_the_cooled_and_by_the_trunk_score(cooled_search):
    fidelity = load_experiment(cooled_search).asha_fidelity().set_index("rung_epoch")
    assert list(fidelity.index) == [2, 4, 8]
    assert fidelity.loc[2, "cooled_spearman"] == pytest.approx(1.0) and fidelity.loc[2, "spearman"] == pytest.approx(-1.0)
    assert fidelity.loc[8, "spearman"] == pytest.approx(-1.0) and fidelity["trials"].tolist() == [4, 4, 4]
    assert fidelity["cooled_spearman"].isna().tolist() == [False, False, True]


def test_the_learning_curves_ring_each_cooled_rung(cooled_search):
    figure = learning_curves(load_experiment(cooled_search))
    rings = [line for line in figure.axes[0].lines if line.get_marker() == "o"]
    assert sum(len(line.get_xdata()) for line in rings) == 4 * 2 + 1


# --- a search with cool-down rungs, end to end -------------------------------------------------
@pytest.mark.ray
def test_a_search_with_cool_down_rungs_decides_on_the_cooled_scores_and_counts_them(tmp_path, capsys):
    import optuna

    from conftest import SMOKE_RANKED
    from study.run import main
    # 4 epochs, LR steps after 3: ASHA rungs 1 and 2 are cooled for 1 epoch each
    argv = ["search", *SMOKE_RANKED, "--space", "alpha_tau", "--num-samples", "4", "--max-concurrent", "1",
            "--epochs", "4", "--step1", "3", "--step2", "4", "--fidelity", "cooldown", "--grace-period", "1",
            "--storage-path", str(tmp_path)]
    assert main(argv) == 0, capsys.readouterr()
    exp = load_experiment(tmp_path / "search-alpha_tau-smoke")
    assert exp.settings.fidelity == "cooldown" and exp.cooldowns == {1: 1, 2: 1}
    cooled = exp.rungs[exp.rungs["fidelity"] == "cooldown"]
    assert set(cooled["epoch"]) <= {1, 2} and (cooled["cooldown_epochs"] == 1).all() and len(cooled) >= 4
    assert not [c for c in exp.epochs.columns if c.startswith(("cooled_", "rung_"))]
    stopped = exp.trials[exp.trials["status"] == "asha_stopped"]
    assert len(stopped) >= 1
    # Optuna's intermediate values are the cooled scores ASHA decided by
    study = optuna.load_study(study_name=exp.name, storage=f"sqlite:///{exp.path / 'optuna.db'}")
    by_params = {(t.params["mixup_alpha"], t.params["tau_spread"]): t for t in study.trials}
    for _, trial in stopped.iterrows():
        optuna_trial = by_params[(trial["mixup_alpha"], trial["tau_spread"])]
        assert optuna_trial.state.name == "PRUNED"
        rows = cooled[cooled["trial_id"] == trial["trial_id"]].set_index("epoch")["val_balanced_acc"]
        assert optuna_trial.intermediate_values == pytest.approx(rows.to_dict())
    spent = exp.compute()  # (at this size the cool-downs may cost all that ASHA saved: the count says so)
    assert spent["cooldown_epochs"] == len(cooled) and spent["trunk_epochs"] == exp.trials["epochs_run"].sum()
    assert spent["fraction"] == pytest.approx((spent["trunk_epochs"] + len(cooled)) / (4 * 4))
