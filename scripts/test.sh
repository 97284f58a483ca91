#!/usr/bin/env bash
# Installs everything the tests need (Debian's Fashion-MNIST, the package with its test extra), then
# runs the test suite. `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null; then
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
    else
        echo "warning: no apt-get; the Fashion-MNIST tests will be skipped" >&2
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
