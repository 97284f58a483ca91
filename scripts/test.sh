#!/usr/bin/env bash
# The test suite, in the repository's own .venv (made and installed with the test extra on first use):
# Debian's Fashion-MNIST and Chromium first when missing, then pytest with any ARGS given
# (`bash scripts/test.sh -m 'not ray'` for the quick loop). `.ci/run` runs exactly this.
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
echo "running the tests: pytest $*"
status=0
"$VENV/bin/python" -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; check the paths and -k/-m expressions given ($*)" >&2
fi
exit "$status"
