"""Pathfinder (Linsley et al. 2018; LRA): are the two endpoints connected? 32x32 images as 1,024-pixel sequences.

Launch (CPU, tiny):
  research train --config experiments/pathfinder.py:attention=linear --workdir runs/pathfinder-linear
  research train --config experiments/pathfinder.py:data.difficulty=hard --workdir runs/pathfinder-hard
`size=lra` uses LRA's 32x32 with more data and a 4-layer d128 model (accelerator). Baseline: 50% (balanced).
Measured (CPU, 16x16 easy): all 16 variants x 3 seeds at the tiny budget (results/lra_pathfinder16_tiny.md,
0.62 CPU-hours) and a 2,000-step x 32 pilot on 20k images (results/pathfinder16_pilot.md) stay at chance (test
loss ln 2 in 44 of 48 runs): Pathfinder needs far more steps than a CPU session gives.
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "pathfinder", model=dict(pool="mean"), train=dict(batch_size=16, eval_batch_size=50, num_steps=400, eval_every=100)
  )
  lra = {
    "data": dict(num_train=160_000, num_val=20_000, num_test=20_000),
    "model": dict(d_model=128, num_heads=4, num_layers=4, mlp_dim=256, dtype="bfloat16"),
    "train": dict(batch_size=128, num_steps=20_000, eval_every=1_000, learning_rate=5e-4, warmup_steps=1_000),
  }
  return finish(c, arg, {"lra": lra})
