"""Performer specifics: the implied kernel, convergence to softmax, orthogonal draws and redraws, the stabilised
causal core's forms and streaming, large-norm stability, and the relu kernel.

Compiles dominate on CPU, so the tests share one mixer, its jitted init/apply and one packed-row shape."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.linear import linear_attention
from research.attention.masks import Segments, attention_mask
from research.attention.performer import (
  COLLECTION,
  draw_features,
  favor_features,
  redraw_features,
  stabilised_causal_attention,
)
from research.attention.reference import reference_attention, relative_rms_error
from research.attention.softmax import softmax_weights
from tests.attention.helpers import packed_segments, qkv

LENGTHS = [6, 1, 11, 9]  # packed into one row of 30 (3 padding)
MIXER = attention.build("performer")
INIT = jax.jit(MIXER.init, static_argnums=5)
APPLY = jax.jit(MIXER.apply, static_argnums=5, static_argnames="method")
FEATURES = jax.jit(favor_features, static_argnames=("causal", "kernel", "kernel_eps", "chunk_size"))


def _w(variables):
  return variables[COLLECTION]["projection"]["w"]


def _packed(seed, scale=1.0):
  q, k, v = qkv(jax.random.key(seed), 1, 30)
  return scale * q, scale * k, v, packed_segments(LENGTHS, 30)


@pytest.mark.parametrize("causal", [False, True])
def test_implied_weights_are_the_normalised_unstabilised_kernel(causal):
  q, k, v, segments = _packed(0)
  variables = INIT(jax.random.key(0), q, k, v, segments, causal)
  weights = APPLY(variables, q, k, v, segments, causal, method="implied_weights")
  # by hand, without any stabiliser: φ(x) = exp(W x' − ‖x'‖²/2)/√m, masked to the segment (and the past)
  w_FxD = np.asarray(_w(variables), np.float64)
  m, d = w_FxD.shape

  def phi(x):
    xs = np.asarray(x, np.float64) * d**-0.25
    return np.exp(np.einsum("blhd,fd->blhf", xs, w_FxD) - 0.5 * np.sum(xs**2, -1, keepdims=True)) / np.sqrt(m)

  a = np.einsum("blhf,bshf->bhls", phi(q), phi(k)) * np.asarray(attention_mask(segments, causal))
  want = a / np.maximum(a.sum(-1, keepdims=True), 1e-30)
  np.testing.assert_allclose(weights, want, rtol=2e-5, atol=1e-7)  # the stabilisers cancel (eps is relative 1e-6)
  np.testing.assert_array_equal(np.asarray(weights)[0, :, 27:], 0.0)  # padded queries

  # the module's own stabilised, segment-expanded features give these weights exactly (eps included)
  phi_q, phi_k, ref = FEATURES(q, k, _w(variables), segments, causal=causal)
  a = jnp.einsum("blhf,bshf->bhls", phi_q, phi_k, precision="highest")
  if causal:  # keys live in their own running-max reference m_j, query i reads them in m_i
    ref_BxHxL = ref.transpose(0, 2, 1)
    a = a * jnp.tril(jnp.exp(jnp.minimum(ref_BxHxL[:, :, None, :] - ref_BxHxL[..., None], 0.0)))
  den = a.sum(-1, keepdims=True)
  assert float(den[0, :, :27].min()) >= 1.0 - 1e-5  # the query normalisation: denominators in [1, m]
  np.testing.assert_allclose(weights, a / (den + 1e-6), rtol=1e-5, atol=1e-7)


def test_approximation_error_to_softmax_falls_with_features():
  b, length, h, d = 1, 32, 2, 8
  segments = Segments.from_lengths(jnp.array([length]), length)
  sizes = (16, 64, 256, 1024)

  @jax.jit
  @partial(jax.vmap)
  def errors(seed):  # relative RMS error of the output vs exact softmax attention, one feature draw per seed
    q, k, v = qkv(jax.random.fold_in(jax.random.key(100), seed), b, length, h, d)
    q, k = 0.5 * q, 0.5 * k  # modest norms: logits qᵀk/√D ~ N(0, 1/16)
    exact = reference_attention(softmax_weights(q, k, segments, causal=False), v)
    w_FxD = draw_features(jax.random.fold_in(jax.random.key(200), seed), sizes[-1], d)  # first m rows: a draw of m
    out = []
    for m in sizes:
      phi_q, phi_k, _ = favor_features(q, k, w_FxD[:m], segments, causal=False)
      approx, _ = linear_attention(phi_q, phi_k, v, causal=False)
      out.append(jnp.sqrt(jnp.sum((approx - exact) ** 2) / jnp.sum(exact**2)))
    return jnp.stack(out)

  error = dict(zip(sizes, np.asarray(errors(jnp.arange(8))).mean(0).round(4).tolist(), strict=True))
  print("performer rel. RMS error vs exact softmax by num_features (mean of 8 draws):", error)
  assert error[16] > error[64] > error[256] > error[1024]
  assert error[1024] < 0.5 * error[16]
  assert error[1024] < 0.1


def test_orthogonal_rows_are_orthogonal_with_chi_norms():
  w = np.asarray(draw_features(jax.random.key(0), 20, 8), np.float64)  # blocks of 8, 8 and 4 rows
  norms = np.linalg.norm(w, axis=-1)
  for start in (0, 8, 16):
    block = w[start : start + 8] / norms[start : start + 8, None]
    np.testing.assert_allclose(block @ block.T, np.eye(len(block)), atol=1e-5)
  assert len(np.unique(np.round(norms, 4))) == 20  # chi-distributed norms, not a constant
  assert not np.allclose(w[:8] @ w[8:16].T, 0.0, atol=1e-2)  # blocks are independent draws
  iid = np.asarray(draw_features(jax.random.key(0), 8, 8, orthogonal=False))
  assert np.abs(np.triu(iid @ iid.T, 1)).max() > 0.1


def test_redraw_changes_the_features_and_the_output():
  q, k, v, segments = _packed(1)
  variables = INIT(jax.random.key(0), q, k, v, segments, False)
  np.testing.assert_array_equal(_w(INIT(jax.random.key(0), q, k, v, segments, False)), _w(variables))
  assert not np.allclose(_w(INIT(jax.random.key(1), q, k, v, segments, False)), _w(variables))
  assert set(variables) == {COLLECTION}  # nothing trainable

  redrawn = redraw_features(variables, jax.random.key(7))
  assert _w(redrawn).shape == _w(variables).shape == (64, 8)
  assert not np.allclose(_w(redrawn), _w(variables))
  assert not np.allclose(APPLY(redrawn, q, k, v, segments, False), APPLY(variables, q, k, v, segments, False))

  stacked = {COLLECTION: {"layers": {"w": jnp.zeros((3, 16, 8))}}, "params": {"x": jnp.ones(2)}}
  out = redraw_features(stacked, jax.random.key(8))  # nn.scan stacks layers on a leading axis: independent draws
  w3 = np.asarray(out[COLLECTION]["layers"]["w"])
  assert w3.shape == (3, 16, 8) and not np.allclose(w3[0], w3[1])
  np.testing.assert_allclose(w3[2, :8] @ w3[2, :8].T * (1 - np.eye(8)), 0.0, atol=1e-4)
  assert out["params"] is stacked["params"]


def test_stabilised_causal_forms_agree_and_stream():
  q, k, v, segments = _packed(2, scale=3.0)  # the running key max grows often: exercises the state rescaling

  @jax.jit
  def run(q, k, v):  # one compile for all forms and the two-call stream
    phi_q, phi_k, ref = favor_features(q, k, draw_features(jax.random.key(3), 32, 8), segments, causal=True)
    core = partial(stabilised_causal_attention, chunk_size=5)
    outs = {form: core(phi_q, phi_k, ref, v, form=form) for form in ("parallel", "recurrent", "chunked")}
    first, state = core(phi_q[:, :13], phi_k[:, :13], ref[:, :13], v[:, :13])
    second, final = core(phi_q[:, 13:], phi_k[:, 13:], ref[:, 13:], v[:, 13:], initial_state=state)
    return outs, (jnp.concatenate([first, second], 1), final)

  outs, streamed = run(q, k, v)
  for got in (outs["recurrent"], outs["chunked"], streamed):
    assert relative_rms_error(got[0], outs["parallel"][0]) <= 1e-5
    for got_state, want in zip(got[1], outs["parallel"][1], strict=True):  # (kv, z, per-column reference)
      np.testing.assert_allclose(got_state, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_large_norms_stay_finite_exact_and_segment_local(causal):
  q, k, v, segments = _packed(4, scale=10.0)
  k = k.at[:, 7:18].multiply(3.0)  # segment 3's keys dwarf the others'
  variables = INIT(jax.random.key(0), q, k, v, segments, causal)
  out = APPLY(variables, q, k, v, segments, causal)
  ref = reference_attention(APPLY(variables, q, k, v, segments, causal, method="implied_weights"), v)
  assert np.isfinite(np.asarray(out)).all() and np.isfinite(np.asarray(ref)).all()
  assert relative_rms_error(out, ref) <= 1e-5
  loss = lambda q, k: jnp.sum(MIXER.apply(variables, q, k, v, segments, causal) ** 2)  # noqa: E731
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.jit(jax.grad(loss, (0, 1)))(q, k))

  # the same sequences, one per padded row: per-segment key maxima keep every segment's outputs the same, and
  # the query normalisation keeps them O(1) (with raw maxima, eps would swamp denominators ~1e-20). Exponents
  # reach ~10³ here, so fp32 rounding of the logits (shape-dependent) is amplified to ~1e-4 relative.
  starts = np.cumsum([0] + LENGTHS)
  spans = list(zip(starts[:-1], starts[1:], strict=True))
  rows = [jnp.stack([jnp.pad(x[0, s:e], ((0, 11 - (e - s)), (0, 0), (0, 0))) for s, e in spans]) for x in (q, k, v)]
  padded = APPLY(variables, *rows, Segments.from_lengths(jnp.array(LENGTHS), 11), causal)
  for i, (s, e) in enumerate(spans):
    np.testing.assert_allclose(out[0, s:e], padded[i, : e - s], atol=1e-3, rtol=1e-3)
    assert np.sqrt(np.mean(np.asarray(padded[i, : e - s]) ** 2)) > 0.1


def test_relu_kernel_matches_its_reference():
  q, k, v, segments = _packed(5)
  mixer = attention.build("performer", {"kernel": "relu", "num_features": 32, "causal_form": "recurrent"})
  variables = mixer.init(jax.random.key(0), q, k, v, segments, True)
  out, weights = jax.jit(
    lambda *a: (mixer.apply(variables, *a, True), mixer.apply(variables, *a, True, method="implied_weights"))
  )(q, k, v, segments)
  assert relative_rms_error(out, reference_attention(weights, v)) <= 1e-5
  np.testing.assert_array_equal(np.asarray(out)[0, 27:], 0.0)
  phi_q, _, ref = FEATURES(q, k, _w(variables), segments, causal=True, kernel="relu")
  assert ref is None and float(phi_q[0, :27].min()) == 0.0  # other segments' blocks
  assert float(jnp.max(phi_q[0, :27], axis=-1).min()) >= 1e-3 / np.sqrt(32)  # relu + kernel_eps > 0


def test_bad_config_is_a_clear_error():
  with pytest.raises(ValueError, match="performer kernel 'gauss'; choose one of softmax, relu"):
    attention.build("performer", {"kernel": "gauss"})
  with pytest.raises(ValueError, match="num_features must be positive, got 0"):
    attention.build("performer", {"num_features": 0})
  with pytest.raises(ValueError, match="causal_form 'blocked'"):
    attention.build("performer", {"causal_form": "blocked"})
