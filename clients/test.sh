#!/usr/bin/env bash
# The JavaScript client's tests and the browser end-to-end tests of the demo page and of
# examples/task-progress. Installs what they need (node packages, Debian's chromium, the Python
# client for the example's backend), builds the gateway unless WSGATE_BIN names one, runs them.
set -euo pipefail
cd "$(dirname "$0")"
CLIENTS="$PWD"
ROOT="$(cd .. && pwd)"

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node/npm not found: installing them with apt-get"
  apt_install nodejs npm
fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get"
  apt_install redis-server
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "/usr/bin/chromium not found: installing Debian's chromium with apt-get"
  apt_install chromium
fi

for dir in js e2e; do
  (
    cd "$CLIENTS/$dir"
    if [ -f package-lock.json ]; then
      npm ci --no-audit --no-fund --loglevel=error
    else
      npm install --no-audit --no-fund --loglevel=error
    fi
  )
done

# The demo page and the JS client are compiled into the binary (include_str!): build it when it
# is missing, and let cargo rebuild it when they changed (a no-op when it is up to date).
# The tests run the binary of this build (CARGO_TARGET_DIR is honoured) unless WSGATE_BIN names
# one, in which case nothing is built.
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ -z "${WSGATE_BIN:-}" ]; then
  if [ ! -x "$TARGET/debug/wsgate" ]; then
    echo "$TARGET/debug/wsgate not found: building it"
  fi
  (cd "$ROOT" && cargo build -p wsgate --quiet)
fi
export WSGATE_BIN="${WSGATE_BIN:-$TARGET/debug/wsgate}"

# The task-progress example's backend (e2e/test/task-progress.test.mjs) runs on the Python client:
# installed into clients/python/.venv (the one clients/python/test.sh uses), found via WSGATE_PYTHON.
if [ -z "${WSGATE_PYTHON:-}" ]; then
  [ -x "$CLIENTS/python/.venv/bin/python" ] || timeout 120 python3 -m venv "$CLIENTS/python/.venv"
  timeout 600 "$CLIENTS/python/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$CLIENTS/python"
  export WSGATE_PYTHON="$CLIENTS/python/.venv/bin/python"
fi

# Each run is bounded: a hung test file cannot hold the suite (each test has its own timeout too).
echo "== clients/js: node --test test/"
(cd "$CLIENTS/js" && timeout --kill-after=10 300 node --test test/)
echo "== clients/e2e: node --test test/"
(cd "$CLIENTS/e2e" && timeout --kill-after=10 300 node --test test/)
echo "== clients: all passed (screenshots: clients/e2e/artifacts/demo.png, task-progress-alice.png)"
