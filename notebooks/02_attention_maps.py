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
# # Attention maps: every variant on MiniLM's own queries and keys
#
# Every mixer in `research.attention` computes `out = A v` for some L×S matrix `A`, even when the fast path never
# builds it (linear attention keeps only `Σ φ(k) vᵀ`). A variant that can say what its `A` is implements
# `implied_weights(q, k, v, segments, causal)`, which materialises it; `capabilities(name).implied_weights` tells
# which do (FNet's Fourier mixing has no such matrix and says so).
#
# Here we take a real pretrained encoder, **all-MiniLM-L6-v2** (6 layers × 12 heads, softmax attention, imported
# exactly by `research/pretrained.py`), run it on one sentence, and capture in every layer
#
# * its softmax attention (`EncoderConfig.capture_attention=True` sows `intermediates/attention_weights`), and
# * the queries, keys and values that went into it.
#
# Then we hand **the same q, k, v** to every other variant and ask for its implied weights. That isolates one
# question: *given what MiniLM wants to attend to, how close does each mechanism get, layer by layer?* It is a
# zero-shot swap: the variants' own parameters (feature maps, projections, random features) are freshly
# initialised, nothing is trained. The end of the notebook relates this to `research linearize`, which trains
# them to mimic softmax.

# %%
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm

from research import attention
from research.attention.masks import Segments
from research.attention.reference import relative_rms_error
from research.embed import Embedder
from research.eval.retention import SENTENCE
from research.linearize import LINEAR_MAPS, forward, per_layer_distillation_loss, swap_mixers
from research.models.encoder import Encoder

SMOKE = os.environ.get("RESEARCH_SMOKE") == "1"  # the test suite sets this: fewer variants, one layer
LAYER, HEAD = 2, 0  # the head we look at closely, and whose layer smoke mode keeps
t_start = time.perf_counter()

# %% [markdown]
# ## 1. MiniLM on one sentence
#
# The sentence is the one `research eval retention` uses for its attention figure (results/linearize_minilm.md),
# with "bank" twice. MiniLM's tokenizer adds `[CLS]` and `[SEP]`.

# %%
emb = Embedder.from_pretrained("minilm")
ids, spans = emb.tokenize(SENTENCE)
ids, spans = emb.with_specials(ids, spans)  # adds [CLS] ... [SEP], as embed() does
labels = [SENTENCE[a:b] if b > a else ("[CLS]" if i == 0 else "[SEP]") for i, (a, b) in enumerate(spans)]
tokens_1xL = jnp.asarray([ids], jnp.int32)
segments = Segments.from_lengths(jnp.asarray([len(ids)], jnp.int32), len(ids))
print(f"{emb.name}: {emb.cfg.num_layers} layers x {emb.cfg.num_heads} heads, head dim {emb.cfg.head_dim}")
print(f"{len(ids)} tokens:", " ".join(labels))


# %% [markdown]
# One forward pass gives both things we need. `capture_attention=True` makes every block sow the softmax weights;
# flax's `capture_intermediates` additionally records the outputs of the `query`, `key` and `value` projections.
# The layers run under `nn.scan`, so each comes back stacked on a leading layer axis.


# %%
def capture(emb: Embedder, tokens_1xL: jax.Array, segments: Segments):
  """(softmax weights NxBxHxLxS, q, k, v NxBxLxHxD) of every layer of `emb` on one batch."""
  cfg = dataclasses.replace(emb.cfg, capture_attention=True)
  wanted = lambda module, method: method == "__call__" and module.name in ("query", "key", "value")
  _, state = Encoder(cfg).apply(
    emb.variables, tokens_1xL, segments, mutable="intermediates", capture_intermediates=wanted
  )
  layers = state["intermediates"]["stack"]["layers"]
  q, k, v = (layers[name]["__call__"][0] for name in ("query", "key", "value"))
  return np.asarray(layers["attention_weights"][0]), q, k, v


softmax_NxBxHxLxS, q_NxBxLxHxD, k_NxBxLxHxD, v_NxBxLxHxD = capture(emb, tokens_1xL, segments)
print("softmax weights", softmax_NxBxHxLxS.shape, "queries", q_NxBxLxHxD.shape)
print("rows sum to 1:", np.allclose(softmax_NxBxHxLxS.sum(-1), 1.0, atol=1e-5))

# %% [markdown]
# ## 2. Softmax attention, layer × head
#
# Row *i* of a map is where token *i* looks (keys on the x-axis). The colour scale is a square root
# (`PowerNorm(0.5)`), so faint spread-out attention stays visible next to sharp peaks. Familiar patterns: heads
# that dump most of their mass on `[CLS]`/`[SEP]` (a vertical stripe, often a "no-op"), previous/next-token heads
# (an off-diagonal), and broad heads in the early layers.

# %%
show_layers = [LAYER] if SMOKE else list(range(emb.cfg.num_layers))
n_heads = emb.cfg.num_heads
fig, axes = plt.subplots(len(show_layers), n_heads, figsize=(1.25 * n_heads, 1.35 * len(show_layers) + 0.4))
axes = np.atleast_2d(axes)
for r, layer in enumerate(show_layers):
  for h in range(n_heads):
    ax = axes[r, h]
    ax.imshow(softmax_NxBxHxLxS[layer, 0, h], cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0))
    ax.set_xticks([])
    ax.set_yticks([])
    if r == 0:
      ax.set_title(f"head {h}", fontsize=8)
    if h == 0:
      ax.set_ylabel(f"layer {layer}", fontsize=8)
fig.suptitle(f"MiniLM softmax attention, {len(ids)} tokens", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The variants, on MiniLM's q, k, v
#
# For every registered variant that has implied weights we build the mixer, initialise its parameters from a
# fixed seed, and call `implied_weights` on each layer's captured q, k, v (`jax.vmap` over layers, so every layer
# gets the same freshly initialised mixer). What the numbers mean depends on the family:
#
# * **Exact softmax on a sparse pattern** (local, longformer, bigbird, reformer): no learned parts; the error is
#   the softmax mass on keys outside the pattern. Reformer also ignores `k` (shared-QK: its keys are the normalised
#   queries) and never lets a token attend to itself.
# * **Approximations of the softmax kernel** (performer's random features, nystromformer's landmarks): meant to
#   reproduce softmax without training; the error is their approximation error.
# * **Linear attention with another kernel** (linear elu+1, cosformer, hedgehog, based): a *different* similarity
#   function of q and k; hedgehog's and based's maps are learnable, untrained here.
# * **Mixing not computed from q·k** (synthesizer, linformer's key projection): their weights come from learned
#   parameters that are random here. Expect noise.
# * **Decay / gated recurrences** (retention, gla): unnormalised; rows need not sum to 1 or be ≥ 0. Not an
#   approximation of softmax at all.
#
# Sparse patterns are sized for thousands of tokens; with the defaults (local/longformer window 16, bigbird
# blocks of 8, Nyström with 64 landmarks) they cover this 21-token sentence almost entirely and match softmax
# trivially. We shrink them to sentence scale so the comparison says something; everything else uses the
# variant's defaults.

# %%
SENTENCE_SCALE = {
  "local": {"window": 3},
  "longformer": {"window": 3},  # + [CLS] as the global token (the default)
  "bigbird": {"block_size": 2},
  "nystromformer": {"num_landmarks": 8},
}
FAMILY = {
  **dict.fromkeys(("local", "longformer", "bigbird", "reformer"), "sparse softmax"),
  **dict.fromkeys(("performer", "nystromformer"), "softmax approximation"),
  **dict.fromkeys(("linear", "cosformer", "hedgehog", "based"), "linear, other kernel"),
  **dict.fromkeys(("synthesizer", "linformer"), "learned mixing"),
  **dict.fromkeys(("retention", "gla"), "decay / gated"),
}
COLORS = {
  "sparse softmax": "tab:blue",
  "softmax approximation": "tab:green",
  "linear, other kernel": "tab:orange",
  "learned mixing": "tab:purple",
  "decay / gated": "tab:red",
  "other": "tab:gray",
}
with_weights = [n for n in attention.names() if attention.capabilities(n).implied_weights and n != "softmax"]
VARIANTS = ["local", "performer", "hedgehog"] if SMOKE else with_weights
print("variants with implied weights:", ", ".join(with_weights))
print("without (skipped):", ", ".join(n for n in attention.names() if not attention.capabilities(n).implied_weights))


def implied(name: str, q_NxBxLxHxD, k_NxBxLxHxD, v_NxBxLxHxD, segments: Segments, seed: int = 0) -> np.ndarray:
  """NxBxHxLxS implied weights of a freshly initialised `name` mixer on each layer's q, k, v."""
  options = {**attention.length_options(name, q_NxBxLxHxD.shape[2]), **SENTENCE_SCALE.get(name, {})}
  mixer = attention.build(name, options)

  def one_layer(q, k, v):
    variables = mixer.init(jax.random.key(seed), q, k, v, segments)
    return mixer.apply(variables, q, k, v, segments, False, method="implied_weights")

  return np.asarray(jax.jit(jax.vmap(one_layer))(q_NxBxLxHxD, k_NxBxLxHxD, v_NxBxLxHxD), np.float32)


# smoke mode: one layer's q, k, v only
keep = slice(LAYER, LAYER + 1) if SMOKE else slice(None)
qkv = (q_NxBxLxHxD[keep], k_NxBxLxHxD[keep], v_NxBxLxHxD[keep])
reference_NxBxHxLxS = softmax_NxBxHxLxS[keep]
weights = {"softmax": reference_NxBxHxLxS}
for name in VARIANTS:
  tic = time.perf_counter()
  weights[name] = implied(name, *qkv, segments)
  print(f"{name:14s} {time.perf_counter() - tic:5.2f} s")

# %% [markdown]
# ### How far from softmax?
#
# Three numbers per variant, all against MiniLM's softmax weights `A` of the same layer, averaged over layers:
#
# * **TV** (main measure): total variation per query row, `½ Σ_j |Â_ij − A_ij|`, averaged over heads and rows.
#   For two distributions it is the fraction of attention mass that sits on the wrong keys: 0 = identical,
#   1 = disjoint. For unnormalised rows (retention, gla) it can exceed 1.
# * **KL**: `Σ_j A_ij log(A_ij / Â_ij)` per row (logs clamped at 1e-6), averaged: `research linearize`'s
#   distillation metric (`per_layer_distillation_loss(kind="kl")`), the number its report calls *attn KL*.
# * **rel. RMS**: `‖Â − A‖ / ‖A‖` over all entries of a layer (`reference.relative_rms_error`, the conformance
#   suite's measure); dominated by the few large entries.

# %%
valid_BxL = segments.valid


def errors(w_NxBxHxLxS: np.ndarray, ref_NxBxHxLxS: np.ndarray) -> dict[str, np.ndarray]:
  """Per-layer error measures of implied weights against the reference (see the text above)."""
  tv = 0.5 * np.abs(w_NxBxHxLxS - ref_NxBxHxLxS).sum(-1).mean(axis=(1, 2, 3))
  kl = np.asarray(per_layer_distillation_loss(ref_NxBxHxLxS, w_NxBxHxLxS, valid_BxL, kind="kl"))
  rms = np.asarray([relative_rms_error(w, r) for w, r in zip(w_NxBxHxLxS, ref_NxBxHxLxS, strict=True)])
  return {"tv": tv, "kl": kl, "rms": rms}


def is_distribution(w: np.ndarray, tol: float = 0.05) -> bool:
  """Rows (approximately) non-negative and summing to 1."""
  return bool(w.min() > -tol and np.all(np.abs(w.sum(-1) - 1.0) < tol))


err = {name: errors(w, reference_NxBxHxLxS) for name, w in weights.items() if name != "softmax"}
order = sorted(err, key=lambda n: err[n]["tv"].mean())
print(f"{'variant':14s} {'family':22s} {'TV':>6s} {'KL':>7s} {'rel.RMS':>8s}  {'row sums':>15s} {'min weight':>10s}")
for name in order:
  e, w = err[name], weights[name]
  sums = w.sum(-1)
  print(
    f"{name:14s} {FAMILY.get(name, 'other'):22s} {e['tv'].mean():6.3f} {e['kl'].mean():7.3f} {e['rms'].mean():8.3f}"
    f"  {sums.min():7.2f}..{sums.max():<6.2f} {w.min():10.3f}"
  )

# %% [markdown]
# Reading the table: TV is the number to compare. KL punishes a zero where softmax has mass (the log is clamped at
# 1e-6), so the sparse patterns get large KL even when they keep most of the mass; for rows that are not
# distributions (negative entries, sums ≠ 1: linformer, retention, gla, and Nyström in some layers) neither TV nor
# KL has its usual meaning.
#
# ### One head, every variant
#
# Layer `LAYER`, head `HEAD`, on the same colour scale as softmax. Negative weights (retention, gla, linformer,
# sometimes Nyström) are shown clipped at 0.

# %%
li = 0 if SMOKE else LAYER  # index of LAYER among the computed layers
panels = ["softmax", *order]
cols = min(5, len(panels))
rows = -(-len(panels) // cols)
fig, axes = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.9 * rows + 0.3), squeeze=False)
vmax = float(weights["softmax"][li, 0, HEAD].max())
for ax in axes.flat[len(panels) :]:
  ax.axis("off")
for ax, name in zip(axes.flat, panels, strict=False):
  w = weights[name][li, 0, HEAD]
  ax.imshow(np.clip(w, 0.0, None), cmap="magma", norm=PowerNorm(0.5, vmin=0.0, vmax=vmax))
  tv = 0.5 * np.abs(w - weights["softmax"][li, 0, HEAD]).sum(-1).mean()
  title, color = ("softmax", "k") if name == "softmax" else (f"{name}\nTV {tv:.2f}", COLORS[FAMILY.get(name, "other")])
  ax.set_title(title, fontsize=8, color=color)
  ax.set_xticks([])
  ax.set_yticks(range(len(labels)) if ax in axes[:, 0] else [])
  ax.set_yticklabels(labels if ax in axes[:, 0] else [], fontsize=5)
fig.suptitle(f"Implied attention of layer {LAYER}, head {HEAD} (same q, k, v for all)", fontsize=10)
fig.tight_layout()
plt.show()

# %% [markdown]
# ### Approximation error, all variants
#
# Bars: TV averaged over the layers computed; dots: individual layers; colour: family. Hatched bars are variants
# whose rows are not distributions (so TV is not "misplaced mass" for them). The axis stops at 1.0; longer bars
# carry their value as text.

# %%
fig, ax = plt.subplots(figsize=(9.0, 0.38 * len(order) + 1.2))
for y, name in enumerate(order):
  tv = err[name]["tv"]
  color = COLORS[FAMILY.get(name, "other")]
  hatch = None if is_distribution(weights[name]) else "//"
  ax.barh(y, min(tv.mean(), 1.0), color=color, alpha=0.8, hatch=hatch, edgecolor="w")
  ax.scatter(np.minimum(tv, 1.0), np.full(len(tv), y), color="k", s=8, zorder=3)
  if tv.mean() > 1.0:
    ax.text(
      0.98,
      y,
      f"{tv.mean():.1f} (not a distribution)",
      ha="right",
      va="center",
      fontsize=7,
      bbox={"facecolor": "w", "linewidth": 0},
    )
ax.set_yticks(range(len(order)))
ax.set_yticklabels(order)
ax.invert_yaxis()
ax.set_xlim(0, 1.0)
ax.set_xlabel("total variation from MiniLM softmax (mean over heads and query rows)")
ax.set_title(f"Zero-shot: untrained mixers on MiniLM's q, k, v ({'layer ' + str(LAYER) if SMOKE else 'all layers'})")
handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS[f]) for f in dict.fromkeys(FAMILY.get(n, "other") for n in order)]
families = list(dict.fromkeys(FAMILY.get(n, "other") for n in order))
ax.legend(handles, families, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
ax.grid(axis="x", alpha=0.3)
fig.tight_layout()
plt.show()

# %% [markdown]
# What to take from this (mean TV over the 6 layers in the full run; smoke mode computes a few variants on one
# layer). This is one 21-token sentence, so treat differences of a few hundredths as noise.
#
# * **Sparse softmax** variants are exact on the keys they keep, so their error is the attention mass they drop.
#   MiniLM puts much of its mass on `[CLS]`/`[SEP]` and on distant tokens: a ±3 window alone (local) misplaces
#   0.64 of it, the same window plus `[CLS]` as a global token (longformer) 0.30, bigbird's window + global +
#   random blocks 0.23. Reformer (0.76) hashes queries, not MiniLM's keys, and forbids self-attention.
# * **Nyström** with 8 landmarks for 21 tokens is the closest on average (0.22), but its implied matrix is a
#   low-rank product with a pseudo-inverse, not a stochastic matrix: in some layers rows sum to 0.75-1.16 and hold
#   negative weights. **Performer**'s 64 random features are an unbiased but noisy estimate of the softmax kernel
#   (0.45) and always give proper distributions.
# * The **linear** family computes a different function of q and k: cosformer, hedgehog (at its identity
#   initialisation), elu+1 and based all sit at 0.52–0.61. That is the gap distillation starts from.
# * **Synthesizer/linformer** with random parameters and the **decay** models do not try to reproduce softmax on
#   these inputs; their numbers only confirm that.

# %% [markdown]
# ## 4. Zero-shot swap vs distillation
#
# Above, every layer got MiniLM's *own* q, k, v. When you actually swap the mixers inside the model
# (`linearize.swap_mixers`, the starting point of `research linearize`), layer *l* receives the swapped model's
# layer *l−1* output, so errors could compound. We measure that for the feature maps `research linearize`
# supports, with the KL of its report. (Performer's random features are drawn differently in the two columns.)

# %%
swap_maps = ["hedgehog"] if SMOKE else list(LINEAR_MAPS)
lengths_1 = jnp.asarray([len(ids)], jnp.int32)
print(
  f"{'feature map':12s} {'KL same q,k,v':>14s} {'KL own forward':>15s}   (this sentence, mean over the layers computed)"
)
for fm in swap_maps:
  student_cfg, student_vars = swap_mixers(emb.cfg, emb.variables["params"], fm)
  _, student_w = forward(student_cfg, student_vars, tokens_1xL, lengths_1, capture=True)
  own = np.asarray(per_layer_distillation_loss(softmax_NxBxHxLxS, student_w, valid_BxL, kind="kl"))[keep]
  same = err[fm]["kl"] if fm in err else errors(implied(fm, *qkv, segments), reference_NxBxHxLxS)["kl"]
  print(f"{fm:12s} {same.mean():14.3f} {own.mean():15.3f}")

# %% [markdown]
# On this sentence the two columns agree closely (full run: hedgehog 0.93 vs 0.93, based 1.54 vs 1.56, performer
# 0.86 vs 1.00): the swapped model's attention error is mostly each layer's own mismatch, not accumulated drift.
#
# `research linearize` then trains the feature maps to mimic softmax (stage 1) and the whole student to match the
# teacher's hidden states (stage 2). Its report, `results/linearize_minilm.md`, measures the same attention KL on
# 158 held-out documents of up to 256 tokens (longer rows than our sentence, so larger KL):

# %%
report = Path("results/linearize_minilm.json")
if report.is_file():
  entries = json.loads(report.read_text())["entries"]
  kl = {e["name"]: e["match"]["attn_kl"] for e in entries if e["match"]}
  print(f"{'feature map':12s} {'untrained swap':>15s} {'distilled':>10s}   attn KL, held-out")
  for fm in LINEAR_MAPS:
    print(f"{fm:12s} {kl[f'{fm} (untrained swap)']:15.3f} {kl[f'{fm} (distilled)']:10.3f}")
else:
  print(f"{report} not found: run `research eval retention` (see research/eval/retention.py) to produce it")
print(f"\nnotebook wall time so far: {time.perf_counter() - t_start:.1f} s")

# %% [markdown]
# In that run distillation cut the attention KL by 1.6-2.6× for the learnable maps (hedgehog 1.41 → 0.54, based
# 2.20 → 0.99) and much less for performer, whose random features cannot be trained (1.95 → 1.59, stage 2
# only). So the zero-shot errors above are an upper bound on what a linear mixer costs, not its final price; how
# much of the downstream quality survives is in the same report (WiC, sentiment, retrieval).
#
# **Try next:** change `LAYER`/`HEAD`, the sentence, or `SENTENCE_SCALE` (e.g. restore the default windows and
# watch the sparse variants become exact); `research linearize --feature-map hedgehog` trains a student whose
# maps you can load with `linearize.load_student(workdir)` and compare here.
