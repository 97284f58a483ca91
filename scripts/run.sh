#!/usr/bin/env bash
# The toolkit's command, in its own .venv (made and installed on first use):
#   bash scripts/run.sh            a first study on generated data (no download, no GPU; about a minute
#                                  on a laptop CPU), its report, and the commands to try next
#   bash scripts/run.sh ARGS       python -m study.run ARGS, e.g. `baseline` (the canonical recipe)
# Paths in ARGS and the results folder (./runs) are relative to where you run it.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
ensure_toolkit base

study() { "$VENV/bin/python" -m study.run "$@"; }

if [ "$#" -gt 0 ]; then
    exec "$VENV/bin/python" -m study.run "$@"
fi

NAME=first-study
FOLDER="$PWD/runs/$NAME"
if [ -e "$FOLDER/study.json" ]; then
    echo "$FOLDER exists: showing it again (an interrupted one is finished first); delete that folder to start afresh"
    study resume "$NAME"
else
    echo "first study: the BalPoE recipe as 3 trials (seeds 1, 2, 3) of the smoke preset —" \
         "generated images, 2 epochs, no download, no GPU"
    study baseline --preset smoke --seeds 1 2 3 --name "$NAME"
fi
study report "$NAME"

cat <<EOF

Done in ${SECONDS} s. The study is in $FOLDER
(study.json: its settings; one trial_* folder per seed: metrics per epoch, checkpoints);
the report is $FOLDER/report/index.html (tables as CSV/Parquet/Markdown, figures as PNG).

Next:
EOF
next() { printf '  %-58s # %s\n' "bash $(printf %q "$0") $1" "$2"; }   # a line that pastes as it is
next "show $NAME" "the trials table again (while a study runs, too)"
next "dashboard $NAME" "the live results page; it prints its address (Ctrl-C stops it)"
next "search --preset smoke --num-samples 4" "a small search over mixup α and the experts' τ spread, with ASHA"
next "baseline --preset fmnist" "10 epochs of Fashion-MNIST-LT, real images (Debian's dataset-fashion-mnist)"
next "doctor" "check this machine before a long run"
next "baseline --data-dir DIR" "the canonical recipe on CIFAR-100-LT (DIR holds cifar-100-python/; GPUs)"
next "--help" "every command; docs/commands.md explains each option"
