"""Byte-level document matching (the LRA-Retrieval analogue): are two kernel documents linked?

Needs the corpus once: research data install linux-doc
Launch (CPU, tiny: 1,024 bytes per side, siamese encoder, [u, v, u*v, u-v] classifier as in LRA):
  research train --config experiments/retrieval.py:attention=linear --workdir runs/retrieval-linear
`size=lra` keeps LRA's 4,096 bytes per document and a 4-layer d256 model (accelerator).
Baseline: 50% (every split is balanced).
"""

import ml_collections

from research.config import ALIASES, apply_overrides, base_config, parse_overrides


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  overrides = parse_overrides(arg)
  size = overrides.pop("size", "tiny")
  c = base_config("retrieval", data=dict(max_bytes=1024), model=dict(pool="mean"),
                  train=dict(batch_size=16, eval_batch_size=50, num_steps=400, eval_every=100))
  if size == "lra":
    c.data.max_bytes = 4096
    c.model.update(d_model=256, num_heads=4, num_layers=4, mlp_dim=1024, dtype="bfloat16")
    c.train.update(batch_size=32, num_steps=5_000, eval_every=500, learning_rate=5e-4, warmup_steps=500)
  elif size != "tiny":
    raise ValueError(f"unknown size {size!r}; choose tiny or lra")
  return apply_overrides(c, overrides, ALIASES)
