#!/usr/bin/env bash
# Installs everything the tests need (Debian's Fashion-MNIST and Chromium, the package with its test
# extra), then runs the test suite. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
command -v chromium >/dev/null || missing+=(chromium)   # opens the results page in the dashboard tests
if [ "${#missing[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "warning: no apt-get to install ${missing[*]}; the tests that need them will be skipped" >&2
    fi
fi
python -m pip install -q -e '.[test]'
export RAY_AUTH_MODE=disabled   # tests talk to their own local Ray; users keep token auth on
status=0
python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
fi
exit "$status"
