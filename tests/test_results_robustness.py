"""results/ on damaged experiment folders: wrongly typed study.json fields, wrongly typed report rows,
non-numeric metrics, and baselines that cannot be compared. Small folders written by hand (no Ray):
`study.json`, and `trial_<id>/` with `params.json` and `result.json` lines as Tune writes them.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from balpoe.config import Config
from conftest import run_cli
from results import ExperimentError, load_experiment
from results import stats
from study.settings import StudySettings

BASE = Config(dataset="synthetic-lt", imb_factor=0.1, epochs=2, warmup_epochs=1, step1=1, step2=2, batch_size=16,
              save_period=1, device="cpu", download=False).to_dict()


def write_settings(folder: Path, **overrides) -> None:
    """A study.json as the study driver writes it (a validated StudySettings), with raw overrides."""
    kind = overrides.get("kind", "baseline")
    search = {"space": "alpha_tau", "num_samples": 2, "seeds": [1], "startup_trials": 2,
              "ranges": {"mixup_alpha": [0.0, 1.0], "tau_spread": [0.0, 1.5]}} if kind == "search" else {}
    settings = StudySettings(**{"kind": kind if kind in ("baseline", "search") else "baseline", "name": folder.name,
                                "storage_path": str(folder.parent), "base": BASE, "seeds": [1, 2], "asha": False,
                                "max_t": 2, "grace_period": 1, **search})
    values = settings.model_dump(mode="json") | {"versions": {"toolkit": "0.1.0", "python": "3.11"}}
    values.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.json").write_text(json.dumps(values, indent=2))


def report_row(epoch, stop: int = 2, seed: int = 1, **metrics) -> dict:
    """One `result.json` row as the trainable reports it (the end-of-training metrics on the stop epoch)."""
    row = {"epoch": epoch, "train_loss": 1.0 / epoch, "val_balanced_acc": 0.1 * epoch + 0.01 * seed,
           "val_acc": 0.1 * epoch, "val_ece": 0.05, "time_this_iter_s": 1.0, "time_total_s": 1.0 * epoch,
           "training_iteration": epoch, "trial_id": f"t{seed}", "hostname": "host", "device": "cpu",
           "tau_list": "0;1;2", "mixup_alpha": 0.4, "num_experts": 3, "seed": seed, "planned_epochs": 2,
           "stop_epoch": stop, "peak_memory_mb": 100.0}
    if epoch == stop:
        row.update(test_balanced_acc=0.3 + 0.01 * seed, test_full_acc=0.3 + 0.02 * seed, test_full_ece=0.1)
    row.update(metrics)
    return row


def write_trial(folder: Path, trial_id: str, lines: list, params: dict | None = None) -> Path:
    """A trial folder: `params.json` (a baseline trial's Tune config unless given) and `result.json`, whose
    lines are dicts (written as JSON) or raw text."""
    trial = folder / f"trial_{trial_id}"
    trial.mkdir(parents=True)
    params = params or {"base": BASE, "checkpoint_every": 1, "threads": 1, "stop_epoch": 2, "seed": 1}
    (trial / "params.json").write_text(json.dumps(params))
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    (trial / "result.json").write_text(text)
    return trial


def make_baseline(folder: Path, seeds=(1, 2), rows=None) -> Path:
    write_settings(folder, seeds=list(seeds))
    for seed in seeds:
        params = {"base": BASE, "checkpoint_every": 1, "threads": 1, "stop_epoch": 2, "seed": seed}
        write_trial(folder, f"t{seed}", rows(seed) if rows else [report_row(1, seed=seed), report_row(2, seed=seed)],
                    params)
    return folder


def make_search(folder: Path, max_t: int = 2, points=((0.4, 1.0), (0.4, 1.0))) -> Path:
    """A search whose trials all ran the paper point (α 0.4, τ spread 1.0: the baseline's recipe)."""
    write_settings(folder, kind="search", max_t=max_t, num_samples=len(points))
    for number, (alpha, spread) in enumerate(points):
        params = {"base": BASE, "checkpoint_every": 1, "threads": 1, "stop_epoch": max_t, "space": "alpha_tau",
                  "mixup_alpha": alpha, "tau_spread": spread}
        rows = [report_row(e, stop=max_t, seed=1, trial_id=f"s{number}",
                           val_balanced_acc=0.9 - 0.1 * number) for e in range(1, max_t + 1)]
        rows[-1].update(test_balanced_acc=0.5 + 0.01 * number, test_full_acc=0.5 + 0.02 * number)
        write_trial(folder, f"s{number}", rows, params)
    return folder


# --- 1. study.json with wrongly typed fields ---------------------------------------------------------
BAD_SETTINGS = [  # (field, value, what the message must say besides the file)
    ("objectives", [["val_acc"]], "objectives"),
    ("objectives", "abc", "objectives: must be a valid tuple (got 'abc')"),
    ("objectives", [[]], "objectives"),
    ("objectives", [], "--objectives: one or more METRIC:MODE pairs"),
    ("objectives", [["val_acc", "up"]], "--objectives: mode for val_acc must be max or min (got 'up')"),
    ("objectives", [[3, "max"]], "objectives.0.0: must be a valid string (got 3)"),
    ("seeds", 5, "seeds: must be a valid tuple (got 5)"),
    ("seeds", ["1"], "seeds.0: must be a valid integer (got '1')"),
    ("seeds", [True], "seeds.0: must be a valid integer (got True)"),
    ("num_samples", "x", "num_samples: must be a valid integer (got 'x')"),
    ("num_samples", 0, "--num-samples: must be >= 1 (got 0)"),
    ("num_samples", 2.5, "num_samples: must be a valid integer (got 2.5)"),
    ("kind", "other", "kind: must be 'baseline' or 'search' (got 'other')"),
    ("kind", None, "kind: must be 'baseline' or 'search' (got None)"),
    ("name", 5, "name: must be a valid string (got 5)"),
    ("max_t", "2", "max_t: must be a valid integer (got '2')"),
    ("max_t", 0, "--max-t: must be in [1, epochs=2] (got 0)"),
    ("grace_period", 1.5, "grace_period: must be a valid integer (got 1.5)"),
    ("reduction_factor", 1, "--reduction-factor: must be >= 2 (got 1)"),
    ("reduction_factor", None, "reduction_factor: must be a valid integer (got None)"),
    ("asha", "yes", "asha: must be a valid boolean (got 'yes')"),
    ("asha", 1, "asha: must be a valid boolean (got 1)"),
    ("base", [], "base: must be a valid dictionary or instance of Config (got [])"),
    ("base", BASE | {"epochs": "2"}, "epochs: must be an integer (got '2')"),
    ("base", BASE | {"epochs": 1e400}, "epochs: must be an integer (got inf)"),
    ("versions", "v1", "versions: must be a valid dictionary (got 'v1')"),
]


@pytest.mark.parametrize("field, value, message", BAD_SETTINGS, ids=[f"{f}={json.dumps(v)[:20]}" for f, v, _ in
                                                                      BAD_SETTINGS])
def test_a_wrongly_typed_study_json_field_is_named(tmp_path, field, value, message):
    folder = make_baseline(tmp_path / "baseline")
    write_settings(folder, **{field: value})
    with pytest.raises(ExperimentError) as caught:
        load_experiment(folder)
    assert str(caught.value).startswith(f"{folder / 'study.json'} holds an impossible setting: ")
    assert message in str(caught.value)


@pytest.mark.parametrize("field, value", [("objectives", [["val_acc"]]), ("objectives", "abc"), ("objectives", [[]]),
                                          ("seeds", 5), ("num_samples", "x")])
def test_show_and_report_answer_a_wrongly_typed_study_json_with_an_error(tmp_path, capsys, field, value):
    folder = make_baseline(tmp_path / "baseline")
    write_settings(folder, **{field: value})
    for command in ("show", "report"):
        code, _ = run_cli([command, "baseline", "--storage-path", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: experiment 'baseline': {folder / 'study.json'} holds an "
                                            f"impossible setting: ") and field in err
        assert "Traceback" not in err
    assert not (folder / "report").exists()


def test_a_plain_tune_experiment_and_a_valid_study_json_still_load(tmp_path):
    plain = tmp_path / "plain"
    write_trial(plain, "a", [report_row(1), report_row(2)])
    exp = load_experiment(plain)
    assert exp.kind == "tune" and exp.trials["status"].tolist() == ["finished"]
    search = make_search(tmp_path / "search", max_t=1)
    write_settings(search, kind="search", max_t=1, grace_period=None, num_samples=2,
                   objectives=[["val_balanced_acc", "max"], ["val_ece", "min"]])
    exp = load_experiment(search)
    assert (exp.kind, exp.expected_trials, exp.stop_epoch, exp.objectives) == \
        ("search", 2, 1, (("val_balanced_acc", "max"), ("val_ece", "min")))
    assert exp.settings == StudySettings.load(search)  # the reader holds the model itself


# --- 2. report rows with wrongly typed values --------------------------------------------------------------
BAD_EPOCHS = ['{"epoch": [1], "val_balanced_acc": 0.5}', '{"epoch": "x", "val_balanced_acc": 0.5}',
              '{"epoch": 0, "val_balanced_acc": 0.5}', '{"epoch": -3}', '{"epoch": true}', '{"epoch": 1.5}',
              '{"epoch": 1e400}', '{"epoch": null}', '{"val_balanced_acc": 0.5}', '{"epoch": {"a": 1}}',
              '[1, 2]', '"text"']


@pytest.mark.parametrize("bad", BAD_EPOCHS)
def test_a_row_whose_epoch_is_not_a_positive_int_is_skipped_and_counted(tmp_path, capsys, bad):
    folder = make_baseline(tmp_path / "baseline", seeds=(1,),
                           rows=lambda seed: [report_row(1), bad, report_row(2), "{cut mid-wri"])
    exp = load_experiment(folder)
    assert exp.skipped_lines == 2  # the wrongly typed row and the unparsable line
    trial = exp.trials.iloc[0]
    assert (trial["status"], trial["epochs_run"], trial["stop_epoch"]) == ("finished", 2, 2)
    assert exp.epochs["epoch"].tolist() == [1, 2]
    assert trial["best_val_balanced_acc"] == pytest.approx(0.21) and trial["best_val_balanced_acc_epoch"] == 2
    code, out = run_cli(["show", str(folder)])
    assert code == 0 and "1 finished" in out and capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["1e400", "-1e400", '"x"', "[2]", "true", "0", "-2", "1.5", "NaN",
                                   "100000000000000000000000000000000000000000"])
def test_wrongly_typed_epoch_counts_are_taken_as_missing(tmp_path, value):
    """planned_epochs / stop_epoch / training_iteration in a row that are not finite positive ints: the
    trial's config (epochs 2) and Tune config (stop_epoch 2) say where it ends."""
    last = json.dumps(report_row(2)).replace('"planned_epochs": 2', f'"planned_epochs": {value}') \
        .replace('"stop_epoch": 2', f'"stop_epoch": {value}').replace('"training_iteration": 2',
                                                                      f'"training_iteration": {value}')
    folder = make_baseline(tmp_path / "baseline", seeds=(1,), rows=lambda seed: [report_row(1), last])
    exp = load_experiment(folder)
    trial = exp.trials.iloc[0]
    assert exp.skipped_lines == 0
    assert (trial["status"], trial["epochs_run"], trial["stop_epoch"], trial["epochs"]) == ("finished", 2, 2, 2)


def test_without_a_readable_config_the_row_and_settings_fill_in(tmp_path):
    """No params.json: planned and stop epochs come from the rows when they are ints, else study.json."""
    folder = make_baseline(tmp_path / "baseline", seeds=(1,))
    (folder / "trial_t1" / "params.json").unlink()
    lines = [report_row(1), report_row(2, planned_epochs=1e400, stop_epoch="2", seed=1e400, num_experts=[3],
                                        mixup_alpha="a")]
    (folder / "trial_t1" / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    exp = load_experiment(folder)
    trial = exp.trials.iloc[0]
    assert (trial["status"], trial["epochs_run"], trial["stop_epoch"], trial["epochs"]) == ("finished", 2, 2, 2)
    assert pd.isna(trial["seed"]) and pd.isna(trial["num_experts"]) and pd.isna(trial["mixup_alpha"])
    assert exp.summary().loc[0, "n"] == 1


# --- 3. metric values that are not numbers ----------------------------------------------------------------
def test_non_numeric_metric_values_become_nan_and_the_report_is_written(tmp_path, capsys):
    def rows(seed):
        if seed == 1:
            return [report_row(1, val_balanced_acc="high", train_loss=True),
                    report_row(2, val_balanced_acc="high", test_full_acc=[0.5], hostname=["a"], device=5,
                               time_total_s="long", peak_memory_mb="big")]
        return [report_row(1, seed=seed), report_row(2, seed=seed)]
    folder = make_baseline(tmp_path / "baseline", seeds=(1, 2, 3), rows=rows)
    exp = load_experiment(folder)
    trials = exp.trials.set_index("trial_id")
    for column in ("val_balanced_acc", "test_full_acc", "wall_time_s"):
        assert pd.api.types.is_float_dtype(trials[column]) and math.isnan(trials.loc["t1", column])
    assert "best_val_balanced_acc" not in trials or math.isnan(trials.loc["t1", "best_val_balanced_acc"])
    assert trials.loc["t2", "val_balanced_acc"] == pytest.approx(0.22)
    history = exp.epochs[exp.epochs["trial_id"] == "t1"]
    assert pd.api.types.is_float_dtype(exp.epochs["val_balanced_acc"]) and history["val_balanced_acc"].isna().all()
    assert pd.api.types.is_float_dtype(exp.epochs["train_loss"])
    assert history["train_loss"].isna().tolist() == [True, False]  # the bool is no loss
    assert exp.sorted_trials()["trial_id"].tolist() == ["t3", "t2", "t1"]
    summary = exp.summary()
    assert summary.loc[0, "n"] == 3 and summary.loc[0, "val_balanced_acc_mean"] == pytest.approx((0.22 + 0.23) / 2)

    code, out = run_cli(["report", str(folder)])
    assert code == 0 and out.strip() == f"report: {folder / 'report' / 'index.html'}"
    assert capsys.readouterr().err == ""
    table = pd.read_parquet(folder / "report" / "tables" / "trials.parquet").set_index("trial_id")
    assert math.isnan(table.loc["t1", "val_balanced_acc"]) and table.loc["t1", "host"] == "['a']"
    assert table.loc["t1", "device"] == "5"
    epochs = pd.read_parquet(folder / "report" / "tables" / "epochs.parquet")
    assert len(epochs) == 6 and epochs["val_balanced_acc"].isna().sum() == 2


def test_columns_of_one_kind_stay_and_mixed_ones_become_numbers_or_text():
    from results.report import parquet_bytes
    from results.tables import tidy_columns
    frame = pd.DataFrame({"use_norm": [True, None], "note": ["a", [1]], "val_x": ["high", 0.5], "other": ["a", 2],
                          "host": [5, None], "dataset": ["synthetic-lt", None]}, dtype=object)
    tidy = tidy_columns(frame)
    assert tidy["use_norm"].tolist() == [True, None] and tidy["dataset"].tolist() == ["synthetic-lt", None]
    assert tidy["note"].tolist() == ["a", "[1]"] and tidy["host"][0] == "5" and pd.isna(tidy["host"][1])
    assert tidy["val_x"].tolist()[1] == 0.5 and math.isnan(tidy["val_x"][0])
    assert math.isnan(tidy["other"][0]) and tidy["other"][1] == 2
    mixed = pd.DataFrame({"x": pd.Series([1, "a", [2], None], dtype=object), "y": [1.5, 2.5, None, 0.0]})
    back = pd.read_parquet(io.BytesIO(parquet_bytes(mixed)))  # Arrow cannot type x: written as text
    assert back["x"].tolist()[:3] == ["1", "a", "[2]"] and pd.isna(back["x"][3])
    assert back["y"].tolist()[:2] == [1.5, 2.5]


def test_a_report_that_fails_midway_leaves_no_folder(tmp_path, monkeypatch):
    from results import figures, report
    folder = make_baseline(tmp_path / "baseline")

    def broken(name, exp, baseline=None):
        raise RuntimeError("drawing failed")
    monkeypatch.setattr(figures, "render", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.write_report(load_experiment(folder))
    assert not (folder / "report").exists()


# --- 4. baselines that cannot be compared -----------------------------------------------------------------
def test_report_refuses_a_baseline_that_stops_at_another_epoch(tmp_path, capsys):
    baseline = make_baseline(tmp_path / "baseline")
    search = make_search(tmp_path / "search", max_t=1)
    exp = load_experiment(search)
    assert set(exp.trials["epochs"]) == {2} and exp.stop_epoch == 1  # same recipe, stopped at --max-t 1
    code, _ = run_cli(["report", "search", "--baseline", "baseline", "--storage-path", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == ("error: --baseline: its trials stop at epoch 2, this experiment's at epoch 1 "
                                       "(--max-t); compare experiments whose trials stop at the same epoch\n")
    assert not (search / "report").exists()  # refused before any file was written
    with pytest.raises(stats.NotComparable, match="stop at epoch 2, this experiment's at epoch 1"):
        exp.compare(load_experiment(baseline))


def test_report_refuses_a_search_as_the_baseline(tmp_path, capsys):
    make_search(tmp_path / "search", max_t=1)
    other = make_search(tmp_path / "other", max_t=1)
    code, _ = run_cli(["report", "other", "--baseline", "search", "--storage-path", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == (
        "error: --baseline: it is a 'search' experiment, not a 'baseline' one; compare with the seeds of a "
        "baseline (python -m study.run baseline --seeds ...) trained on the same data to the same epoch\n")
    assert not (other / "report").exists()
    plain = tmp_path / "plain"
    write_trial(plain, "a", [report_row(1, stop=1)])
    with pytest.raises(stats.NotComparable, match="it is a 'tune' experiment, not a 'baseline' one"):
        load_experiment(tmp_path / "search").compare(load_experiment(plain))


def test_a_comparable_baseline_is_still_accepted(tmp_path, capsys):
    baseline = make_baseline(tmp_path / "baseline", seeds=(1, 2, 3))
    search = make_search(tmp_path / "search", max_t=2)
    comparison = load_experiment(search).compare(load_experiment(baseline))
    assert set(comparison["metric"]) == {"val_balanced_acc", "test_balanced_acc", "test_full_acc"}
    code, out = run_cli(["report", "search", "--baseline", "baseline", "--storage-path", str(tmp_path)])
    assert code == 0 and (search / "report" / "tables" / "baseline_comparison.parquet").exists()


def test_a_baseline_has_an_empty_optuna_table_with_its_columns(tmp_path):
    table = load_experiment(make_baseline(tmp_path / "exp")).optuna_trials
    assert table.empty and list(table.columns) == ["number", "state", "val_balanced_acc"]
    assert str(table["number"].dtype) == "int64"


def test_the_trials_view_shows_the_searched_tau_spread_beside_the_tau_list_it_made(tmp_path):
    from results.console import default_columns
    exp = load_experiment(make_search(tmp_path / "search", points=((0.4, 1.0), (0.2, 0.5), (0.3, 1.25))))
    columns = default_columns(exp)
    assert columns.index("tau_spread") + 1 == columns.index("tau_list")
    trials = exp.trials.sort_values("tau_spread")
    assert list(trials["tau_spread"]) == [0.5, 1.0, 1.25]
    assert list(trials["tau_list"]) == ["0.5;1;1.5", "0;1;2", "-0.25;1;2.25"]  # a τ below 0 as it is


def test_time_columns_are_moments_in_utc(tmp_path):
    exp = load_experiment(make_baseline(tmp_path / "exp", rows=lambda seed: [report_row(1, seed=seed, timestamp=1796000000),
                                                                        report_row(2, seed=seed, timestamp=1796000060)]))
    assert str(exp.trials["last_update"].dt.tz) == "UTC"
    assert str(exp.epochs["timestamp"].dt.tz) == "UTC"
    assert exp.epochs["timestamp"].iloc[0] == pd.Timestamp(1796000000, unit="s", tz="UTC")


def test_the_best_epoch_stays_an_integer_when_a_trial_has_none(tmp_path):
    folder = make_baseline(tmp_path / "exp")
    write_trial(folder, "t9", [report_row(1, seed=9, val_balanced_acc="not a number")])
    trials = load_experiment(folder).trials.set_index("trial_id")
    column = trials["best_val_balanced_acc_epoch"]
    assert str(column.dtype) == "Int64" and column["t1"] == 2 and pd.isna(column["t9"])
