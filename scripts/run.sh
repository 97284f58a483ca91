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
ray_options=()   # with no options to give, a Ray dashboard already on its port would stop the study: move ours
if ! "$VENV/bin/python" -c 'import socket; socket.socket().bind(("127.0.0.1", 8265))' 2>/dev/null; then
    port="$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    echo "port 8265 is taken (another Ray's dashboard?): this study's Ray dashboard takes port $port"
    ray_options=(--dashboard-port "$port")
fi
if [ -e "$FOLDER/study.json" ]; then
    echo "$FOLDER exists: showing it again (an interrupted one is finished first); delete that folder to start afresh"
    study resume "$NAME" "${ray_options[@]}"
else
    echo "first study: the BalPoE recipe as 3 trials (seeds 1, 2, 3) of the smoke preset —" \
         "generated images, 2 epochs, no download, no GPU"
    study baseline --preset smoke --seeds 1 2 3 --name "$NAME" "${ray_options[@]}"
fi
study report "$NAME"

me="bash $0"
cat <<EOF

Done in ${SECONDS} s. The study is in $FOLDER
(study.json: its settings; one trial_* folder per seed: metrics per epoch, checkpoints);
the report is $FOLDER/report/index.html (tables as CSV/Parquet/Markdown, figures as PNG).

Next:
  $me show $NAME                  the trials table again (while a study runs, too)
  $me dashboard $NAME             the live results page on http://127.0.0.1:8000/ (Ctrl-C stops it)
  $me search --preset smoke --num-samples 8
                                   a small search over mixup α and the experts' τ spread, with ASHA
  $me baseline --preset fmnist    10 epochs of Fashion-MNIST-LT, real images (Debian's dataset-fashion-mnist)
  $me doctor                      check this machine before a long run
  $me baseline --data-dir DIR     the canonical recipe on CIFAR-100-LT (DIR holds cifar-100-python/; GPUs)
  $me --help                      every command; docs/commands.md explains each option
EOF
