"""Sentiment of human-rated texts (VADER, Hutto & Gilbert 2014): binary sign or regression of the mean rating.

Needs the corpus once: research data install vader
Launch (CPU, tiny):
  research train --config experiments/sentiment.py --workdir runs/sentiment                       (tweets, binary)
  research train --config experiments/sentiment.py:data.corpus=all,data.target=regression --workdir runs/sent-reg
Regression reports MSE (the loss), Pearson r and sign accuracy; best checkpoint by validation Pearson r.
Baselines (test): tweets binary 68.5% majority; regression MSE of the train mean 2.57 (tweets), 2.72 (all).
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "sentiment", model=dict(pool="mean"), train=dict(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=100)
  )
  c = finish(c, arg)
  if c.data.target == "regression" and "best_metric" not in (arg or ""):
    c.train.best_metric = "val_pearson"
  return c
