#!/usr/bin/env bash
# Paper-size LRA ListOps row (issue 7) on one accelerator: LRA's released config (6 layers, d512, 8 heads,
# MLP 2048, batch 32, 5K steps, 2K tokens, bf16) for softmax and linear, one seed each. Writes
# results/gpu/<device>/lra_listops_paper.{md,csv,json,png}; runs/ keeps checkpoints so a cut-off run resumes.
# Usage: bash scripts/gpu_lra_listops.sh [extra research compare flags]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
python -c "import jax; d = jax.devices()[0]; assert d.platform != 'cpu'" 2>/dev/null \
  || { echo "error: no GPU/TPU visible to JAX; on a CUDA machine: .venv/bin/pip install \"jax[cuda12]==$(python -c 'import jax; print(jax.__version__)')\"" >&2; exit 2; }
device=$(python -c "import jax, re; print(re.sub(r'[^A-Za-z0-9]+', '-', jax.devices()[0].device_kind).strip('-').lower())")
research compare --config experiments/lra.py:task=listops,size=paper --variants "${VARIANTS:-softmax,linear}" \
  --seeds "${SEEDS:-1}" --workdir "runs/gpu/lra_listops_paper" --out "results/gpu/${device}" \
  --name lra_listops_paper --no-progress "$@"
