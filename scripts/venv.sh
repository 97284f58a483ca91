# Sourced by run.sh and test.sh: the repository's own virtual environment, .venv, made when absent and
# (re)installed only when pyproject.toml changed since the last install, so a second run starts at once.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.toolkit-installed"   # lines "<sha256 of pyproject.toml> <extras>", one per install

make_venv() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null; then
        echo "error: PYTHON: no $python on PATH; install Python 3.10 or newer, or set PYTHON=/path/to/python3" >&2
        exit 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        echo "error: PYTHON: $python is Python $("$python" -c 'import platform; print(platform.python_version())'); the toolkit needs 3.10 or newer (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    echo "creating .venv (the toolkit's own virtual environment, in $ROOT) with $python"
    if ! "$python" -m venv "$VENV"; then
        rm -rf "$VENV"   # made just now by the failed command: leave nothing half-made behind
        echo "error: $python -m venv failed; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)" >&2
        exit 1
    fi
}

installed() {  # installed EXTRAS: the stamp holds this pyproject.toml with these extras ("test" holds the base too)
    local hash="$1" extras="$2"
    [ -f "$STAMP" ] || return 1
    if [ "$extras" = base ]; then grep -q "^$hash " "$STAMP"; else grep -qx "$hash $extras" "$STAMP"; fi
}

# ensure_toolkit base|test: .venv holds the toolkit (editable, so code changes need no reinstall) with
# those extras, installed from pyproject.toml as it is now.
ensure_toolkit() {
    local extras="$1" spec="$ROOT" hash
    [ "$extras" = base ] || spec="$ROOT[$extras]"
    [ -x "$VENV/bin/python" ] || make_venv
    hash="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
    installed "$hash" "$extras" && return 0
    if [ -s "$STAMP" ]; then
        echo "pyproject.toml changed since the last install: updating .venv"
    else
        echo "installing the toolkit into .venv (first time: torch and Ray, several GB, a few minutes;" \
             "after the downloads pip unpacks and installs for about two minutes without a word)…"
    fi
    if ! "$VENV/bin/python" -m pip install -e "$spec"; then
        echo "error: installing the toolkit into .venv failed (pip's message is above); fix that and run again," \
             "or delete .venv to start afresh" >&2
        exit 1
    fi
    { grep "^$hash " "$STAMP" 2>/dev/null || true; echo "$hash $extras"; } > "$STAMP.tmp"
    mv "$STAMP.tmp" "$STAMP"
    echo ".venv is ready ($("$VENV/bin/python" -c 'import platform; print("Python", platform.python_version())'))"
}
