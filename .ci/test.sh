#!/usr/bin/env bash
# The whole test suite, as a newcomer runs it on a fresh machine: installs what the tests need
# (redis-server), then format check, clippy, every test of the workspace, and the clients' tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi
# The distribution package may start its own server on 6379; the tests never use it.

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --all-targets

# Clients against the real gateway (target/debug/wsgate, built by cargo test above).
bash clients/python/test.sh -q
# Deployment files: Dockerfile, Compose, nginx, Helm (needs the binary built above).
bash deploy/test.sh
# JS client against the real gateway, and the demo page in headless Chromium across two instances.
bash clients/test.sh
