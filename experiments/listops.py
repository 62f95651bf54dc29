"""ListOps (Nangia & Bowman 2018; LRA, Tay et al. 2020) from the seeded generator: 10-way classification.

Launch (CPU, tiny, ~1 min per run on 2 cores):
  research train --config experiments/listops.py:attention=linear --workdir runs/listops-linear
  research compare --config experiments/listops.py --variants softmax,linear --seeds 2
  research train --config experiments/listops.py:attention=linear+softmax --workdir runs/hybrid  (per-layer)
Measured (CPU, tiny, 600 steps; results/listops_tiny.md, results/lra_listops_tiny.md): softmax 24.7 ± 0.4,
linear 24.7 ± 0.4 test accuracy over 3 seeds vs the 12.5% majority baseline; all 16 variants 24.6-25.3%.
`size=lra` switches to LRA's lengths (500-2000 tokens, depth 10) and a 4-layer d256 model (accelerator).
"""

import ml_collections

from research.config import LRA_PRESET, base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "listops",
    data=dict(
      max_depth=3, max_args=5, min_length=16, max_length=96, num_train=20_000, num_val=1_000, num_test=2_000, seed=0
    ),
  )
  lra = {
    "data": dict(
      max_depth=10, max_args=10, min_length=500, max_length=2000, num_train=96_000, num_val=2_000, num_test=2_000
    ),
    **LRA_PRESET,
  }
  return finish(c, arg, {"lra": lra})


def sweep() -> list[str]:
  """The default comparison: every variant registered, one run each per seed."""
  return ["attention=softmax", "attention=linear"]
