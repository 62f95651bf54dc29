"""Byte-level long-document classification (the LRA-Text analogue): a kernel document -> its top directory.

Needs the corpus once: research data install linux-doc
Launch (CPU, tiny: 1,024 bytes per document, 9 classes):
  research train --config experiments/text_cls.py:attention=linear --workdir runs/text_cls-linear
  research compare --config experiments/text_cls.py --variants softmax,linear --seeds 1 --name text_cls_tiny
`size=lra` keeps LRA's 4,096 bytes and a 4-layer d256 model (accelerator).
Majority baseline: 21.8% (userspace-api) on test; see the dataset card in the README.
Measured (data.max_bytes=512, 400 steps, 3 seeds; results/lra_text_retrieval_512.md): bigbird 55.3 +- 0.0,
softmax 54.0 +- 2.6, performer 52.1 +- 0.9, linear 52.0 +- 1.0, local 47.3 +- 1.2 (179 test documents: one
standard error is ~3.7 points).
"""

import ml_collections

from research.config import LRA_PRESET, base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "text_cls",
    data=dict(max_bytes=1024),
    model=dict(pool="mean"),
    train=dict(batch_size=16, eval_batch_size=64, num_steps=400, eval_every=100),
  )
  return finish(c, arg, {"lra": {"data": dict(max_bytes=4096), **LRA_PRESET}})
