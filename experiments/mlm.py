"""Masked-language-model pretraining (80/10/10 masking, packed 128-token rows) on offline corpora.

Needs the corpus once: research data install python-doc
Launch (CPU, tiny):
  research train --config experiments/mlm.py --workdir runs/mlm
  research train --config "experiments/mlm.py:data.corpora=('python-doc','linux-doc')" --workdir runs/mlm2
  research train --config experiments/mlm.py:data.self_task=listops --workdir runs/mlm-listops  (self-pretraining)
The metric is masked-token accuracy; the baseline predicts the most frequent train token (3.5% on python-doc).
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "mlm",
    model=dict(d_model=128, num_heads=4, mlp_dim=256),
    train=dict(batch_size=32, eval_batch_size=64, num_steps=600, eval_every=100),
  )
  base = {
    "data": dict(max_documents=0, seq_len=512),
    "model": dict(d_model=768, num_heads=12, num_layers=12, mlp_dim=3072, dtype="bfloat16"),
    "train": dict(num_steps=100_000, eval_every=2_000, learning_rate=1e-4, warmup_steps=10_000),
  }
  return finish(c, arg, {"base": base})
