"""GLA specifics: gates in (0, 1) from the low-rank projection, the three forms agree before and after the RMSNorm
on packed rows, tiny gates over long chunks stay finite where the naive chunked form overflows, and the
bidirectional weights mirror the gates (built in numpy)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import research.attention as attention
from research.attention.decay import decay_attention, gated_weights
from research.attention.masks import Segments
from research.attention.reference import reference_attention, relative_rms_error
from tests.attention.helpers import qkv
from tests.attention.test_decay import LAYOUTS, ROW, packed_rows

FORMS = [
  {"causal_form": "parallel"},
  {"causal_form": "recurrent"},
  {"causal_form": "chunked", "chunk_size": 8, "sub_chunk_size": 4},
]


def _params(seed: int, h: int = 2, d: int = 8, rank: int = 16, bias: float | None = None) -> dict:
  """Random GLA variables built in numpy (the init path itself is tested once, in the gates test)."""
  rng = np.random.default_rng(seed)
  gate = {
    "down": rng.normal(0, (h * d) ** -0.5, (h, d, rank)),
    "up": rng.normal(0, rank**-0.5, (rank, h, d)),
    "bias": rng.normal(0, 1, (h, d)) if bias is None else np.full((h, d), bias),
  }
  if bias is not None:
    gate["up"] = np.zeros_like(gate["up"])
  norm = {"scale": 1.0 + rng.normal(0, 1, (h, d))}  # finalize is not the identity
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), {"params": {"gate": gate, "norm": norm}})


def test_gates_are_in_0_1_and_follow_the_formula():
  """α = σ(k W_down W_up + b)^(1/τ) with τ = 16, strictly inside (0, 1); params carry logical axis names."""
  q, k, v = qkv(jax.random.key(0), 2, 12)
  k = 3.0 * k
  mixer = attention.build("gla")
  segments = Segments.from_lengths(jnp.array([12, 5]), 12)
  boxed = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False)
  specs = nn.get_partition_spec(boxed)["params"]
  assert specs["gate"] == {
    "down": PartitionSpec("heads", "kv", None),
    "up": PartitionSpec(None, "heads", "kv"),
    "bias": PartitionSpec("heads", "kv"),
  }
  assert specs["norm"] == {"scale": PartitionSpec("heads", "kv")}
  variables = nn.meta.unbox(boxed)
  log_alpha = np.asarray(jax.jit(lambda k: mixer.apply(variables, k, method="log_gates"))(k), np.float64)
  p = {name: np.asarray(x, np.float64) for name, x in variables["params"]["gate"].items()}
  low = np.einsum("blhd,hdr->blr", np.asarray(k, np.float64), p["down"])
  logits = np.einsum("blr,rhd->blhd", low, p["up"]) + p["bias"]
  np.testing.assert_allclose(log_alpha, -np.logaddexp(0.0, -logits) / 16.0, rtol=1e-5, atol=1e-7)
  alpha = np.exp(log_alpha)
  assert np.all(alpha > 0) and np.all(alpha < 1) and alpha.std() > 0.01  # data-dependent, not constant


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_forms_agree_before_and_after_the_rmsnorm_on_packed_rows(causal):
  segments = packed_rows(LAYOUTS, ROW)
  q, k, v = qkv(jax.random.key(1), len(LAYOUTS), ROW)
  tau = {"gate_temperature": 1.0}  # gates spread over (0.1, 0.9) instead of τ = 16's (0.9, 1)
  base = attention.build("gla", tau)
  variables = _params(0)

  @jax.jit
  def run(q, k, v):
    pre = {}
    for overrides in FORMS:
      mixer = attention.build("gla", {**overrides, **tau})
      pre[overrides["causal_form"]] = mixer.apply(variables, q, k, v, segments, causal, method="attend")
    out = base.apply(variables, q, k, v, segments, causal)  # chunked 64, sub-chunks of 16
    ref = reference_attention(base.apply(variables, q, k, v, segments, causal, method="implied_weights"), v)
    finalize = lambda x: base.apply(variables, x, segments, method="finalize")  # noqa: E731
    return pre, {form: finalize(x) for form, x in pre.items()}, out, ref, finalize(ref)

  pre, post, out, ref_pre, ref_post = run(q, k, v)
  for form in pre:
    assert relative_rms_error(pre[form], ref_pre) <= 1e-5, form
    assert relative_rms_error(post[form], ref_post) <= 1e-5, form
    np.testing.assert_allclose(post[form], out, rtol=1e-5, atol=2e-5, err_msg=form)
  np.testing.assert_array_equal(np.asarray(out)[~np.asarray(segments.valid)], 0.0)


def test_tiny_gates_over_long_chunks_stay_finite_and_match_the_recurrent_form():
  """α = 1e-4 in half the key dimensions (0.999 in the others), chunks of 64: Σ log α reaches −590 in a chunk."""
  length, chunk = 128, 64
  q, k, v = qkv(jax.random.key(3), 1, length)
  tiny_D = jnp.arange(q.shape[-1]) % 2 == 0
  g = jnp.broadcast_to(jnp.where(tiny_D, np.log(1e-4), np.log(0.999)), q.shape).astype(jnp.float32)

  # The naive chunked form rescales keys by 1 / (cumulative gate product) and overflows at once:
  b_first_chunk = np.cumsum(np.asarray(g[:, :chunk], np.float32), axis=1, dtype=np.float32)
  with np.errstate(over="ignore"):
    assert not np.all(np.isfinite(np.asarray(k[:, :chunk]) * np.exp(-b_first_chunk)))

  segments = Segments.from_lengths(jnp.array([length]), length)

  @jax.jit
  def run(q, k, v, g):
    outs = {"recurrent": decay_attention(q, k, v, g, causal=True, form="recurrent")[0]}
    for sub in (16, 64):  # the whole 64-token chunk pairwise, or sub-chunks of 16 joined by matmuls
      outs[f"chunked/{sub}"] = decay_attention(q, k, v, g, causal=True, chunk_size=chunk, sub_chunk_size=sub)[0]
    return outs, reference_attention(gated_weights(q, k, g, segments, causal=True), v)

  outs, ref = run(q, k, v, g)
  for form, out in outs.items():
    assert np.all(np.isfinite(out)), form
    assert relative_rms_error(out, ref) <= 1e-5, form
    assert relative_rms_error(out, outs["recurrent"]) <= 1e-5, form


def test_tiny_gates_in_the_module():
  """Gate bias −147.4 (W_up = 0): α = σ(−147.4)^(1/16) ≈ 1e-4 everywhere; chunked equals recurrent, all finite."""
  segments = packed_rows([[40, 1, 60], [101]], 101)
  q, k, v = qkv(jax.random.key(4), 2, 101)
  variables = _params(1, bias=-147.4)

  @jax.jit
  def run(q, k, v):  # bidirectional: both directions, resets at segment starts and ends
    outs = {}
    for overrides in ({"causal_form": "recurrent"}, {"chunk_size": 64, "sub_chunk_size": 64}):
      mixer = attention.build("gla", overrides)
      outs[overrides.get("causal_form", "chunked")] = mixer.apply(variables, q, k, v, segments, False)
    return outs, jnp.exp(attention.build("gla").apply(variables, k, method="log_gates"))

  outs, alpha = run(q, k, v)
  np.testing.assert_allclose(alpha, 1e-4, rtol=1e-2)
  assert np.all(np.isfinite(outs["chunked"]))
  assert relative_rms_error(outs["chunked"], outs["recurrent"]) <= 1e-5


def test_bidirectional_weights_mirror_the_gates_in_numpy():
  """A_ij = Σ_d q_id k_jd Π_{j<r≤i} α_rd for j ≤ i and Π_{i≤r<j} α_rd for j > i: diagonal once, no decay on it."""
  length, d = 10, 4
  keys = jax.random.split(jax.random.key(5), 4)
  q, k, v = (jax.random.normal(key, (1, length, 1, d)) for key in keys[:3])
  g = -jax.random.uniform(keys[3], (1, length, 1, d), maxval=2.0)
  run = jax.jit(lambda *a: [decay_attention(*a, causal=c, chunk_size=4, sub_chunk_size=2)[0] for c in (False, True)])
  got = dict(zip((False, True), run(q, k, v, g), strict=True))

  q_n, k_n, v_n, g_n = (np.asarray(x[0, :, 0], np.float64) for x in (q, k, v, g))
  weights = np.zeros((length, length))
  for i in range(length):
    for j in range(length):
      between = g_n[j + 1 : i + 1] if j <= i else g_n[i:j]
      weights[i, j] = np.sum(q_n[i] * k_n[j] * np.exp(between.sum(0)))
  np.testing.assert_allclose(got[False][0, :, 0], weights @ v_n, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[True][0, :, 0], np.tril(weights) @ v_n, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"causal_form": "blocked"}, "gla causal_form 'blocked'; choose one of parallel, recurrent, chunked"),
    ({"chunk_size": 48, "sub_chunk_size": 32}, "gla chunk_size=48 must be a multiple of sub_chunk_size=32"),
    ({"gate_rank": 0}, "gla gate_rank must be positive, got 0"),
    ({"gate_temperature": -1.0}, "gla gate_temperature must be > 0, got -1.0"),
  ],
)
def test_bad_config_is_a_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    attention.make_config("gla", overrides)
