"""Linearize MiniLM: distil its softmax attention into Hedgehog (or Based, Performer) linear attention.

  research linearize --config experiments/linearize.py --workdir runs/linearize/minilm-hedgehog
  research linearize --config experiments/linearize.py:size=full --feature-map based --workdir runs/linearize/based
  research linearize --config experiments/linearize.py:attention_cfg.feature_dim=64,stage2.steps=0 --workdir ...

Stage 1 trains only the feature maps on the attention-distillation loss; stage 2 fine-tunes the whole student on
hidden-state MSE + (1 − cosine) of the sentence embeddings (research/linearize.py). `size=tiny` (default,
150 + 150 steps) takes ~15 min on 2 CPU cores; `size=full` is for an accelerator.

Measured, `size=tiny` (the defaults: 150 + 150 steps, batch 8 x 128 tokens, 94 held-out rows), CPU with 2 cores
shared with other jobs (~2.8 s/step when idle). Held-out student vs MiniLM, untrained swap -> after stage 1 -> end:

  feature map   attention KL           embedding cosine        hidden MSE                s/step (1, 2)  wall
  hedgehog      1.308 -> 0.301 -> 0.300  0.522 -> 0.919 -> 0.942  0.0998 -> 0.0386 -> 0.0323  6.0, 5.9   61 min
  based         2.076 -> 0.690 -> 0.664  0.387 -> 0.759 -> 0.901  0.1360 -> 0.0937 -> 0.0549  3.6, 5.4   30 min
  performer     (no stage 1: random features; see results/linearize_minilm.md)

Then `research eval retention --student runs/linearize/minilm-hedgehog ... --name linearize_minilm` for the
retention table, plots and speed (results/linearize_minilm.md).
"""

import ml_collections

from research.config import finish

PRESETS = {
  "full": {
    "stage1": dict(steps=2_000, warmup_steps=100),
    "stage2": dict(steps=4_000, warmup_steps=200),
    "train": dict(batch_size=32, eval_every=500, eval_batch_size=64),
    "data": dict(max_tokens=256, max_documents=5_000, max_rows=40_000, held_out_rows=256),
  },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.teacher = "minilm"  # a registered pretrained model (research/pretrained.py)
  c.feature_map = "hedgehog"  # hedgehog | based | performer
  c.attention_cfg = ml_collections.ConfigDict()  # the linear mixer's options, e.g. feature_dim
  c.seed = 0
  c.data = ml_collections.ConfigDict(
    dict(
      corpora=("linux-doc", "python-doc", "wordnet"),
      max_tokens=128,
      max_documents=300,
      max_rows=1_500,
      held_out_percent=5.0,
      held_out_rows=32,
    )
  )  # held_out_rows per corpus
  c.stage1 = ml_collections.ConfigDict(dict(steps=150, learning_rate=1e-2, warmup_steps=10))
  c.stage2 = ml_collections.ConfigDict(dict(steps=150, learning_rate=1e-4, warmup_steps=10, cosine_weight=1.0))
  c.train = ml_collections.ConfigDict(
    dict(
      batch_size=8,
      eval_batch_size=16,
      eval_every=50,
      log_every=5,
      keep_last=2,
      clip_norm=1.0,
      weight_decay=0.0,
      stop_after=-1,
    )
  )  # stop_after: return after this global step (checkpointed); -1 = run to the end
  return finish(c, arg, PRESETS, aliases=None)
