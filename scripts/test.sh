#!/usr/bin/env bash
# The test suite, in the repository's own .venv (made and installed with the test extra on first use):
# Debian's Fashion-MNIST, Chromium and PostgreSQL first when missing, then pytest: with ARGS, one pytest
# with them (`bash scripts/test.sh -m 'not ray'` for the quick loop); without, the whole suite in two
# pytest processes side by side. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
missing=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)   # opens the results page in the dashboard tests
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)   # --optuna-storage tests
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        echo "installing Debian packages the tests read: ${missing[*]}"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: no apt-get to install ${missing[*]}; the tests that need them will be skipped" >&2
    fi
fi
ensure_toolkit test
export RAY_AUTH_MODE=disabled   # tests talk to their own local Ray; users keep token auth on
if [ "$#" -gt 0 ]; then   # a chosen part of the suite: one pytest, as asked
    echo "running the tests: pytest $*"
    status=0
    "$VENV/bin/python" -m pytest "$@" || status=$?
    if [ "$status" -eq 5 ]; then
        echo "error: pytest collected no tests; check the paths and -k/-m expressions given ($*)" >&2
    fi
    exit "$status"
fi

# The whole suite: the tests that start Ray and the others run side by side. A Ray test leaves a core
# idle about a third of the time (Ray's start-up, Tune's polling) and the others train on one thread,
# so together they fill the two cores of a small machine (docs/development.md). The node-loss tests
# (a two-node cluster, twice), the search on PostgreSQL and the studies sent to MLflow and W&B run after the
# others in the second process, which makes the two about as long. Each ends with its 15 slowest tests. The
# second's output is shown when the first is done.
later=(tests/test_cluster_faults.py tests/test_optuna_storage.py tests/test_trackers.py)
base="$(mktemp -d)"
echo "running the tests: pytest -m ray, and beside it pytest -m 'not ray' then the Ray tests of ${later[*]} (their output follows)"
{
    code=0
    "$VENV/bin/python" -m pytest -m "not ray" --durations=15 --basetemp "$base/other" || code=$?
    "$VENV/bin/python" -m pytest -m ray "${later[@]}" --durations=15 --basetemp "$base/later" || { s=$?; [ "$code" -ne 0 ] || code=$s; }
    exit "$code"
} >"$base/other.log" 2>&1 &
other=$!
trap 'kill "$other" 2>/dev/null || true; rm -rf "$base"' EXIT
ray_status=0
"$VENV/bin/python" -m pytest -m ray "${later[@]/#/--ignore=}" --durations=15 --basetemp "$base/ray" || ray_status=$?
other_status=0
wait "$other" || other_status=$?
echo
echo "--- pytest -m 'not ray', then the Ray tests of ${later[*]} ---"
cat "$base/other.log"
if [ "$ray_status" -eq 5 ] || [ "$other_status" -eq 5 ]; then
    echo "error: a pytest run above collected no tests; the suite's markers or paths are broken" >&2
fi
[ "$ray_status" -eq 0 ] && [ "$other_status" -eq 0 ] && exit 0
[ "$ray_status" -ne 0 ] && exit "$ray_status"
exit "$other_status"
