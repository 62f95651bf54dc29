"""Byte-level document matching (the LRA-Retrieval analogue): are two kernel documents linked?

Needs the corpus once: research data install linux-doc
Launch (CPU, tiny: 1,024 bytes per side, siamese encoder, [u, v, u*v, u-v] classifier as in LRA):
  research train --config experiments/retrieval.py:attention=linear --workdir runs/retrieval-linear
`size=lra` keeps LRA's 4,096 bytes per document and a 4-layer d256 model (accelerator).
Baseline: 50% (every split is balanced).
Measured (data.max_bytes=512, 400 steps, 3 seeds; results/lra_text_retrieval_512.md): bigbird 62.0 +- 1.4,
local 60.4 +- 3.4, performer 56.7 +- 4.8; softmax 50.3 +- 0.5 and linear 50.8 +- 1.4 stay at chance (one class
all run at this lr and step budget; 250 test pairs: one standard error is ~3.2 points).
"""

import ml_collections

from research.config import LRA_PRESET, base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "retrieval",
    data=dict(max_bytes=1024),
    model=dict(pool="mean"),
    train=dict(batch_size=16, eval_batch_size=50, num_steps=400, eval_every=100),
  )
  return finish(c, arg, {"lra": {"data": dict(max_bytes=4096), **LRA_PRESET}})
