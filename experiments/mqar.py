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
`size=paper` is Zoology's MQAR setting (Arora et al. 2023, HazyResearch/zoology configs): vocabulary 8,192,
100,000 train / 3,000 test sequences, 512 tokens with 64 key-value pairs, 2 layers, batch 256, 64 epochs (25,000
steps); Zoology sweeps d_model 64-512 and the learning rate over logspace(-4, -2, 4) per point (accelerator):
  research compare --config experiments/mqar.py:size=paper --variants softmax,linear,based --seeds 1 \
    --lr-grid 1e-4,4.6e-4,2.2e-3,1e-2 --set model.d_model=64,model.mlp_dim=256 \
    --set model.d_model=256,model.mlp_dim=1024
Baseline: the most frequent value (~1/126 at the default vocabulary).
Measured (results/mqar_grid.md, 1 seed, 1,000 steps): d64 softmax 100.0% (64 tokens/4 pairs), 99.4% (128/8);
linear 20.5%, 8.8%; based (no window) 22.1%, 9.6%; at 256/16 every mixer fails at this budget (softmax 6.0%).
With 3,000 steps at 256/16, d64, MLP 128 (results/mqar_256_long.md, 0.67 CPU-hours): softmax 100.0%, based 95.1%,
linear 23.8%. With 3,000 steps at 128/8 (results/mqar_3k.md, 1.03 CPU-hours): softmax 100.0% at d 32/64/128,
linear 6.9/90.1/98.2%, based 7.1/13.4/11.7% (still learning; 16.5% after 6,000 steps at d64,
results/mqar_based_6k.md); without the short conv (d64) all fail (11.8-12.5%):
  research compare --config experiments/mqar.py --variants softmax,linear,based --seeds 1 \
    --workdir runs/mqar_3k/width --set data.seq_len=128,data.num_kv=8 --set model.d_model=32,model.mlp_dim=64 \
    --set model.d_model=64,model.mlp_dim=128 --set model.d_model=128,model.mlp_dim=256 \
    --set train.num_steps=3000,train.eval_every=500
  (and --workdir runs/mqar_3k/noconv --set model.d_model=64,model.mlp_dim=128,model.conv_kernel=0; then
  research report runs/mqar_3k --out results --name mqar_3k)

Training recipe (measured on 2 CPU cores, softmax, d64, 64 tokens, 4 pairs): with the data defaults of 2,000
sequences and 600 steps at lr 1e-3 every run stalls at ~25% = guessing among the 4 values in the context (the
validation loss rises: 2,000 sequences are memorised); 20,000 sequences fix the overfitting but not the stall
(25% after 1,500 steps, with learned or rotary positions). A short causal convolution (model.conv_kernel=4,
as in Zoology/Based) lets a key's neighbour carry it, and with lr 3e-3 over 1,000+ steps softmax reaches 98%
at step 600 and 100% at step 1,000 (a 600-step cosine schedule still stops at 38%). Hence the defaults below.
"""

import ml_collections

from research.config import base_config, finish


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = base_config(
    "mqar",
    data=dict(num_train=20_000),
    model=dict(conv_kernel=4),
    train=dict(batch_size=32, eval_batch_size=100, num_steps=1_000, learning_rate=3e-3, eval_every=200),
  )
  return finish(c, arg, {"paper": PAPER})


PAPER = {  # Zoology: 100K/3K sequences of 512 tokens, 64 pairs, vocab 8,192; 2 layers; batch 256 x 64 epochs
  "data": dict(vocab_size=8_192, seq_len=512, num_kv=64, num_train=100_000, num_val=1_000, num_test=3_000),
  "model": dict(num_layers=2, d_model=128, mlp_dim=512, dtype="bfloat16"),  # Zoology's MLP: 4 x d_model
  "train": dict(batch_size=256, eval_batch_size=500, num_steps=25_000, learning_rate=1e-3, eval_every=1_000),
}
