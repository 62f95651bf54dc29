"""Word-in-context from WordNet example sentences: do two uses of a lemma share a synset? (test lemmas unseen)

Needs the corpus once: research data install wordnet
Launch (CPU, tiny; rows are "[CLS] s1 [SEP] s2", 64 sentencepiece tokens):
  research train --config experiments/wic.py:attention=linear --workdir runs/wic-linear
Baseline: 50% (every split is balanced). Polysemy needs context, so this probes contextual embeddings.
Measured (results/polysemy_*.md): the imported MiniLM's frozen target-word similarity 59.8% test at layer 4
(51.5% at the embeddings); our tiny MLM encoders 50.0-55.6%, within ~2 standard errors of chance.
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config("wic", train=dict(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=100))
  return finish(c, arg)
