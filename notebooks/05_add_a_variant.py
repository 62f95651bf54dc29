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
# # Add an attention variant: write it, register it, check it, train it
#
# A new mixer is about thirty lines when it reuses the building blocks of an existing family. In this notebook we
#
# 1. write **softplus linear attention with a learned sharpness**: kernelized linear attention with the feature
#    map φ(x) = softplus(β_h · x), where β_h = exp(t_h) is one learned number per head (t_h = 0 at
#    initialisation);
# 2. register it under a new name, which is all the encoder, the config system and the tools need;
# 3. run the conformance suite on it (`research.attention.conformance`) and read its report; then break the
#    mixer on purpose and watch the suite catch it;
# 4. train it on ListOps with the same `train()` call as `01_quickstart`, and look at its attention matrix.
#
# The variant is registered in this kernel only; nothing is written to the repository. The end of the notebook
# says where the file goes for real.
#
# **Smoke mode** (`RESEARCH_SMOKE=1`, set by the test suite): a tiny model trained for 12 steps; its accuracies
# are meaningless. The conformance checks are the same in both modes.

# %%
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from research import attention
from research.attention import check_call, conformance, register
from research.attention.linear import check_causal_options, linear_attention, linear_weights, segment_features
from research.attention.masks import Segments, zero_padding
from research.config import load_config
from research.train import init_from
from research.train.loop import train

SMOKE = os.environ.get("RESEARCH_SMOKE") == "1"  # the test suite sets this: tiny model, 12 training steps
NAME = "softplus_linear"
t_start = time.perf_counter()

# %% [markdown]
# ## 1. The contract
#
# Every mixer is a Flax `nn.Module` with
#
# * a frozen dataclass `Config` holding its options (`attention.build(name, {...})` validates overrides against
#   its fields, so a typo is a clear error), and a field `cfg: Config = Config()`;
# * `__call__(q, k, v, segments, causal=False)` on `B×L×H×D` arrays returning `B×L×H×D` in `v`'s dtype.
#   `segments` says which positions are padding (id 0) and which sequence each token belongs to when several
#   are packed into one row; a token may only attend to tokens of its own sequence, and padded positions must
#   come out as exact zeros;
# * optionally `implied_weights(...)` returning the `B×H×L×S` fp32 matrix `A` with `out = A v`: the conformance
#   suite uses it as the reference the fast path is tested against, and the analysis tools plot it.
#
# `@register(name, ...)` records the class with its `Capabilities`: what it promises (causal, packing, length
# invariance, position schemes) and what it costs (complexity, state size). The linear family in
# `research/attention/linear.py` gives us the hard parts: `segment_features` expands φ per segment so that
# padding and packing are exact without a mask, `linear_attention` has the non-causal form and three causal forms
# (parallel, recurrent, chunked) with fp32 state, and `linear_weights` builds the implied matrix.


# %%
@register(
  NAME,
  supports_causal=True,
  supports_packing=True,
  length_invariant=True,
  positions=("learned", "rope"),
  complexity="O(N d^2)",
  state_size=lambda L, H, D: 4 * H * (D * D + D),  # fp32 (Σ φ(k) vᵀ, Σ φ(k)) per head, F = D
  paper="notebooks/05 (linear attention: Katharopoulos et al. 2020, arXiv:2006.16236)",
)
class SoftplusLinearAttention(nn.Module):
  """Linear attention with φ(x) = softplus(β_h x), β_h = exp(t_h) learned per head (t_h = 0 at init)."""

  @dataclasses.dataclass(frozen=True)
  class Config:
    eps: float = 1e-6  # added to the normaliser φ(q)·Σφ(k), which softplus keeps > 0
    causal_form: str = "chunked"
    chunk_size: int = 64

    def __post_init__(self):
      check_causal_options(NAME, self.causal_form, self.chunk_size)

  cfg: Config = Config()

  @nn.compact
  def features(self, q_BxLxHxD, k_BxSxHxD, segments: Segments):
    log_beta_H = self.param(
      "log_beta", nn.with_logical_partitioning(nn.initializers.zeros, ("heads",)), (q_BxLxHxD.shape[2],)
    )
    phi = lambda x: jax.nn.softplus(x.astype(jnp.float32) * jnp.exp(log_beta_H)[:, None])
    return segment_features(phi(q_BxLxHxD), segments), segment_features(phi(k_BxSxHxD), segments)

  def __call__(self, q, k, v, segments: Segments, causal: bool = False):
    check_call(NAME, segments, causal)
    phi_q, phi_k = self.features(q, k, segments)
    c = self.cfg
    out, _ = linear_attention(phi_q, phi_k, v, causal=causal, eps=c.eps, form=c.causal_form, chunk_size=c.chunk_size)
    return zero_padding(out.astype(v.dtype), segments)

  def implied_weights(self, q, k, v, segments: Segments, causal: bool = False):
    phi_q, phi_k = self.features(q, k, segments)
    return linear_weights(phi_q, phi_k, causal=causal, eps=self.cfg.eps)


print(NAME in attention.names(), attention.capabilities(NAME).complexity, attention.make_config(NAME))

# %% [markdown]
# A few details that the suite below would catch if we got them wrong:
#
# * `check_call` turns unsupported uses (here none; e.g. `causal=True` for a variant that declares
#   `supports_causal=False`) into a `ValueError` at trace time, before XLA sees anything.
# * The parameter is created in `features`, which both `__call__` and `implied_weights` use, so the reference is
#   computed with the same β as the fast path. `nn.with_logical_partitioning(..., ("heads",))` names its axis for
#   the sharding rules (`research/train/sharding.py`), like every other parameter in the repository.
# * φ is computed in fp32 and `linear_attention` keeps fp32 state, so bfloat16 inputs stay accurate; the output
#   goes back to `v.dtype`.
#
# A quick call on random inputs: one parameter per head, and the output has the input's shape.

# %%
q, k, v = conformance.qkv(jax.random.key(0), 2, 16, h=4, d=8)
segments = Segments.from_lengths(jnp.array([16, 11]), 16)
mixer = attention.build(NAME)
variables = mixer.init(jax.random.key(0), q, k, v, segments)
out = mixer.apply(variables, q, k, v, segments)
print(jax.tree.map(jnp.shape, nn.meta.unbox(variables)), "->", out.shape, out.dtype)
print("padding of row 1 is exactly zero:", bool(jnp.all(out[1, 11:] == 0)))

# %% [markdown]
# ## 2. The conformance suite
#
# `conformance.check(name)` runs every check that the variant's capabilities call for, on small random inputs,
# and returns one `Check` per check and causal mode; `conformance.report` makes a table. These are the same
# functions, with the same tolerances, that `tests/attention/test_conformance.py` runs for every registered
# variant. "measured" is, depending on the row, the relative RMS error against the fp32 reference from
# `implied_weights` (outputs, gradients, bfloat16 inputs) or the largest absolute difference between two ways of
# computing the same outputs.

# %%
tic = time.perf_counter()
checks = conformance.check(NAME)
display(Markdown(conformance.report(checks)))
print(f"{len(checks)} checks in {time.perf_counter() - tic:.1f} s")
assert all(c.passed for c in checks), "the new variant fails a conformance check: see the table"

# %% [markdown]
# What each row promises:
#
# * **fp32 reference, padded**: a batch of three rows padded to 40 tokens; the fast output matches `A v`
#   computed from the implied weights in fp32 at highest precision (relative RMS ≤ 1e-5), padded positions are
#   exact zeros, the implied weights are `B×H×L×S` fp32.
# * **padded == packed == alone**: four sequences (lengths 5, 9, 1, 7) give the same outputs one per row,
#   packed back to back in one row, and each on its own.
# * **causal: the future is ignored**: changing token 17 leaves outputs 0–16 bitwise unchanged.
# * **extra padding changes nothing**: 12 extra padded positions holding garbage do not move the outputs.
# * **gradients vs reference**: dq, dk, dv through the fast path match those through the reference (≤ 1e-4).
# * **bfloat16 inputs**: bf16 q, k, v give a bf16 output within 3e-2 of the fp32 reference on the same inputs.
# * **clear errors**: an unknown option, and every use the variant does not declare, raise a `ValueError`
#   saying so; the capabilities carry a complexity, a state size and a paper.
#
# ### A suite that can fail
#
# A check that never fails proves nothing, so let us register a broken copy whose features skip
# `segment_features`, the step that keeps a token from seeing padding and the other sequences packed into its
# row. Each check is also a plain function, so we run just the three that should notice.


# %%
@register("leaky_softplus", **dataclasses.asdict(attention.capabilities(NAME)))
class LeakySoftplus(SoftplusLinearAttention):
  @nn.compact
  def features(self, q_BxLxHxD, k_BxSxHxD, segments: Segments):
    log_beta_H = self.param("log_beta", nn.initializers.zeros, (q_BxLxHxD.shape[2],))
    phi = lambda x: jax.nn.softplus(x.astype(jnp.float32) * jnp.exp(log_beta_H)[:, None])
    return phi(q_BxLxHxD), phi(k_BxSxHxD)  # bug: padded keys and other segments are not masked out


leaky = [
  conformance.fp32_reference("leaky_softplus", causal=False),
  conformance.padded_packed_alone("leaky_softplus", causal=False),
  conformance.extra_padding("leaky_softplus"),
]
display(Markdown(conformance.report(leaky)))
assert not any(c.passed for c in leaky), "the suite missed the padding leak"

# %% [markdown]
# All three fail, each for its own reason:
#
# * **fp32 reference**: the implied weights now give padded *queries* non-zero rows, so the reference `A v` is
#   non-zero there, while `__call__` still zeroes those outputs (`zero_padding`).
# * **padded == packed == alone**: every sequence sees the padding after it (φ(0) = log 2, not 0) and, when
#   packed, the other sequences of its row.
# * **extra padding**: the garbage under the padding leaks into the real tokens.
#
# Note that the bug is in `implied_weights` too: the reference is only as good as the weights the variant
# declares, which is why the suite also compares layouts of the same sequences with each other.
#
# ## 3. Train it
#
# The registry is all the rest of the repository looks at, so the new name works everywhere a variant name does:
# `EncoderConfig(attention=NAME)` and the config override `attention=softplus_linear`. We train it next to the
# standard elu+1 linear attention with the same settings as `01_quickstart`, and read the learned β back from the
# best checkpoint before the temporary workdir is deleted.

# %%
if SMOKE:  # the tiny ListOps of tests/train/common.py with fewer examples, 12 steps
  SIZE = (
    "data.num_train=256,data.num_val=64,data.num_test=64,data.max_length=48,data.max_depth=2,data.min_length=8,"
    "model.d_model=32,model.num_heads=4,model.num_layers=2,model.mlp_dim=64,"
    "train.batch_size=16,train.eval_batch_size=64,train.warmup_steps=2,steps=12,train.eval_every=4,train.log_every=2"
  )
else:  # experiments/listops.py as it is (2 layers, d64), 300 steps
  SIZE = "steps=300,train.eval_every=50,train.log_every=10"

runs, betas = {}, None
for name in ("linear", NAME):
  config = load_config(f"experiments/listops.py:{SIZE},attention={name}")
  with tempfile.TemporaryDirectory() as workdir:
    summary = train(config, workdir, progress=False)
    rows = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    if name == NAME:
      state, best_step, _ = init_from.load(Path(workdir))
      betas = np.exp(state["params"]["encoder"]["stack"]["layers"]["mixer"]["log_beta"])  # num_layers × H
  runs[name] = (summary, rows)
  print(
    f"{name:16s} {summary['params']:6,d} params  test acc {summary['test_accuracy']:6.1%} (majority "
    f"{summary['majority_baseline']:.1%})  {summary['tokens_per_s']:7,.0f} tokens/s  {summary['wall_s']:5.1f} s"
  )
print(f"learned β at step {best_step} (rows: layers, columns: heads):\n{np.round(betas, 3)}")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.4))
for name, (_, rows) in runs.items():
  train_rows = [r for r in rows if r["split"] == "train"]
  val_rows = [r for r in rows if r["split"] == "val"]
  line = ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label=f"{name}: train loss")
  ax.plot(
    [r["step"] for r in val_rows], [r["loss"] for r in val_rows], "o--", color=line[0].get_color(), label=f"{name}: val"
  )
ax.set(xlabel="step", ylabel="cross-entropy", title="ListOps" + (" (smoke mode: not meaningful)" if SMOKE else ""))
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
plt.show()

# %% [markdown]
# The new variant has `num_layers × num_heads` more parameters than `linear` (one β per head and layer). In
# smoke mode β has barely moved from 1 and the losses and accuracies are noise. One full run (300 steps, seed 0,
# 2-core CPU) gave 25.1% test accuracy against linear's 25.4%, with β between 0.98 and 1.09: at this size the
# sharpness barely matters, and one seed per variant cannot separate differences of a point or two anyway.
#
# ## 4. What it attends to
#
# For one random input (no training involved; one head, 24 tokens, one colour scale): softmax's attention matrix
# next to the implied matrices of elu+1 linear attention and of the new variant at initialisation (β = 1) and with
# β set by hand to 8. "peak" is the largest weight of a row, averaged over rows. The linear kernels spread their
# mass much more evenly than softmax's exponential. β is what training can change: for small β,
# softplus(βx) ≈ log 2 + βx/2 and attention becomes nearly uniform; for large β, φ approaches a ReLU kernel, which
# ignores the negative coordinates of q and k and so concentrates somewhat more.

# %%
q, k, v = conformance.qkv(jax.random.key(1), 1, 24, h=2, d=16)
one = Segments.from_lengths(jnp.array([24]), 24)
maps = {}
for name in ("softmax", "linear", NAME):
  mixer = attention.build(name)
  variables = mixer.init(jax.random.key(0), q, k, v, one)
  maps[name if name != NAME else f"{NAME}, β = 1"] = mixer.apply(variables, q, k, v, one, method="implied_weights")
sharp = {"params": {"log_beta": jnp.full((2,), jnp.log(8.0))}}  # the same mixer with β = 8 in both heads
maps[f"{NAME}, β = 8"] = mixer.apply(sharp, q, k, v, one, method="implied_weights")

fig, axes = plt.subplots(1, len(maps), figsize=(3.3 * len(maps), 3.6), layout="constrained")
vmax = max(float(w[0, 0].max()) for w in maps.values())
for ax, (label, w) in zip(axes, maps.items(), strict=True):
  w = np.asarray(w)[0, 0]  # batch 0, head 0: queries × keys
  im = ax.imshow(w, cmap="magma", vmin=0.0, vmax=vmax)
  ax.set_title(f"{label}\npeak {w.max(-1).mean():.2f}", fontsize=9)
  ax.set_xlabel("key")
axes[0].set_ylabel("query")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()
print(f"notebook wall time: {time.perf_counter() - t_start:.0f} s")

# %% [markdown]
# ## 5. Making it real
#
# 1. Put the class (with its imports) in `research/attention/softplus_linear.py`. `research/attention/__init__.py`
#    imports every module of the package on import (`_import_families`), so the file registers the variant just
#    by existing: `research variants`, `research train --config experiments/listops.py:attention=softplus_linear`
#    and `research compare --variants linear,softplus_linear` pick it up.
# 2. `tests/attention/test_conformance.py` parametrizes its tests over `attention.names()`, so the variant is now
#    under every check shown above, one test each:
#    `.venv/bin/python -m pytest -q tests/attention/test_conformance.py -k softplus_linear`. If it genuinely
#    needs a looser tolerance, add it with the reason to `TOLERANCE` / `BF16_TOLERANCE_OVERRIDES` in
#    `research/attention/conformance.py`.
# 3. Add `tests/attention/test_softplus_linear.py` for what is specific to it (here: φ on a hand-sized input, and
#    that β = exp(t) with t = 0 gives plain softplus), and follow the rest of "Adding an attention variant" in
#    `CONTRIBUTING.md` (README variant table, benchmark).
