#!/usr/bin/env bash
# Installs the toolkit, then runs a study: `bash scripts/run.sh baseline` (the canonical recipe),
# or any `python -m study.run` command and options.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
exec python -m study.run "${@:-baseline}"
