"""The user's pages and the set-up scripts: docs/commands.md names every option of both command lines,
README.md stays a short page, every relative link leads somewhere, and scripts/run.sh makes, installs
and reuses its .venv as it says (checked with a stand-in interpreter: no pip, no network)."""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import balpoe.cli
import study.run
from conftest import assert_refused

ROOT = Path(__file__).resolve().parents[1]
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def subcommands(parser: argparse.ArgumentParser, prefix: str) -> dict[str, argparse.ArgumentParser]:
    """Every parser under `parser`, by its command (`python -m study.run search`), found by walking
    the parser itself, so options added or renamed later are checked without editing this test."""
    found = {prefix: parser}
    for action in parser._actions:  # argparse offers no public walk of its actions
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found.update(subcommands(child, f"{prefix} {name}"))
    return found


def option_strings() -> list[tuple[str, str]]:
    commands = {**subcommands(study.run.build_parser(), "python -m study.run"),
                **subcommands(balpoe.cli.build_parser(), "python -m balpoe")}
    return sorted({(command, flag) for command, parser in commands.items()
                   for action in parser._actions for flag in action.option_strings})


def mentions(text: str, flag: str) -> bool:
    """`flag` as a word of its own: `--seed` is not found inside `--seeds`, nor `-s` inside `--step1`."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_every_option_of_both_command_lines_is_in_docs_commands():
    commands = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    options = option_strings()
    assert len(options) > 100  # the walk reached the subcommands (the recipe options alone are ~50)
    missing = [f"{command} {flag}" for command, flag in options if not mentions(commands, flag)]
    assert not missing, f"docs/commands.md does not mention: {', '.join(missing)}"


def test_every_subcommand_has_its_section_in_docs_commands():
    commands = (ROOT / "docs" / "commands.md").read_text(encoding="utf-8")
    headings = {line.strip("# `") for line in commands.splitlines() if line.startswith("#")}
    tops = {"python -m study.run": study.run.build_parser(), "python -m balpoe": balpoe.cli.build_parser()}
    names = [name for top, parser in tops.items() for name in subcommands(parser, top) if name != top]
    assert len(names) >= 11  # 8 study commands and 3 trainer commands, more as they come
    assert not [name for name in names if name not in headings], f"no heading for these in {sorted(headings)}"


def test_the_mention_check_tells_options_apart():
    assert mentions("`--seeds 1 2` and `-s 3`", "--seeds") and mentions("(`-s/--seed`)", "-s")
    assert not mentions("`--seeds 1 2`", "--seed") and not mentions("`--step1`", "-s")


def test_readme_is_a_short_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the reference belongs in docs/"


@pytest.mark.parametrize("page", [ROOT / "README.md", *DOC_PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file(page):
    broken = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue  # a web address or a heading of this page
        if not (page.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{page.name} links to missing files: {broken}"


def test_readme_links_into_docs():
    linked = {Path(t.split("#")[0]).name for t in LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
              if t.startswith("docs/") and t.endswith(".md")}
    assert {"commands.md", "studies.md", "results.md", "outputs.md", "architecture.md"} <= linked


# --- scripts/run.sh with a stand-in interpreter ----------------------------------------------------
FAKE_PYTHON = """#!/usr/bin/env bash
# records each call; exits with $FAKE_CODE when the call matches $FAKE_FAIL
echo "$*" >> "$FAKE_LOG"
if [ -n "${FAKE_FAIL:-}" ] && [[ "$*" == *"$FAKE_FAIL"* ]]; then exit "$FAKE_CODE"; fi
"""
FAKE_PYTHON3 = """#!/usr/bin/env bash
# a system python3: passes (or fails, with $FAKE_OLD) the version check and makes a stand-in venv
echo "python3 $*" >> "$FAKE_LOG"
if [ "$1" = -c ]; then [ -z "${FAKE_OLD:-}" ] && exit 0; [[ "$2" == *platform* ]] && echo 3.8.10; exit 1; fi
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$FAKE_PYTHON_SRC" "$3/bin/python"; fi
"""


@pytest.fixture
def checkout(tmp_path):
    """A copy of the scripts and pyproject.toml, a folder to run from, and a PATH with a fake python3."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", root / "scripts")
    shutil.copy(ROOT / "pyproject.toml", root)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_PYTHON)
    (bin_dir / "python3").write_text(FAKE_PYTHON3)
    for script in (fake, bin_dir / "python3"):
        script.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "log"),
           "FAKE_PYTHON_SRC": str(fake)}
    env.pop("PYTHON", None)
    return root, work, env


def run_script(checkout, *args: str, script: str = "run.sh", **extra_env: str):
    """The script's exit, output and its calls of the interpreter (checks with `-c` left out)."""
    root, work, env = checkout
    log = Path(env["FAKE_LOG"])
    log.unlink(missing_ok=True)
    done = subprocess.run(["bash", str(root / "scripts" / script), *args], cwd=work, capture_output=True,
                          text=True, env={**env, **extra_env}, timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, [call for call in calls if not call.startswith("-c ")]


def test_run_sh_makes_the_venv_installs_once_and_reinstalls_when_pyproject_changes(checkout):
    root = checkout[0]
    install = f"-m pip install -e {root}"
    done, calls = run_script(checkout, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("creating .venv")
    assert any(line.startswith("installing") for line in done.stdout.splitlines())  # said before pip's output
    assert calls[1] == "python3 -m venv " + str(root / ".venv")
    assert [c for c in calls if not c.startswith("python3")] == [install, "-m study.run --help"]
    stamp = (root / ".venv" / ".toolkit-installed").read_text().split()
    assert stamp == [hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest(), "base"]

    done, calls = run_script(checkout, "show", "x y")  # up to date: straight to the command, arguments intact
    assert (done.returncode, calls, done.stdout) == (0, ["-m study.run show x y"], "")

    with open(root / "pyproject.toml", "a") as file:
        file.write("\n# changed\n")
    done, calls = run_script(checkout, "--help")
    assert "pyproject.toml" in done.stdout.splitlines()[0]  # why it installs again
    assert calls == [install, "-m study.run --help"]


def test_the_test_extra_serves_run_sh_but_not_the_other_way_round(checkout):
    root = checkout[0]
    (root / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(checkout[2]["FAKE_PYTHON_SRC"], root / ".venv" / "bin" / "python")
    ensure = f"source {root}/scripts/venv.sh; ensure_toolkit base; ensure_toolkit test; ensure_toolkit base"
    done = subprocess.run(["bash", "-c", ensure], capture_output=True, text=True, env=checkout[2], timeout=60)
    calls = [c for c in Path(checkout[2]["FAKE_LOG"]).read_text().splitlines() if not c.startswith("-c")]
    assert done.returncode == 0 and calls == [f"-m pip install -e {root}", f"-m pip install -e {root}[test]"]


def test_a_failed_install_says_so_and_is_tried_again_next_time(checkout):
    done, calls = run_script(checkout, "--help", FAKE_FAIL="pip install", FAKE_CODE="1")
    assert done.returncode == 1 and "-m study.run --help" not in calls
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors and ".venv" in errors[0], done.stderr  # said so, naming what failed to install
    assert not (checkout[0] / ".venv" / ".toolkit-installed").exists()
    done, calls = run_script(checkout, "--help")
    assert done.returncode == 0 and calls[0].startswith("-m pip install")


def test_an_old_python_is_refused_with_the_fix(checkout):
    done, _ = run_script(checkout, "--help", FAKE_OLD="1")
    assert done.returncode == 1 and not (checkout[0] / ".venv").exists()
    # the interpreter found, its version, the version needed and the setting that chooses another
    assert_refused(done.stderr, "PYTHON", "python3 ", "3.8.10", "3.10", "PYTHON=")


def test_no_arguments_run_the_first_study_then_its_report_and_name_the_next_commands(checkout):
    run_script(checkout, "--help")  # install first
    done, calls = run_script(checkout)
    assert done.returncode == 0, done.stderr
    assert calls == ["-m study.run baseline --preset smoke --seeds 1 2 3 --name first-study",
                     "-m study.run report first-study"]
    folder = checkout[1] / "runs" / "first-study"
    assert f"The study is in {folder}" in done.stdout and f"{folder}/report/index.html" in done.stdout
    run_sh = f"bash {checkout[0]}/scripts/run.sh"
    for command in ("show first-study", "dashboard first-study", "search --preset smoke", "doctor",
                    "baseline --data-dir DIR"):
        assert f"{run_sh} {command}" in done.stdout

    folder.mkdir(parents=True)  # a second run shows the same study again (resume finishes an interrupted one)
    (folder / "study.json").write_text("{}")
    done, calls = run_script(checkout)
    assert done.returncode == 0 and calls == ["-m study.run resume first-study", "-m study.run report first-study"]
    assert str(folder) in done.stdout  # the study it shows again, named


def test_an_interrupted_first_study_stops_with_its_exit_code_before_the_report(checkout):
    run_script(checkout, "--help")
    done, calls = run_script(checkout, FAKE_FAIL="study.run baseline", FAKE_CODE="130")
    assert done.returncode == 130 and calls == ["-m study.run baseline --preset smoke --seeds 1 2 3 --name first-study"]
    assert "Next:" not in done.stdout


def test_run_sh_help_with_the_real_venv():
    """The real thing, where this checkout's .venv is installed and up to date (as after scripts/test.sh)."""
    stamp = ROOT / ".venv" / ".toolkit-installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not stamp.exists() or digest not in stamp.read_text():
        pytest.skip("this checkout's .venv was not installed by scripts/run.sh or scripts/test.sh")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "run.sh"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m study.run") and "installing" not in done.stdout
