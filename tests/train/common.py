"""Tiny configs and synthetic batches for the training tests."""

from __future__ import annotations

import numpy as np

from research.config import load_config

TINY = (
  "data.num_train=512,data.num_val=64,data.num_test=64,data.max_length=48,data.max_depth=2,"
  "data.min_length=8,model.d_model=32,model.num_heads=4,model.num_layers=2,model.mlp_dim=64,"
  "train.batch_size=16,train.eval_batch_size=32,train.warmup_steps=2"
)


def tiny_config(extra: str = ""):
  return load_config("experiments/listops.py:" + TINY + ("," + extra if extra else ""))


def synthetic_batch(batch: int = 8, length: int = 32, vocab: int = 17, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  lengths = rng.integers(length // 2, length + 1, batch)
  idx = np.arange(length)[None]
  valid = idx < lengths[:, None]
  return {
    "tokens": np.where(valid, rng.integers(2, vocab, (batch, length)), 0).astype(np.int32),
    "segment_ids": valid.astype(np.int32),
    "positions": np.where(valid, idx, 0).astype(np.int32),
    "targets": rng.integers(0, 10, batch).astype(np.int32),
    "weights": np.ones(batch, np.float32),
  }
