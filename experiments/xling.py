"""Cross-lingual paragraph retrieval on aligned LibreOffice help: find a paragraph's translation in a batch.

Needs the corpora once: research data install libreoffice-help-en-us libreoffice-help-de
Launch (CPU, tiny; dual encoder, one multilingual sentencepiece model, in-batch negatives):
  research train --config experiments/xling.py --workdir runs/xling
  research train --config "experiments/xling.py:data.pair=('en-us','fr')" --workdir runs/xling-fr
The metric is top-1 accuracy among the eval batch (train.eval_batch_size candidates): chance is 1/that.
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "xling", model=dict(pool="mean"), train=dict(batch_size=32, eval_batch_size=100, num_steps=600, eval_every=100)
  )
  return finish(c, arg)
