#!/usr/bin/env bash
# BalPoE (3 experts, τ 0/1/2, mixup α 0.4) vs a plain cross-entropy single expert (τ 0, α 0) on real,
# offline Fashion-MNIST-LT at IR 100, same short budget. Prints both runs' test metrics.
#   bash benchmarks/fashion_mnist_compare.sh [EPOCHS] [OUT_DIR] [TRAINER OPTIONS...]
# Trainer options after OUT_DIR go to both runs (e.g. --dataset synthetic-lt for a seconds-long try);
# PYTHON picks the interpreter (default: python).
set -euo pipefail
python=${PYTHON:-python}
epochs=${1:-10}
out=${2:-runs/fmnist-compare}
shift $(( $# < 2 ? $# : 2 ))
if ! [[ $epochs =~ ^[1-9][0-9]*$ ]]; then
    echo "error: EPOCHS: must be a whole number >= 1 (got '$epochs')" >&2
    exit 2
fi
"$python" -m balpoe train --dataset fashion-mnist-lt --epochs "$epochs" --save-dir "$out/balpoe" "$@"
"$python" -m balpoe train --dataset fashion-mnist-lt --epochs "$epochs" --num-experts 1 --tau-list 0 \
    --mixup-alpha 0 --save-dir "$out/plain-ce" "$@"
"$python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'model':>10} {'test bal':>8} {'many':>6} {'medium':>6} {'few':>6} {'ECE':>6} {'full acc':>8} {'full ECE':>8}")
for name in ("balpoe", "plain-ce"):
    m = json.load(open(f"{out}/{name}/metrics.json"))
    f = lambda k: "  nan" if m[k] is None else f"{100 * m[k]:6.2f}"
    print(f"{name:>10} {100 * m['test_balanced_acc']:8.2f} {f('test_many_acc')} {f('test_medium_acc')} "
          f"{f('test_few_acc')} {f('test_ece')} {100 * m['test_full_acc']:8.2f} {100 * m['test_full_ece']:8.2f}")
PY
