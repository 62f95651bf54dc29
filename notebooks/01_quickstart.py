# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Quickstart: one encoder, attention variants swapped by name
#
# Every attention variant in this repository is a *mixer*: a Flax module that takes queries, keys and values
# shaped `B×L×H×D` plus a `Segments` object (which positions are padding, which belong to which sequence) and
# returns `B×L×H×D`. The encoder looks its mixer up in a registry by name, so the rest of the model (embeddings,
# projections, MLPs, the classifier head) is the same for every variant.
#
# In this notebook we
#
# 1. look at the registry and what each variant declares it can do,
# 2. build the same classifier with three different mixers and check that only the mixer differs,
# 3. train each on ListOps (nested list operations like `[MAX 2 9 [MIN 4 7 ] 0 ]` → 9, ten classes) with the same
#    `train()` the command line uses, and plot the curves side by side,
# 4. see the one-line command that does all of this with several seeds and writes a results table.
#
# **Smoke mode.** The test suite runs this notebook with `RESEARCH_SMOKE=1`: a tiny model, a tiny data set and a
# dozen training steps, so the whole notebook takes seconds. Its accuracies and speeds say nothing about the
# variants; they only show that the pipeline runs. Without the variable the notebook trains 300 steps per variant
# (a few minutes on a laptop CPU).

# %%
import functools
import json
import os
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import jax
import matplotlib.pyplot as plt
import numpy as np

from research import attention
from research.attention.masks import Segments
from research.config import load_config
from research.data.pipeline import build_task, train_dataset
from research.data.tasks.listops import detokenize
from research.models.encoder import EncoderConfig
from research.models.heads import Classifier
from research.train.loop import train

SMOKE = os.environ.get("RESEARCH_SMOKE") == "1"  # the test suite sets this: tiny model and data, 12 steps
VARIANTS = ("softmax", "linear", "hedgehog")
if SMOKE:  # the tiny ListOps of tests/train/common.py (short expressions, a 32-wide model), fewer examples
  SIZE = (
    "data.num_train=256,data.num_val=64,data.num_test=64,data.max_length=48,data.max_depth=2,data.min_length=8,"
    "model.d_model=32,model.num_heads=4,model.num_layers=2,model.mlp_dim=64,"
    "train.batch_size=16,train.eval_batch_size=64,train.warmup_steps=2"
  )
  SCHEDULE = "steps=12,train.eval_every=4,train.log_every=2"
else:  # experiments/listops.py as it is (2 layers, d64, up to 96 tokens, 20k training expressions)
  SIZE = ""
  SCHEDULE = "steps=300,train.eval_every=50,train.log_every=10"
print(f"smoke={SMOKE}; jax {jax.__version__} on {jax.devices()[0].device_kind}")
t_start = time.perf_counter()

# %% [markdown]
# ## 1. The registry
#
# `attention.names()` lists every registered variant; `attention.capabilities(name)` is what the variant promises.
# These promises are not documentation only: the conformance suite (`research/attention/conformance.py`, run for
# every registered name by `tests/attention/test_conformance.py`) tests each one, and the encoder refuses a
# configuration the variant does not support (e.g. `causal=True` with FNet) before anything is compiled.

# %%
print(f"{len(attention.names())} variants:", ", ".join(attention.names()))
print()
print(f"{'name':14s} {'causal':>6s} {'packing':>7s} {'weights':>7s} {'positions':15s} {'complexity':24s} paper")
for name in attention.names():
  c = attention.capabilities(name)
  print(
    f"{name:14s} {'yes' if c.supports_causal else '-':>6s} {'yes' if c.supports_packing else '-':>7s} "
    f"{'yes' if c.implied_weights else '-':>7s} {'+'.join(c.positions):15s} {c.complexity:24s} {c.paper}"
  )

# %% [markdown]
# Columns: `causal` — can run as a decoder (token *i* sees only *j ≤ i*); `packing` — several sequences can share
# one row (segment ids); `weights` — the variant can materialise the L×S attention matrix it implies
# (`implied_weights`), even if its fast path never builds it; `positions` — position schemes it works with;
# `complexity` — time in sequence length N and head dim d. A mixer's own options live in a frozen `Config`
# dataclass; `attention.make_config(name, {...})` builds it from overrides (an unknown option is a clear error).
# The defaults:

# %%
for name in VARIANTS:
  print(f"{name:9s}", attention.make_config(name))

# %% [markdown]
# ## 2. The same classifier, three mixers
#
# First the data. `load_config` reads `experiments/listops.py` and applies `key=value` overrides (the same
# syntax as on the command line); `build_task` generates the seeded ListOps splits. A row starts with a `<cls>`
# token, which the classifier pools, and is right-padded with 0.

# %%
config = load_config("experiments/listops.py:" + SIZE)
task = build_task(config.task, config.data.to_dict())
batch = train_dataset(task, 8, seed=0)[0]  # batch 0 of the training stream: tokens, segment_ids, positions, ...
segments = Segments.from_batch(batch)
print({k: v.shape for k, v in batch.items()})
print(f"vocabulary {task.vocab_size}, {task.num_classes} classes, rows of {task.seq_len} tokens")
print(f"majority-class baseline: {task.majority_baseline:.1%} (always predicting the most frequent training label)")
print(f"example (target {batch['targets'][0]}, {int(segments.lengths()[0])} tokens):")
print(" ".join(detokenize(batch["tokens"][0])))

# %% [markdown]
# Now one `EncoderConfig` per variant, identical except for `attention=`, wrapped in the `Classifier` head. We
# `init` each with the **same** random key and `apply` it to the batch. What to look for:
#
# * the logits have the same shape for every variant;
# * parameters that exist only for one variant sit under `.../mixer/...` (hedgehog learns its feature maps;
#   performer keeps its random features in a separate collection, `random_features`, which is not trained);
# * every shared parameter is *bitwise identical* across variants (Flax derives each parameter's random key from
#   its path), so any difference in what the encoder computes comes from the mixer alone.
#
# At initialisation the logits are exactly zero for every variant (the head's output layer starts at zero), so
# we compare the encoder's last hidden states instead: every block sows its output as `intermediates/hidden`,
# which `apply(..., mutable="intermediates")` returns.

# %%
m = config.model


def build(name: str) -> Classifier:
  enc = EncoderConfig(
    vocab_size=task.vocab_size,
    max_len=task.seq_len,
    d_model=m.d_model,
    num_heads=m.num_heads,
    num_layers=m.num_layers,
    mlp_dim=m.mlp_dim,
    attention=name,
  )
  return Classifier(enc, task.num_classes)


def flat(tree) -> dict[str, np.ndarray]:
  """{'collection/module/.../param': value} of a (boxed) variables tree."""
  leaves = jax.tree_util.tree_flatten_with_path(nn.meta.unbox(tree))[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x) for path, x in leaves}


built = {}
for name in (*VARIANTS, "performer"):
  model = build(name)
  variables = jax.jit(model.init)(jax.random.key(0), batch["tokens"], segments)
  apply = jax.jit(functools.partial(model.apply, mutable="intermediates"))
  logits_BxC, state = apply(variables, batch["tokens"], segments)
  hidden_BxLxE = state["intermediates"]["encoder"]["stack"]["layers"]["hidden"][0][-1]  # last layer's output
  built[name] = (flat(variables), np.asarray(logits_BxC), np.asarray(hidden_BxLxE))

base, _, base_hidden = built["softmax"]
valid = np.asarray(segments.valid)
print(f"{'variant':10s} {'logits':7s} {'params':>7s}  {'shared equal':12s} {'|Δ hidden|':>10s}  only in this variant")
for name, (tree, logits, hidden) in built.items():
  n_params = sum(x.size for k, x in tree.items() if k.startswith("params/"))
  same = all(np.array_equal(tree[k], base[k]) for k in tree if k in base)
  extra = sorted(k.replace("encoder/stack/layers/", "…/") for k in tree if k not in base)
  delta = np.abs(hidden - base_hidden)[valid].mean()  # mean over real tokens and channels
  print(f"{name:10s} {str(logits.shape):7s} {n_params:7,d}  {str(same):12s} {delta:10.3f}  {', '.join(extra) or '-'}")

# %% [markdown]
# Softmax and linear have exactly the same parameters (neither mixer has any of its own), yet their hidden
# states differ: the only thing that changed is how each token mixes the others' values. Hedgehog adds a small
# learned feature map per layer (`q_map`, `k_map`); performer adds no trainable parameter at all.
#
# The layers run under `nn.scan`, so each parameter under `encoder/stack/layers` carries a leading axis of
# length `num_layers`.
#
# ## 3. Train on ListOps
#
# `research.train.loop.train(config, workdir)` is what `research train` runs: it builds the model from the
# config, trains with AdamW + cosine schedule, evaluates on validation every `train.eval_every` steps, keeps
# checkpoints, and at the end evaluates the **best-validation checkpoint** on test. It returns a summary dict and
# writes `metrics.jsonl` (one JSON row per log step: `split` is `train` / `val` / `test`) into the workdir. We use
# a temporary directory so nothing lands in the repository.

# %%
runs = {}
for name in VARIANTS:
  config = load_config(f"experiments/listops.py:{SIZE},{SCHEDULE},attention={name}".replace(":,", ":"))
  with tempfile.TemporaryDirectory() as workdir:
    summary = train(config, workdir, progress=False)
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  runs[name] = (summary, rows)
  print(f"{name:9s} {summary['num_steps']} steps in {summary['wall_s']:5.1f} s (compile and evaluation included)")

# %%
fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 3.8))
for name, (_, rows) in runs.items():
  train_rows = [r for r in rows if r["split"] == "train"]
  val_rows = [r for r in rows if r["split"] == "val"]
  ax_loss.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label=name)
  ax_acc.plot([r["step"] for r in val_rows], [r["accuracy"] for r in val_rows], marker="o", label=name)
ax_acc.axhline(task.majority_baseline, color="gray", linestyle="--", linewidth=1, label="majority class")
ax_loss.set(xlabel="step", ylabel="train loss (cross-entropy)", title="training loss")
ax_acc.set(xlabel="step", ylabel="accuracy", title="validation accuracy")
for ax in (ax_loss, ax_acc):
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
fig.suptitle(f"ListOps, {m.num_layers} layers, d={m.d_model}{' (smoke mode: not meaningful)' if SMOKE else ''}")
fig.tight_layout()
plt.show()

# %%
print(f"{'variant':9s} {'params':>7s} {'test acc':>8s} {'(step)':>6s} {'final test':>10s} {'tokens/s':>9s}")
for name, (s, _) in runs.items():
  print(
    f"{name:9s} {s['params']:7,d} {s['test_accuracy']:8.1%} {s['best_step']:6d} {s['final_test_accuracy']:10.1%} "
    f"{s['tokens_per_s']:9,.0f}"
  )
print(f"majority class: {task.majority_baseline:.1%}; notebook wall time so far {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# How to read this table:
#
# * **test acc** is the accuracy on the test split of the checkpoint with the best validation accuracy (at the
#   step in brackets); **final test** is the last step's. Compare both with the majority-class line: ListOps has
#   ten classes but they are not balanced.
# * **tokens/s** counts real (non-padding) tokens per second of training steps, compile and evaluation excluded.
#   On a small model and a shared CPU it is noisy and says little about long sequences, where linear attention's
#   O(N) cost matters; `notebooks/04_long_context.py` measures that properly.
# * One seed per variant: differences of a point or two are within seed noise. In smoke mode (12 steps of a
#   32-wide model on 256 expressions, 64 test examples) every number here is meaningless. One full run of this
#   notebook on a 2-core CPU gave about 25% test accuracy for all three variants after 300 steps (majority class
#   12.5%): at this size ListOps does not separate them. `results/listops_tiny.md` has softmax and linear at 600
#   steps with 2 seeds each (24.6 ± 0.6% and 24.5 ± 0.0%).
# * The training loss is that of the single batch (32 rows) at each logged step, hence the noise; validation
#   accuracy is exact over the whole validation split.
#
# ## 4. The same from the command line
#
# `research compare` trains every variant × seed with this same `train()` (one workdir per run, resumable),
# then writes a results table (mean ± std over seeds), a JSON/CSV copy and the plots:
#
# ```
# research compare --config experiments/listops.py --variants softmax,linear --seeds 2
# ```
#
# Runs go to `runs/compare/` (`--workdir`) and the report to `results/compare.md` (`--out`, `--name`). Config
# overrides follow the file name: `--config experiments/listops.py:steps=300,model.d_model=128`. One run alone:
#
# ```
# research train --config experiments/listops.py:attention=hedgehog --workdir runs/listops-hedgehog
# ```
#
# **Next:** `02_attention_maps` compares what the variants attend to on a real sentence; `05_add_a_variant`
# writes a new mixer, puts it through the conformance suite and trains it exactly as above.
