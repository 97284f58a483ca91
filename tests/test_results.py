"""results/: experiment folders → tables, statistics, figures and the report.

The folder-reading tests use small real studies run through the real CLI (session fixtures in
conftest); the statistics are checked against hand computations on known cases.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_cli
from results import ExperimentError, load_experiment
from results import stats
from results.settings import asha_rungs
from results.tables import pareto_front


def raw_rows(trial_folder) -> list[dict]:
    """A trial's result.json read by hand (the last row of each epoch), to check the tables against."""
    by_epoch = {}
    for line in (trial_folder / "result.json").read_text().splitlines():
        row = json.loads(line)
        by_epoch[row["epoch"]] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


# --- tables from a real search -----------------------------------------------------------------------
@pytest.mark.ray
def test_trials_and_epochs_tables_agree_with_the_result_files(smoke_search):
    experiment = smoke_search.experiment
    exp = load_experiment(experiment)
    stopped = set(json.loads((experiment / "asha_stopped.json").read_text()))
    assert len(exp.trials) == 4 and exp.kind == "search" and exp.metric == "val_balanced_acc"
    assert not any(c.startswith("config/") for c in exp.trials.columns)
    for _, trial in exp.trials.iterrows():
        rows = raw_rows(experiment / f"trial_{trial['trial_id']}")
        last, config = rows[-1], rows[-1]["config"]
        assert trial["epochs_run"] == last["epoch"] == len(rows)
        assert trial["status"] == ("asha_stopped" if trial["trial_id"] in stopped else "finished")
        assert trial["mixup_alpha"] == config["mixup_alpha"] == last["mixup_alpha"]
        assert trial["tau_list"] == last["tau_list"]
        assert trial["tau_spread"] == pytest.approx(config["tau_spread"])
        assert (trial["dataset"], trial["imb_factor"], trial["epochs"], trial["num_experts"], trial["seed"]) == \
            ("synthetic-lt", 0.1, 2, 3, 1)
        assert trial["val_balanced_acc"] == last["val_balanced_acc"] and trial["val_ece"] == last["val_ece"]
        best = max(rows, key=lambda r: r["val_balanced_acc"])
        assert trial["best_val_balanced_acc"] == best["val_balanced_acc"]
        assert trial["best_val_balanced_acc_epoch"] == best["epoch"]
        if trial["status"] == "finished":
            assert trial["test_balanced_acc"] == last["test_balanced_acc"]
            assert trial["test_full_acc"] == last["test_full_acc"] and trial["test_full_mce"] == last["test_full_mce"]
            shift = [k for k in last if k.startswith("shift_")]
            assert len(shift) == 26 and all(trial[k] == last[k] for k in shift)  # 11 × (plain, prior) + mean/worst
        else:
            assert math.isnan(trial["test_full_acc"])
        assert trial["wall_time_s"] == last["time_total_s"] and trial["device"] == "cpu"
        assert trial["peak_memory_mb"] == max(r["peak_memory_mb"] for r in rows)
        assert (trial["host"], trial["toolkit"], trial["torch"], trial["ray"]) == \
            (socket.gethostname(), "0.1.0", torch.__version__, "2.60.0")
        history = exp.epochs[exp.epochs["trial_id"] == trial["trial_id"]]
        assert history["epoch"].tolist() == [r["epoch"] for r in rows]
        assert history["val_balanced_acc"].tolist() == [r["val_balanced_acc"] for r in rows]
        assert history["train_loss"].tolist() == [r["train_loss"] for r in rows]
    assert exp.progress() == {"finished": 4 - len(stopped), "asha_stopped": len(stopped), "unfinished": 0,
                              "errored": 0, "not_started": 0, "complete": True}
    optuna_trials = exp.optuna_trials
    assert len(optuna_trials) == 4 and optuna_trials.loc[0, "mixup_alpha"] == 0.4
    assert "val_balanced_acc" in optuna_trials.columns


@pytest.mark.ray
def test_seed_aggregation_equals_a_hand_computation(smoke_baseline):
    exp = load_experiment(smoke_baseline.experiment)
    summary = exp.summary()
    assert len(summary) == 1 and summary.loc[0, "n"] == 2 and summary.loc[0, "seeds"] == "1 2"
    finals = [raw_rows(f)[-1] for f in sorted(smoke_baseline.experiment.glob("trial_*"))]
    for metric in ("test_full_acc", "test_balanced_acc", "val_balanced_acc", "test_full_ece"):
        a, b = (row[metric] for row in finals)
        assert summary.loc[0, f"{metric}_mean"] == pytest.approx((a + b) / 2)
        assert summary.loc[0, f"{metric}_std"] == pytest.approx(abs(a - b) / math.sqrt(2))  # ddof 1, n 2


@pytest.mark.ray
def test_a_half_written_experiment_loads_with_its_trials_marked(smoke_search, tmp_path):
    experiment = shutil.copytree(smoke_search.experiment, tmp_path / "crashed")
    exp = load_experiment(experiment)
    finished = exp.trials.loc[exp.trials["status"] == "finished", "trial_id"].tolist()
    cut, failed = experiment / f"trial_{finished[0]}", experiment / f"trial_{finished[1]}"
    text = (cut / "result.json").read_text()
    (cut / "result.json").write_text(text[: text.rindex("\n", 0, len(text) - 1) + 40])  # last row cut mid-write
    lines = (failed / "result.json").read_text().splitlines(keepends=True)
    (failed / "result.json").write_text(lines[0])  # it reported epoch 1, then crashed for good
    (failed / "error.txt").write_text("Failure # 1 (occurred at 2026-11-25_10-00-00)\n"
                                      "Traceback (most recent call last):\nValueError: out of memory\n")
    later = time.time() + 5
    os.utime(failed / "error.txt", (later, later))
    fresh = experiment / "trial_fresh000"  # Tune wrote its config, the trial has not reported yet
    fresh.mkdir()
    (fresh / "params.json").write_text((cut / "params.json").read_text())

    exp = load_experiment(experiment)
    table = exp.trials.set_index("trial_id")
    assert exp.skipped_lines == 1
    assert (table.loc[finished[0], "status"], table.loc[finished[0], "epochs_run"]) == ("unfinished", 1)
    assert (table.loc[finished[1], "status"], table.loc[finished[1], "failures"]) == ("errored", 1)
    assert table.loc[finished[1], "error"] == "ValueError: out of memory"
    assert (table.loc["fresh000", "status"], table.loc["fresh000", "epochs_run"]) == ("unfinished", 0)
    assert table.loc["fresh000", "mixup_alpha"] == table.loc[finished[0], "mixup_alpha"]  # from params.json
    progress = exp.progress()
    assert (progress["unfinished"], progress["errored"], progress["complete"]) == (2, 1, False)
    code, out = run_cli(["show", str(experiment)])
    assert code == 0 and "errored" in out and "fresh000" in out


def test_a_folder_that_is_not_an_experiment_is_named(tmp_path, capsys):
    with pytest.raises(ExperimentError, match=f"{tmp_path}/missing: no such folder"):
        load_experiment(tmp_path / "missing")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(ExperimentError, match="notes: not an experiment folder"):
        load_experiment(tmp_path / "notes")
    for command in ("show", "report"):
        code, _ = run_cli([command, "nope", "--storage-path", str(tmp_path)])
        assert code == 2
        assert f"error: experiment 'nope': {tmp_path}/nope: no such folder" in capsys.readouterr().err
    code, _ = run_cli(["report", "notes", "--storage-path", str(tmp_path)])
    assert code == 2 and "not an experiment folder" in capsys.readouterr().err


# --- the two commands ----------------------------------------------------------------------------------
@pytest.mark.ray
def test_show_sorts_by_the_objective_and_takes_columns(smoke_search, capsys):
    storage = str(smoke_search.storage)
    code, out = run_cli(["show", "search-alpha_tau-smoke", "--storage-path", storage])
    assert code == 0 and f"experiment: {smoke_search.experiment}" in out
    lines = out.splitlines()
    header = lines[0].split()
    assert header[:3] == ["trial_id", "status", "epochs_run"] and "val_balanced_acc" in header
    column = header.index("val_balanced_acc")
    values = [float(line.split()[column]) for line in lines[1:5]]
    assert values == sorted(values, reverse=True)

    code, out = run_cli(["show", "search-alpha_tau-smoke", "--storage-path", storage, "--top", "2",
                         "--columns", "trial_id", "mixup_alpha"])
    assert code == 0
    assert out.splitlines()[0].split() == ["trial_id", "mixup_alpha"] and "(2 more; --top to show more)" in out
    code, _ = run_cli(["show", "search-alpha_tau-smoke", "--storage-path", storage, "--columns", "val_acuracy"])
    assert code == 2 and "--columns: no column 'val_acuracy'" in capsys.readouterr().err


@pytest.mark.ray
def test_report_writes_tables_figures_and_an_escaped_page(smoke_search, smoke_baseline, tmp_path):
    experiment = shutil.copytree(smoke_search.experiment, tmp_path / "search-alpha_tau")
    settings = json.loads((experiment / "study.json").read_text())
    settings["versions"]["command"] += " --name '<script>alert(1)</script>'"
    (experiment / "study.json").write_text(json.dumps(settings))

    code, out = run_cli(["report", str(experiment), "--baseline", str(smoke_baseline.experiment)])
    report = experiment / "report"
    assert code == 0 and out.strip() == f"report: {report / 'index.html'}"
    page = (report / "index.html").read_text()
    figures = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert figures == ["accuracy_vs_ece.png", "alpha_effect.png", "alpha_spread_map.png", "learning_curves.png",
                       "reliability.png", "shot_groups.png", "tau_spread_effect.png", "test_agnostic.png"]
    for name in figures:
        assert f'src="figures/{name}"' in page
        assert (report / "figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "does not vary" not in page and "no finished trial" not in page  # every figure applies to a search
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    exp = load_experiment(experiment)
    for name in ("trials", "epochs", "summary", "asha_fidelity", "optuna_trials", "baseline_comparison"):
        for ext in ("csv", "parquet", "md"):
            assert f'href="tables/{name}.{ext}"' in page
        assert (report / "tables" / f"{name}.md").read_text().startswith("|")
    trials = pd.read_parquet(report / "tables" / "trials.parquet")
    assert trials["trial_id"].tolist() == exp.sorted_trials()["trial_id"].tolist()
    assert trials["val_balanced_acc"].tolist() == pytest.approx(exp.sorted_trials()["val_balanced_acc"].tolist(),
                                                               nan_ok=True)
    assert len(pd.read_csv(report / "tables" / "epochs.csv")) == len(exp.epochs)

    comparison = pd.read_csv(report / "tables" / "baseline_comparison.csv")
    baseline = load_experiment(smoke_baseline.experiment).trials
    row = comparison[comparison["metric"] == "val_balanced_acc"].iloc[0]
    seeds = baseline["val_balanced_acc"].to_numpy(float)
    half_width = 12.706204736174698 * seeds.std(ddof=1) * math.sqrt(1 + 1 / 2)  # t(0.975, 1)
    assert row["baseline_mean"] == pytest.approx(seeds.mean())
    assert row["test"] == f"95% prediction interval of 2 baseline seeds: ±{half_width:.4g}"
    assert row["beyond_noise"] == (abs(row["mean"] - seeds.mean()) > half_width)


@pytest.mark.ray
def test_report_rejects_a_baseline_on_other_data(smoke_search, tmp_path, capsys):
    other = tmp_path / "other"
    (other / "trial_0").mkdir(parents=True)
    params = json.loads(next(smoke_search.experiment.glob("trial_*/params.json")).read_text())
    params["base"]["dataset"] = "fashion-mnist-lt"
    (other / "trial_0" / "params.json").write_text(json.dumps(params))
    code, _ = run_cli(["report", str(smoke_search.experiment), "--baseline", str(other)])
    assert code == 2 and "--baseline: it differs in dataset" in capsys.readouterr().err
    assert not (smoke_search.experiment / "report").exists()  # refused before any file was written


# --- statistics on known cases -------------------------------------------------------------------------
def test_spearman_matches_a_hand_computation_and_scipy():
    from scipy.stats import spearmanr
    a, b = [1, 2, 3, 4, 5], [5, 6, 7, 8, 7]
    ranks_b = np.array([1, 2, 3.5, 5, 3.5])  # the two 7s share ranks 3 and 4
    ranks_a = np.arange(1, 6.0)
    hand = ((ranks_a - 3) * (ranks_b - 3)).sum() / math.sqrt(((ranks_a - 3) ** 2).sum() * ((ranks_b - 3) ** 2).sum())
    assert stats.spearman(a, b) == pytest.approx(hand) == pytest.approx(0.8207826816681233)
    assert stats.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert stats.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert math.isnan(stats.spearman([1, 2, 3], [4, 4, 4]))


def test_asha_fidelity_per_rung_with_verdicts():
    finals = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5, "f": 0.95}
    trials = pd.DataFrame({"trial_id": list(finals), "status": ["finished"] * 5 + ["asha_stopped"],
                           "val_balanced_acc": list(finals.values())})
    rung10 = [0.5, 0.4, 0.3, 0.2, 0.1, 0.99]    # same order as the finals: rho 1
    rung20 = [0.1, 0.2, 0.3, 0.4, 0.5, 0.99]    # reversed: rho -1
    epochs = pd.DataFrame([{"trial_id": t, "epoch": e, "val_balanced_acc": v}
                           for e, values in ((10, rung10), (20, rung20)) for t, v in zip(finals, values)])
    fidelity = stats.asha_fidelity(trials, epochs, "val_balanced_acc", [10, 20, 30])
    assert fidelity["trials"].tolist() == [5, 5, 0]  # the ASHA-stopped trial never counts
    assert fidelity["spearman"].tolist()[:2] == pytest.approx([1.0, -1.0])
    assert fidelity["verdict"][0].startswith("good") and fidelity["verdict"][1].startswith("low")
    assert fidelity["verdict"][2] == "too few trials reached the end (0) to tell"
    assert asha_rungs(165, 2, 200) == [165] and asha_rungs(50, 2, 200) == [50, 100, 200]
    from balpoe.config import Config
    from results.settings import StudySettings
    study = StudySettings(kind="baseline", name="b", storage_path="/runs", base=Config(), max_t=200, grace_period=50)
    assert stats.default_rungs(study, 200) == [50, 100]
    assert stats.default_rungs(study.with_changes(asha=False), 200) == [50, 100, 150]
    assert stats.default_rungs(None, 200) == [50, 100, 150]  # a plain Tune folder


def test_noise_test_prediction_interval_and_welch():
    from scipy.stats import ttest_ind
    baseline = np.array([0.50, 0.52, 0.54])                 # mean 0.52, std 0.02
    half_width = 4.302652729911275 * 0.02 * math.sqrt(4 / 3)  # t(0.975, 2) · s · √(1 + 1/n) = 0.0994
    assert stats.noise_test(np.array([0.60]), baseline) == (False, f"95% prediction interval of 3 baseline seeds: ±{half_width:.4g}")
    assert stats.noise_test(np.array([0.65]), baseline)[0] is True
    several = np.array([0.60, 0.61, 0.62])
    beyond, test = stats.noise_test(several, baseline)
    p_value = ttest_ind(several, baseline, equal_var=False).pvalue
    assert beyond is True and p_value < 0.05 and test == f"Welch t-test (3 vs 3 seeds): p = {p_value:.3g}"
    assert stats.noise_test(np.array([0.6]), np.array([0.5])) == (None, "cannot tell: the baseline needs ≥ 2 seeds (has 1)")


def test_paper_comparison_only_for_the_canonical_recipe():
    canonical = {"dataset": "cifar100-lt", "imb_factor": 0.01, "epochs": 200, "num_experts": 3, "tau_list": "0;1;2",
                 "mixup_alpha": 0.4, "status": "finished"}
    trials = pd.DataFrame([{**canonical, "seed": 1, "test_full_acc": 0.52, "test_full_ece": 0.05},
                           {**canonical, "seed": 2, "test_full_acc": 0.53, "test_full_ece": 0.04}])
    table = stats.paper_comparison(trials).set_index("column")
    assert table.loc["test_full_acc", "paper_pct"] == 52.0
    assert table.loc["test_full_acc", "ours_mean_pct"] == pytest.approx(52.5)
    assert table.loc["test_full_acc", "difference_pct"] == pytest.approx(0.5)
    assert table.loc["test_full_acc", "ours_std_pct"] == pytest.approx(math.sqrt(0.5))
    assert table.loc["test_full_ece", "ours_mean_pct"] == pytest.approx(4.5) and table.loc["test_full_ece", "n"] == 2
    assert table.loc["test_full_few_acc", "n"] == 0
    other = trials.assign(dataset="synthetic-lt")
    assert stats.paper_comparison(other).empty
    assert stats.is_canonical(other)[1] == "the paper's figures are for dataset = cifar100-lt (this experiment: synthetic-lt)"


def test_pareto_front_keeps_the_undominated_trials():
    frame = pd.DataFrame({"val_balanced_acc": [0.5, 0.6, 0.4, 0.6, float("nan")],
                          "val_ece": [0.10, 0.20, 0.30, 0.25, 0.01]})
    front = pareto_front(frame, [["val_balanced_acc", "max"], ["val_ece", "min"]])
    assert front.tolist() == [True, True, False, False, False]


@pytest.mark.ray
def test_export_writes_the_best_trials_logits_readable_with_numpy(smoke_search, tmp_path, capsys):
    exp = load_experiment(smoke_search.experiment)
    best = exp.sorted_trials()[lambda t: t["status"] == "finished"].iloc[0]
    code, out = run_cli(["export", str(smoke_search.experiment), "--trial", "best", "--output", str(tmp_path / "x"),
                         "--splits", "val", "test_full"])
    assert code == 0 and out.startswith(f"trial {best['trial_id']} (finished, epoch 2)")
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text())
    assert manifest["epoch"] == 2 and set(manifest["splits"]) == {"val", "test_full"}
    full = np.load(tmp_path / "x" / "test_full.npz")
    accuracy = float((full["logits"].mean(axis=1).argmax(axis=1) == full["labels"]).mean())
    assert accuracy == pytest.approx(best["test_full_acc"])  # the trial's own end-of-training figure
    code, _ = run_cli(["export", str(smoke_search.experiment), "--trial", "nope"])
    assert code == 2 and "--trial: no trial 'nope'" in capsys.readouterr().err
