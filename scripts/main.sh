#!/usr/bin/env bash
# The main job: compare attention variants on generated ListOps (tiny config, CPU-sized) and write
# results/listops_tiny.{md,json,png}. Finished runs in runs/main are reused; interrupted ones resume.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
research compare --config experiments/listops.py --variants "${VARIANTS:-softmax,linear}" --seeds "${SEEDS:-2}" \
  --workdir runs/main --out results --name listops_tiny "$@"
