#!/usr/bin/env bash
# The test suite (lint + pytest on CPU with 8 fake devices). Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
ruff check research tests experiments
JAX_PLATFORMS=cpu python -m pytest -q --durations=20 "$@"
