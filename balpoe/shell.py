"""Commands the toolkit prints for the user to paste: they must work in the user's shell as printed.

A study run from the project's venv (`scripts/run.sh`, or `.venv/bin/python`) is often not the `python` on
the user's PATH, where the toolkit's libraries are missing: the printed command then names the running
interpreter by its full path. Every argument is quoted for a POSIX shell, and positional arguments that
start with `-` come after `--`, so that argparse reads them as names.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys


def interpreter() -> str:
    """`python` when that is the interpreter running now, else this interpreter's full path."""
    on_path = shutil.which("python")
    if on_path and os.path.abspath(on_path) == os.path.abspath(sys.executable):
        return "python"
    return sys.executable or "python"


def shell_command(module: str, command: str, *positional: str, options: tuple[str, ...] = ()) -> str:
    """`python -m MODULE COMMAND POSITIONAL… OPTIONS…`, quoted so that it parses as given (`OPTIONS -- POSITIONAL…`
    when a positional starts with `-`)."""
    words = [interpreter(), "-m", module, command]
    if any(word.startswith("-") for word in positional):
        return shlex.join([*words, *options, "--", *positional])
    return shlex.join([*words, *positional, *options])
