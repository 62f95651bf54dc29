"""ListOps (Nangia & Bowman 2018; LRA, Tay et al. 2020) from the seeded generator: 10-way classification.

Launch (CPU, tiny, ~1 min per run on 2 cores):
  research train --config experiments/listops.py:attention=linear --workdir runs/listops-linear
  research compare --config experiments/listops.py --variants softmax,linear --seeds 2
  research train --config experiments/listops.py:attention=linear+softmax --workdir runs/hybrid  (per-layer)
Expected (CPU, tiny, 600 steps): see results/listops_tiny.md — both variants clear the 10.0% majority
baseline by a wide margin (measured numbers are in the README).
`size=lra` switches to LRA's lengths (500-2000 tokens, depth 10) and a 4-layer d256 model (accelerator).
"""

import ml_collections

from research.config import apply_overrides, parse_overrides

ALIASES = {"attention": "model.attention", "steps": "train.num_steps",
           "positions": "model.positions", "batch_size": "train.batch_size"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  overrides = parse_overrides(arg)
  size = overrides.pop("size", "tiny")
  c = ml_collections.ConfigDict()
  c.task = "listops"
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
    max_depth=3, max_args=5, min_length=16, max_length=96, num_train=20_000, num_val=1_000, num_test=2_000, seed=0))
  c.model = ml_collections.ConfigDict(dict(
    attention="softmax", attention_cfg=ml_collections.ConfigDict(), d_model=64, num_heads=4, num_layers=2,
    mlp_dim=128, mlp="gelu", dropout=0.0, positions="learned", remat_policy="none", dtype="float32",
    pool="cls", max_len=0, conv_kernel=0))  # max_len 0 -> data.max_length + 1
  c.train = ml_collections.ConfigDict(dict(
    batch_size=32, eval_batch_size=256, num_steps=600, learning_rate=1e-3, warmup_steps=60, schedule="cosine",
    weight_decay=0.01, clip_norm=1.0, grad_accum=1, eval_every=100, log_every=25, keep_last=2,
    best_metric="val_accuracy", crash_after_checkpoint=-1))  # crash_after_checkpoint: test hook (SIGKILL)
  c.mesh = ml_collections.ConfigDict(dict(shape=(-1, 1, 1)))  # (data, fsdp, tensor); -1 fills the devices
  if size == "lra":
    c.data.update(max_depth=10, max_args=10, min_length=500, max_length=2000, num_train=96_000, num_val=2_000,
                  num_test=2_000)
    c.model.update(d_model=256, num_heads=4, num_layers=4, mlp_dim=1024, dtype="bfloat16")
    c.train.update(batch_size=32, num_steps=5_000, eval_every=500, learning_rate=5e-4, warmup_steps=500)
  elif size != "tiny":
    raise ValueError(f"unknown size {size!r}; choose tiny or lra")
  return apply_overrides(c, overrides, ALIASES)


def sweep() -> list[str]:
  """The default comparison: every variant registered, one run each per seed."""
  return ["attention=softmax", "attention=linear"]
