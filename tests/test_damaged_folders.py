"""Experiment folders that crashes, other programs and people have damaged: `show`, `report` and the
tables read what they can, flag the trial (or experiment) that is damaged, and never hang or trace
back; `report --output` never leaves a half-written report. Folders are written by hand (no Ray).
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import threading
from pathlib import Path

import pandas as pd
import pytest

from conftest import assert_refused, run_cli
from results import ExperimentError, load_experiment, report, stats
from results import experiment as experiment_module
from results.tables import pareto_front
from test_results_robustness import make_baseline, report_row

RECORDS = ("result.json", "params.json", "error.txt")


def notes(exp, trial_id: str) -> str:
    return exp.trials.set_index("trial_id").loc[trial_id, "notes"]


def load_within(folder: Path, seconds: float = 20.0):
    """load_experiment in a thread: a read that blocks (a named pipe) fails the test instead of hanging it."""
    outcome = {}

    def read():
        try:
            outcome["exp"] = load_experiment(folder)
        except Exception as err:  # handed to the test
            outcome["error"] = err
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(seconds)
    assert not reader.is_alive(), f"reading {folder} blocked"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["exp"]


# --- a record that is a folder, a named pipe, or gone ---------------------------------------------------
@pytest.mark.parametrize("record", RECORDS)
def test_a_record_that_is_a_folder_flags_its_trial_and_the_others_load(tmp_path, capsys, record):
    folder = make_baseline(tmp_path / "baseline")
    damaged = folder / "trial_t1" / record
    damaged.unlink(missing_ok=True)
    damaged.mkdir()
    exp = load_experiment(folder)
    assert notes(exp, "t1").startswith(f"damaged: {record}: ") and "folder" in notes(exp, "t1")  # the file, what it is
    assert notes(exp, "t2") == ""
    t2 = exp.trials.set_index("trial_id").loc["t2"]
    assert (t2["status"], t2["val_balanced_acc"]) == ("finished", pytest.approx(0.22))
    expected_t1 = "unfinished" if record == "result.json" else "finished"  # no reports: it has not ended
    assert exp.trials.set_index("trial_id").loc["t1", "status"] == expected_t1

    code, out = run_cli(["show", "baseline", "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    assert f"warning: trial t1: {notes(exp, 't1')}\n" in out  # the note, as a warning under the table


@pytest.mark.parametrize("record", RECORDS)
def test_a_record_that_is_a_named_pipe_is_flagged_without_waiting(tmp_path, record):
    folder = make_baseline(tmp_path / "baseline")
    pipe = folder / "trial_t1" / record
    pipe.unlink(missing_ok=True)
    os.mkfifo(pipe)
    exp = load_within(folder)
    assert notes(exp, "t1").startswith(f"damaged: {record}: ") and "named pipe" in notes(exp, "t1")
    assert exp.trials.set_index("trial_id").loc["t2", "status"] == "finished"


@pytest.mark.parametrize("make", [Path.mkdir, os.mkfifo], ids=["folder", "pipe"])
def test_a_study_json_that_is_no_file_is_one_clear_error(tmp_path, capsys, make):
    folder = make_baseline(tmp_path / "baseline")
    (folder / "study.json").unlink()
    make(folder / "study.json")
    with pytest.raises(ExperimentError) as caught:
        load_within(folder)
    assert str(caught.value).startswith(f"{folder / 'study.json'} ") and "not a regular file" in str(caught.value)
    for command in ("show", "report"):
        code, _ = run_cli([command, "baseline", "--storage-path", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and err == f"error: experiment 'baseline': {caught.value}\n"
    assert not (folder / "report").exists()


def test_a_damaged_asha_record_is_named_and_the_trials_still_load(tmp_path):
    folder = make_baseline(tmp_path / "baseline")
    (folder / "asha_stopped.json").mkdir()
    exp = load_experiment(folder)
    # the record, what it is, and what follows from it: ASHA's stops read as unfinished
    assert [line.split(": ")[0] for line in exp.damaged] == ["asha_stopped.json"], exp.damaged
    assert "folder" in exp.damaged[0] and "unfinished" in exp.damaged[0]
    assert exp.warnings()[0] == f"damaged: {exp.damaged[0]}"
    assert exp.trials["status"].tolist() == ["finished", "finished"]


def test_a_trial_folder_removed_while_the_experiment_is_read_is_left_out(tmp_path, monkeypatch):
    folder = make_baseline(tmp_path / "baseline", seeds=(1, 2, 3))
    listed = experiment_module.trial_folders

    def list_then_remove(path):
        found = listed(path)
        for name in ("params.json", "result.json"):  # another program deletes trial t2 right after the listing
            (path / "trial_t2" / name).unlink()
        (path / "trial_t2").rmdir()
        return found
    monkeypatch.setattr(experiment_module, "trial_folders", list_then_remove)
    exp = load_experiment(folder)
    assert exp.trials["trial_id"].tolist() == ["t1", "t3"] and set(exp.epochs["trial_id"]) == {"t1", "t3"}
    assert exp.warnings() == []


def test_a_result_file_removed_after_the_listing_reads_as_not_yet_reported(tmp_path, monkeypatch):
    folder = make_baseline(tmp_path / "baseline")
    listed = experiment_module.trial_folders

    def list_then_remove(path):
        found = listed(path)
        (path / "trial_t1" / "result.json").unlink()
        return found
    monkeypatch.setattr(experiment_module, "trial_folders", list_then_remove)
    exp = load_experiment(folder)
    trials = exp.trials.set_index("trial_id")
    assert (trials.loc["t1", "status"], trials.loc["t1", "epochs_run"], trials.loc["t1", "notes"]) == ("unfinished", 0, "")
    assert trials.loc["t2", "status"] == "finished"


def test_an_experiment_folder_removed_while_it_is_read_is_one_clear_error(tmp_path):
    from results.reader import trial_folders
    with pytest.raises(ExperimentError, match=f"^{re.escape(str(tmp_path / 'gone'))}: "):
        trial_folders(tmp_path / "gone")  # named, not a FileNotFoundError


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_record_is_flagged(tmp_path):
    folder = make_baseline(tmp_path / "baseline")
    (folder / "trial_t1" / "result.json").chmod(0)
    exp = load_experiment(folder)
    assert notes(exp, "t1").startswith("damaged: result.json: ") and "(Permission denied)" in notes(exp, "t1")


def test_a_params_json_that_is_not_json_or_no_mapping_is_flagged(tmp_path):
    folder = make_baseline(tmp_path / "baseline", seeds=(1, 2, 3))
    (folder / "trial_t1" / "params.json").write_text('{"base": {"epo')
    (folder / "trial_t2" / "params.json").write_text("[1, 2]")
    exp = load_experiment(folder)
    assert notes(exp, "t1").startswith("damaged: params.json: ") and "JSON" in notes(exp, "t1")
    assert notes(exp, "t2").startswith("damaged: params.json: ") and "(got list)" in notes(exp, "t2")
    assert notes(exp, "t3") == ""
    assert exp.trials["status"].tolist() == ["finished"] * 3  # the reports still say how far each got


def test_a_report_line_nested_too_deeply_is_skipped_not_a_crash(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    folder = make_baseline(tmp_path / "baseline", seeds=(1,), rows=lambda seed: [report_row(1), deep, report_row(2)])
    exp = load_experiment(folder)
    assert exp.skipped_lines == 1 and exp.epochs["epoch"].tolist() == [1, 2]


# --- values that are not finite -------------------------------------------------------------------------
def test_nan_and_infinite_values_in_params_json_are_flagged_and_report_is_written(tmp_path, capsys):
    folder = make_baseline(tmp_path / "baseline", seeds=(1, 2, 3))
    for trial, change in (("t1", {"base.mixup_alpha": math.nan}), ("t2", {"seed": math.inf})):
        path = folder / f"trial_{trial}" / "params.json"
        params = json.loads(path.read_text())
        for key, value in change.items():
            target = params["base"] if key.startswith("base.") else params
            target[key.removeprefix("base.")] = value
        path.write_text(json.dumps(params))  # Python's json writes NaN and Infinity
    assert "NaN" in (folder / "trial_t1" / "params.json").read_text()
    exp = load_experiment(folder)
    assert notes(exp, "t1").startswith("params.json: mixup_alpha: ") and "nan" in notes(exp, "t1")
    assert notes(exp, "t2").startswith("params.json: seed: ")  # the field named
    assert notes(exp, "t3") == ""
    canonical, reason = stats.is_canonical(exp.trials)
    assert not canonical and "cifar100-lt" in reason and "?, synthetic-lt" in reason  # the paper's, and what is here
    assert exp.paper_comparison().empty

    code, out = run_cli(["report", "baseline", "--storage-path", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0 and out == f"report: {folder / 'report' / 'index.html'}\n" and "Traceback" not in err
    assert f"warning: trial t1: {notes(exp, 't1')}\n" in err and f"warning: trial t2: {notes(exp, 't2')}\n" in err
    table = pd.read_csv(folder / "report" / "tables" / "trials.csv").set_index("trial_id")
    assert table.loc["t1", "notes"] == notes(exp, "t1") and table.loc["t1", "mixup_alpha"] == 0.4  # from the report


@pytest.mark.parametrize("written", ["Infinity", "1e400"])
def test_an_infinite_metric_is_read_as_missing_and_never_ranked_best(tmp_path, capsys, written):
    def rows(seed):
        if seed == 1:  # a report past the stop epoch whose score overflowed
            late = json.dumps(report_row(3, seed=1, val_balanced_acc=0.5)).replace("0.5,", f"{written},", 1)
            return [report_row(1, seed=1), report_row(2, seed=1), late]
        return [report_row(1, seed=seed), report_row(2, seed=seed)]
    folder = make_baseline(tmp_path / "baseline", rows=rows)
    assert written in (folder / "trial_t1" / "result.json").read_text()
    exp = load_experiment(folder)
    trials = exp.trials.set_index("trial_id")
    assert math.isnan(trials.loc["t1", "val_balanced_acc"])
    assert trials.loc["t1", "best_val_balanced_acc"] == pytest.approx(0.21)  # the best finite epoch
    note = trials.loc["t1", "notes"]
    assert note.startswith("val_balanced_acc ") and "infinite" in note and "epoch 3" in note, note  # what, when
    assert exp.sorted_trials()["trial_id"].tolist() == ["t2", "t1"]
    assert math.isnan(exp.epochs.set_index(["trial_id", "epoch"]).loc[("t1", 3), "val_balanced_acc"])

    code, out = run_cli(["show", str(folder)])
    lines = out.splitlines()
    assert code == 0 and lines[1].split()[0] == "t2" and lines[2].split()[0] == "t1"
    assert f"warning: trial t1: {note}\n" in out


def test_infinite_values_over_many_epochs_are_summed_up_in_one_note(tmp_path):
    folder = make_baseline(tmp_path / "baseline", seeds=(1,),
                           rows=lambda seed: [report_row(e, stop=6, val_nll=math.inf if e > 1 else 1.0)
                                              for e in range(1, 7)])
    exp = load_experiment(folder)
    note = notes(exp, "t1")  # one note, with the span of epochs and how many reports it covers
    assert note.startswith("val_nll ") and note.count("val_nll") == 1, note
    assert "2…6" in note and "(5 reports)" in note, note


def test_the_pareto_front_leaves_out_infinite_values():
    frame = pd.DataFrame({"acc": [0.5, math.inf, 0.4], "ece": [0.1, 0.05, 0.2]})
    front = pareto_front(frame, [["acc", "max"], ["ece", "min"]])
    assert front.tolist() == [True, False, False]


# --- report --output: refused places, full disks, no half report ------------------------------------------
@pytest.fixture
def quick_report(monkeypatch):
    """The report's page and figures made instantly (their content is tested elsewhere): these tests are
    about where and how the files land."""
    monkeypatch.setattr(report, "render_html", lambda exp, tables, table_files, figures, *rest: (
        "<html>" + " ".join(sorted(p.relative_to(rest[-1]).as_posix() for ps in table_files.values() for p in ps))
        + f" figures {len(figures)}</html>"))
    images = {"learning_curves.png": b"\x89PNG first", "shot_groups.png": b"\x89PNG second"}
    monkeypatch.setattr(report, "render_figures", lambda exp, baseline=None: (dict(images), {}))
    return images


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_report_output_onto_a_file_or_through_one_is_refused(tmp_path, capsys, quick_report):
    make_baseline(tmp_path / "baseline")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    for output in (a_file, a_file / "report"):
        code, out = run_cli(["report", "baseline", "--storage-path", str(tmp_path), "--output", str(output)])
        err = capsys.readouterr().err
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
        assert_refused(err, "--output", then=str(a_file))  # the file in the way
    assert a_file.read_text() == "mine"


def test_report_output_in_a_read_only_place_is_refused(tmp_path, capsys, quick_report):
    from balpoe.files import writable_folder_problem
    if not writable_folder_problem("/sys/balpoe-report"):
        pytest.skip("/sys is writable here")
    make_baseline(tmp_path / "baseline")
    code, _ = run_cli(["report", "baseline", "--storage-path", str(tmp_path), "--output", "/sys/balpoe-report"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert_refused(err, "--output", then="/sys/balpoe-report")
    assert not os.path.lexists("/sys/balpoe-report")


def test_report_parts_that_are_something_else_are_refused(tmp_path, quick_report):
    exp = load_experiment(make_baseline(tmp_path / "baseline"))
    output = tmp_path / "out"
    (output / "index.html").mkdir(parents=True)
    with pytest.raises(report.ReportError, match=f"^--output: {re.escape(str(output / 'index.html'))} "):
        report.write_report(exp, output)  # the part in the way, named


@pytest.mark.parametrize("own_file", ["index.html", "tables/trials.csv", "figures/learning_curves.png"])
def test_report_files_that_no_report_wrote_are_left_alone(tmp_path, capsys, quick_report, own_file):
    """Issue 26: a report replaces only the files an earlier report wrote (its manifest lists them)."""
    make_baseline(tmp_path / "baseline")
    output = tmp_path / "mine"
    (output / own_file).parent.mkdir(parents=True)
    (output / own_file).write_bytes(b"hand-made, not a report's")
    before = folder_bytes(output)
    code, out = run_cli(["report", "baseline", "--storage-path", str(tmp_path), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2 and out == "" and err.startswith("error: --output: ") and own_file in err
    assert folder_bytes(output) == before

    (output / own_file).unlink()  # once moved away, the report can be written there, and written again
    for _ in range(2):
        assert run_cli(["report", "baseline", "--storage-path", str(tmp_path), "--output", str(output)])[0] == 0
        assert {"index.html", "tables/trials.csv", "figures/learning_curves.png"} <= set(folder_bytes(output))


def test_a_full_disk_leaves_the_previous_report_as_it_was(tmp_path, monkeypatch, quick_report):
    exp = load_experiment(make_baseline(tmp_path / "baseline"))
    index = report.write_report(exp)
    folder = index.parent
    before = folder_bytes(folder)
    assert set(before) >= {"index.html", "tables/trials.csv", "tables/epochs.parquet", "figures/shot_groups.png"}

    quick_report["learning_curves.png"] = b"\x89PNG changed"
    real_write, written = report._write_file, []

    def fill_up(path, data):
        if len(written) == 4:
            path.write_bytes(data[:10])  # the disk fills mid-file
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)
        written.append(path)
    monkeypatch.setattr(report, "_write_file", fill_up)
    with pytest.raises(report.ReportError) as caught:
        report.write_report(exp)
    message = str(caught.value)  # where, why, and the option for another place
    assert message.startswith("report: ") and f" {folder} " in message and "(No space left on device)" in message
    assert "--output" in message
    assert folder_bytes(folder) == before and sorted(p.name for p in folder.iterdir()) == [
        report.MANIFEST, "figures", "index.html", "tables"]


def test_a_full_disk_under_a_new_output_leaves_no_folder(tmp_path, capsys, monkeypatch, quick_report):
    make_baseline(tmp_path / "baseline")

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(report, "_write_file", full)
    output = tmp_path / "new" / "report"
    code, _ = run_cli(["report", "baseline", "--storage-path", str(tmp_path), "--output", str(output)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert_refused(err, "--output", f" {output} ", "(No space left on device)")
    assert not (tmp_path / "new").exists()


def test_an_interrupted_report_leaves_the_previous_one(tmp_path, monkeypatch, quick_report):
    exp = load_experiment(make_baseline(tmp_path / "baseline"))
    folder = report.write_report(exp).parent
    before = folder_bytes(folder)
    real_write = report._write_file

    def interrupted(path, data):
        if path.name == "shot_groups.png":
            raise KeyboardInterrupt
        real_write(path, data)
    monkeypatch.setattr(report, "_write_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        report.write_report(exp)
    assert folder_bytes(folder) == before


def test_a_new_report_replaces_the_old_one_whole(tmp_path, quick_report):
    exp = load_experiment(make_baseline(tmp_path / "baseline"))
    folder = report.write_report(exp).parent
    (folder / ".incoming-left-by-kill-9").mkdir()  # a report killed outright mid-write
    (folder / "notes.md").write_text("the user's own file")
    del quick_report["shot_groups.png"]  # the new report has no such figure any more
    report.write_report(exp)
    after = folder_bytes(folder)
    assert "figures/shot_groups.png" not in after and after["figures/learning_curves.png"] == b"\x89PNG first"
    assert after["notes.md"] == b"the user's own file"
    assert sorted(p.name for p in folder.iterdir()) == [report.MANIFEST, "figures", "index.html", "notes.md",
                                                        "tables"]
    assert after["index.html"].endswith(b"figures 1</html>")


def test_a_report_from_before_manifests_is_replaced_by_a_new_one(tmp_path, quick_report):
    exp = load_experiment(make_baseline(tmp_path / "baseline"))
    folder = report.write_report(exp).parent
    (folder / report.MANIFEST).unlink()  # as reports wrote their folder until they kept a manifest
    (folder / "index.html").write_text('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                                       '<title>baseline — BalPoE study</title>', encoding="utf-8")
    assert report.write_report(exp).parent == folder and (folder / report.MANIFEST).is_file()
    (folder / report.MANIFEST).unlink()
    (folder / "index.html").write_text("<html><head><title>my notes</title></head></html>")
    with pytest.raises(report.ReportError):
        report.write_report(exp)
