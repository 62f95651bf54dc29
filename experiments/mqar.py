"""Multi-query associative recall (Arora et al. 2023, Zoology): recall the value bound to each queried key.

Launch (CPU, tiny: 128 tokens, 16 key-value pairs; the metric is accuracy at query positions):
  research compare --config experiments/mqar.py --variants softmax,linear,based --seeds 1 --name mqar_tiny
Zoology's finding to reproduce: fixed-size-state (linear) mixers degrade as num_kv grows at fixed width,
softmax does not. The width x length grid (2 layers; seq_len must be >= 4*num_kv, as in Zoology; each --set
with two keys moves them together):
  research compare --config experiments/mqar.py --variants softmax,linear,based --seeds 1 --name mqar_grid \
    --set data.seq_len=64,data.num_kv=4 --set data.seq_len=128,data.num_kv=8 --set data.seq_len=256,data.num_kv=16 \
    --set model.d_model=32,model.mlp_dim=64 --set model.d_model=64,model.mlp_dim=128 \
    --set model.d_model=128,model.mlp_dim=256
Baseline: the most frequent value (~1/126 at the default vocabulary).
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config("mqar", train=dict(batch_size=32, eval_batch_size=100, num_steps=600, eval_every=100))
  return finish(c, arg)
