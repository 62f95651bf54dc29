#!/usr/bin/env bash
# The peer-library tests (tests/bench/test_peers.py) in their own venv, .venv-peers: the locked environment plus the
# optional [peers] extra (CPU torch 2.13.0, x-transformers, performer-pytorch, linear-attention-transformer) pinned by
# requirements-peers.lock. Kept out of .venv and CI on purpose: CI never installs torch (with torch installed,
# tensorboardX imports it in every process). Idempotent; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv-peers/bin/python ] || "$PY" -m venv .venv-peers
stamp=$(cat requirements.lock requirements-peers.lock pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat .venv-peers/.installed 2>/dev/null)" != "$stamp" ]; then
  echo "test_peers: installing the locked environment + [peers] into .venv-peers (once)" >&2
  .venv-peers/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
  .venv-peers/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock \
    -c requirements-peers.lock -e ".[dev,peers]"
  echo "$stamp" > .venv-peers/.installed
fi
JAX_PLATFORMS=cpu .venv-peers/bin/python -m pytest -q -p no:cacheprovider tests/bench/test_peers.py "$@"
