"""The README run as a new user runs it: its `bash scripts/run.sh` lines in order, then the commands the
first study prints next. What finishes in seconds runs: the first study, every smoke-preset study,
`show` and `report` of a study an earlier line made, `doctor` and `--help`. The real-sized ones (GPUs,
CIFAR-100, hours) and the live page (it serves until Ctrl-C) are left to the user; a README edit that
breaks one of the others fails here."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = "scripts/run.sh"


def readme_commands() -> list[list[str]]:
    """The arguments of each `bash scripts/run.sh …` line of the README's bash blocks, in order."""
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    words = [shlex.split(line, comments=True) for block in blocks for line in block.splitlines()]
    return [line[2:] for line in words if line[:2] == ["bash", RUN_SCRIPT]]


def printed_next_commands(out: str) -> list[list[str]]:
    """The arguments of the commands the first study prints under "Next:", one per line as
    `bash …/run.sh ARGS   # what it does` (a line that pastes as it is)."""
    lines = [shlex.split(line, comments=True) for line in out.split("\nNext:\n", 1)[1].splitlines()]
    return [line[2:] for line in lines if line[:1] == ["bash"] and line[1].endswith(RUN_SCRIPT)]


def studies_made(folder: Path) -> set[str]:
    runs = folder / "runs"
    return {p.name for p in runs.iterdir() if (p / "study.json").exists()} if runs.exists() else set()


def runs_in_seconds(args: list[str], made: set[str]) -> bool:
    if not args or args == ["--help"] or args[0] == "doctor":
        return True
    if "--preset" in args:
        return args[args.index("--preset") + 1:][:1] == ["smoke"]
    named = [args[i + 1] for i, word in enumerate(args[:-1]) if word == "--baseline"]
    return args[0] in ("show", "report") and len(args) > 1 and {args[1], *named} <= made


@pytest.mark.ray
def test_the_readme_and_the_commands_it_leads_to_run_in_order(tmp_path):
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("the README's commands run in the repository's .venv: run the suite with bash scripts/test.sh")
    ran: list[list[str]] = []

    def run(args: list[str]) -> str:
        done = subprocess.run(["bash", str(ROOT / RUN_SCRIPT), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, f"bash {RUN_SCRIPT} {shlex.join(args)} exited {done.returncode}:\n" \
                                     f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        ran.append(args)
        return done.stdout

    first_study_out = ""
    for args in readme_commands():
        if args not in ran and runs_in_seconds(args, studies_made(tmp_path)):
            out = run(args)
            first_study_out = first_study_out or (out if not args else "")
    assert [] in ran, "the README no longer runs the first study"
    for args in printed_next_commands(first_study_out):
        if args not in ran and runs_in_seconds(args, studies_made(tmp_path)):
            run(args)

    kinds = {args[0] if args else "first study" for args in ran}
    assert {"first study", "show", "report", "search", "doctor", "--help"} <= kinds, ran
    for args in ran:
        if args[:1] == ["report"]:
            assert (tmp_path / "runs" / args[1] / "report" / "index.html").exists()
    assert studies_made(tmp_path) >= {"first-study", "search-alpha_tau-smoke"}
