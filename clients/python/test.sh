#!/usr/bin/env bash
# Runs the Python client's tests against the real gateway binary.
# Creates clients/python/.venv if missing, installs the package with its test extras (pytest,
# PyJWT, and `build` for tests/test_packaging.py, which builds the sdist and wheel), builds
# target/debug/wsgate (under $CARGO_TARGET_DIR when set) if it is missing and $WSGATE_BIN does
# not name another binary, then runs pytest (extra arguments go to pytest).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

pick_python() {
    for py in "${PYTHON:-}" python3.11 python3.12 python3.13 python3.10 python3; do
        [[ -n "$py" ]] || continue
        if command -v "$py" >/dev/null 2>&1 \
            && "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$py"
            return 0
        fi
    done
    echo "test.sh: no Python >= 3.10 found (set PYTHON=...)" >&2
    return 1
}

if [[ ! -x "$venv/bin/python" ]]; then
    py="$(pick_python)"
    echo "test.sh: creating $venv with $py" >&2
    "$py" -m venv "$venv"
fi

# Quiet, and skip the network round trip when everything is already installed.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here[test]"

target="${CARGO_TARGET_DIR:-$root/target}"
if [[ -z "${WSGATE_BIN:-}" && ! -x "$target/debug/wsgate" ]]; then
    echo "test.sh: building the gateway (cargo build -p wsgate)" >&2
    (cd "$root" && cargo build -p wsgate)
fi

cd "$here"
export WSGATE_BIN="${WSGATE_BIN:-$target/debug/wsgate}"
exec "$venv/bin/python" -m pytest "$@"
