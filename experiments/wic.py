"""Word-in-context from WordNet example sentences: do two uses of a lemma share a synset? (test lemmas unseen)

Needs the corpus once: research data install wordnet
Launch (CPU, tiny; rows are "[CLS] s1 [SEP] s2", 64 sentencepiece tokens):
  research train --config experiments/wic.py:attention=linear --workdir runs/wic-linear
Baseline: 50% (every split is balanced). Polysemy needs context, so this probes contextual embeddings.
MLM-pretrained encoders on WiC, per variant: pretrain on the offline corpora (experiments/mlm.py), then frozen
per-layer similarity and whole-model fine-tuning with the encoder's own tokenizer:
  research train --config experiments/mlm.py:attention=linear --workdir runs/mlm_docs/linear
  research eval polysemy --checkpoint runs/mlm_docs/linear --finetune-steps 260 --name polysemy_ours
or MLM on WiC's own sentences: experiments/self_pretrain.py:task=wic. `size=paper` is the BERT-base shape
(12 layers, d768, 12 heads, MLP 3072, bf16; rows of 128 tokens, 3 epochs at batch 32, lr 3e-5 with 10%
warmup) that experiments/mlm.py:size=base pretrains; use both on an accelerator.
Measured (results/polysemy_*.md): the imported MiniLM's frozen target-word similarity 59.8% test at layer 4
(51.5% at the embeddings); our tiny MLM encoders 50.0-55.6%, within ~2 standard errors of chance.
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config("wic", train=dict(batch_size=32, eval_batch_size=128, num_steps=600, eval_every=100))
  return finish(c, arg, {"paper": PAPER})


PAPER = {  # BERT-base fine-tuning shape (Devlin et al. 2019; WiC: Pilehvar & Camacho-Collados 2019)
  "data": dict(max_len=128),
  "model": dict(d_model=768, num_heads=12, num_layers=12, mlp_dim=3072, dtype="bfloat16"),
  "train": dict(num_steps=390, learning_rate=3e-5, warmup_steps=39, eval_every=130),
}
