"""Where a result came from: toolkit version and commit, library versions, host.

Saved with every study (and so in every results table), because a number without the code that made
it cannot be reproduced or trusted.
"""
from __future__ import annotations

import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE = "balpoe-study"


def toolkit_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def git_commit(folder: Path | None = None) -> str | None:
    """The checkout's commit, with `-dirty` when files differ from it; None outside a git checkout."""
    folder = folder or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict:
    import torch
    return {"toolkit": toolkit_version(), "commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "host": socket.gethostname()}
