"""Commands the toolkit prints are pasted into a shell: each one parses, with the real parser, as it was
meant, whatever the experiment's name, and names an interpreter that has the toolkit."""
from __future__ import annotations

import shlex
import sys

import pytest

from balpoe.shell import interpreter
from study.options import build_parser
from study.settings import StudySettings, resume_command, study_command
from test_results_robustness import BASE

NAMES = ["first-study", "-x", "--help", "with space", "it's", "a;rm -rf b", "τ-spread"]


def settings(name: str, storage_path: str = "/srv/runs with space") -> StudySettings:
    return StudySettings(kind="baseline", name=name, storage_path=storage_path, base=BASE, max_t=2, asha=False,
                         grace_period=1)


def parsed(line: str):
    words = shlex.split(line)
    assert words[1:3] == ["-m", "study.run"]
    return build_parser().parse_args(words[3:])


@pytest.mark.parametrize("name", NAMES)
def test_a_printed_resume_or_report_command_parses_to_that_experiment(name):
    for command, line in (("resume", resume_command(settings(name)).splitlines()[-1].strip()),
                          ("report", study_command("report", settings(name)))):
        args = parsed(line)
        assert (args.command, args.name, args.storage_path) == (command, name, "/srv/runs with space")


def test_the_interpreter_is_python_only_when_that_is_the_one_running(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda program: sys.executable)
    assert interpreter() == "python"
    monkeypatch.setattr("shutil.which", lambda program: "/usr/bin/python-without-the-toolkit")
    assert interpreter() == sys.executable
    monkeypatch.setattr("shutil.which", lambda program: None)
    assert interpreter() == sys.executable


def test_the_trainers_printed_resume_command_parses_to_its_checkpoint(tmp_path):
    from balpoe.cli import build_parser as trainer_parser, interrupted_hint
    run = tmp_path / "a run; with 'quotes'"
    run.mkdir()
    (run / "checkpoint-epoch1.pth").write_bytes(b"")
    args = trainer_parser().parse_args(["train", "--resume", str(run / "checkpoint-epoch1.pth")])
    words = shlex.split(interrupted_hint(args).splitlines()[-1])
    assert words[1:3] == ["-m", "balpoe"]
    again = trainer_parser().parse_args(words[3:])
    assert (again.command, again.resume) == ("train", str(run / "checkpoint-epoch1.pth"))


@pytest.mark.parametrize("module, argv", [("study.run", ["search", "--max-t", "abc"]),
                                          ("balpoe", ["train", "--lr", "x"])])
def test_the_help_a_usage_error_points_to_runs_as_printed(module, argv, capsys):
    """The pointer to --help after a mistake names this interpreter, so it runs outside the venv too."""
    import subprocess
    from balpoe.cli import build_parser as trainer_parser
    parser = build_parser() if module == "study.run" else trainer_parser()
    with pytest.raises(SystemExit) as stopped:
        parser.parse_args(argv)
    assert stopped.value.code == 2
    hint = capsys.readouterr().err.splitlines()[-1]
    words = shlex.split(hint[hint.index("`") + 1:hint.rindex("`")])
    assert words == [interpreter(), "-m", module, argv[0], "--help"]
    done = subprocess.run(words, capture_output=True, text=True, timeout=120)  # in this shell's PATH
    assert done.returncode == 0 and argv[1] in done.stdout
