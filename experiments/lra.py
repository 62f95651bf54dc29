"""Long Range Arena (Tay et al., ICLR 2021, arXiv:2011.04006): ListOps, Text, Retrieval, Pathfinder.

`task=` picks the task (default listops); `size=tiny` (default) is that task's CPU config from
experiments/<task>.py, `size=paper` is LRA's released config for it (google-research/long-range-arena,
lra_benchmarks/*/configs/base_*_config.py). LRA's learning rate is `lr * linear_warmup * rsqrt_decay` with
rsqrt(max(step, warmup)), i.e. a peak of lr/sqrt(warmup); our "rsqrt" schedule peaks at train.learning_rate, so
the peak is what we set (ListOps 0.05/sqrt(1000) = 1.58e-3). Differences from LRA: our data are regenerated
(ListOps generator, kernel docs instead of IMDb bytes, kernel links instead of ACL citations, our Pathfinder),
and Text uses 4,096 bytes (LRA's released config truncates IMDb at 1,000).

Launch:
  research compare --config experiments/lra.py:size=tiny --variants softmax,linear --seeds 3
  research compare --config experiments/lra.py:size=tiny --set task=pathfinder --variants softmax,linear --seeds 3
  research train --config experiments/lra.py:task=listops,size=paper --workdir runs/lra-listops (accelerator)

Measured (CPU, 2 cores, size=tiny; the README's "Reproduced results" has the comparison with LRA Table 1):
  ListOps, 16 variants x 3 seeds (results/lra_listops_tiny.md, 3.26 CPU-hours): 24.6-25.3% mean test accuracy
    for every variant (majority 12.5%; every run best at its last step); a rerun of a cell is exact.
  Text / Retrieval at data.max_bytes=512, 3 seeds (results/lra_text_retrieval_512.md, 1.21 CPU-hours): Text
    bigbird 55.3, softmax 54.0, performer 52.1, linear 52.0, local 47.3 (majority 21.8); Retrieval bigbird 62.0,
    local 60.4, performer 56.7, linear 50.8, softmax 50.3 (chance 50).
  Pathfinder 16x16, 16 variants x 3 seeds (results/lra_pathfinder16_tiny.md, 0.62 CPU-hours): chance for every
    variant (49.5-51.8% means, test loss ln 2 in 44 of 48 runs); a 2,000-step pilot on 20k images too
    (results/pathfinder16_pilot.md).
"""

import math
from pathlib import Path

import ml_collections

from research.config import ALIASES, apply_overrides, load_config, parse_overrides

TASKS = ("listops", "text_cls", "retrieval", "pathfinder")

PAPER = {
  "listops": {  # 6 layers, d512, 8 heads, MLP 2048, batch 32, 5K steps, lr 0.05, 1K warmup, rsqrt, wd 0.1, CLS
    "size": "lra",
    "model": dict(d_model=512, num_heads=8, num_layers=6, mlp_dim=2048, pool="cls", dtype="bfloat16"),
    "train": dict(
      batch_size=32,
      num_steps=5_000,
      learning_rate=0.05 / math.sqrt(1_000),
      warmup_steps=1_000,
      schedule="rsqrt",
      weight_decay=0.1,
      eval_every=500,
    ),
  },
  "text_cls": {  # 4 layers, d256, 4 heads, MLP 1024, batch 32, 20K steps, lr 0.05, 8K warmup, rsqrt, wd 0.1, CLS
    "size": "lra",
    "model": dict(d_model=256, num_heads=4, num_layers=4, mlp_dim=1024, pool="cls", dtype="bfloat16"),
    "train": dict(
      batch_size=32,
      num_steps=20_000,
      learning_rate=0.05 / math.sqrt(8_000),
      warmup_steps=8_000,
      schedule="rsqrt",
      weight_decay=0.1,
      eval_every=1_000,
    ),
  },
  "retrieval": {  # 4 layers, d128, 4 heads, MLP 512, batch 32, 5K steps, lr 0.05, 8K warmup, rsqrt, wd 0.1, CLS
    "size": "lra",
    "model": dict(d_model=128, num_heads=4, num_layers=4, mlp_dim=512, pool="cls", dtype="bfloat16"),
    "train": dict(
      batch_size=32,
      num_steps=5_000,
      learning_rate=0.05 / math.sqrt(8_000),
      warmup_steps=8_000,
      schedule="rsqrt",
      weight_decay=0.1,
      eval_every=500,
    ),
  },
  "pathfinder": {  # 1 layer, d32, 2 heads, MLP 32, batch 512, 200 epochs of 160K, lr 1e-3 cosine, dropout 0.1, MEAN
    "size": "lra",
    "model": dict(d_model=32, num_heads=2, num_layers=1, mlp_dim=32, pool="mean", dropout=0.1, dtype="bfloat16"),
    "train": dict(
      batch_size=512,
      num_steps=62_400,
      learning_rate=1e-3,
      warmup_steps=312,
      schedule="cosine",
      weight_decay=0.0,
      eval_every=312,
    ),
  },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  overrides = parse_overrides(arg)
  task = overrides.pop("task", "listops")
  size = overrides.pop("size", "tiny")
  if task not in TASKS:
    raise ValueError(f"unknown LRA task {task!r}; choose one of {', '.join(TASKS)}")
  if size not in ("tiny", "paper"):
    raise ValueError(f"unknown size {size!r}; choose tiny or paper")
  base = Path(__file__).with_name(f"{task}.py")
  if size == "tiny":
    return apply_overrides(load_config(str(base)), overrides, ALIASES)
  preset = PAPER[task]
  c = load_config(f"{base}:size={preset['size']}")  # the task's LRA-length data
  for section in ("model", "train"):
    c[section].update(preset[section])
  return apply_overrides(c, overrides, ALIASES)
