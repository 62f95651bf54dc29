"""Hedgehog specifics: identity-initialised softmax feature maps, the distillation loss, and that distillation works."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import research.attention as attention
from research.attention.hedgehog import attention_distillation_loss
from research.attention.masks import Segments, attention_mask
from research.attention.reference import relative_rms_error
from research.attention.softmax import softmax_weights
from tests.attention.helpers import packed_segments, qkv


def _init(cfg=None, b=2, length=16):
  q, k, v = qkv(jax.random.key(0), b, length)
  segments = Segments.from_lengths(jnp.array([length] + [length - 5] * (b - 1)), length)
  mixer = attention.build("hedgehog", cfg)
  variables = jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False)
  return mixer, variables, (q, k, v, segments)


def test_identity_init_gives_softmax_of_plus_and_minus_x():
  mixer, variables, _ = _init()
  for name in ("q_map", "k_map"):  # separate maps by default, with logical axis names
    kernel, bias = variables["params"][name]["kernel"], variables["params"][name]["bias"]
    assert kernel.names == ("heads", "kv", None) and bias.names == ("heads", None)
    np.testing.assert_array_equal(kernel.value, np.broadcast_to(np.eye(8), (2, 8, 8)))
    np.testing.assert_array_equal(bias.value, 0.0)
  x = np.array([0.0, 1.0, 2.0, -1.0, 0.5, 3.0, -2.0, 0.25], np.float32)
  q = jnp.asarray(np.broadcast_to(x, (1, 1, 2, 8)))
  k = jnp.asarray(np.broadcast_to(-2 * x, (1, 1, 2, 8)))
  phi_q, phi_k = jax.jit(lambda q, k: mixer.apply(variables, q, k, method="feature_maps"))(q, k)
  for phi, y in ((phi_q, x), (phi_k, -2 * x)):
    plus, minus = np.exp(y) / np.exp(y).sum(), np.exp(-y) / np.exp(-y).sum()  # by hand
    assert phi.shape == (1, 1, 2, 16)
    np.testing.assert_allclose(phi[0, 0, 0], np.concatenate([plus, minus]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(phi[0, 0, 1], phi[0, 0, 0], rtol=0, atol=0)


def test_shared_feature_map_has_one_set_of_params():
  _, variables, _ = _init({"shared_feature_map": True, "feature_dim": 5})
  assert set(variables["params"]) == {"qk_map"}
  assert variables["params"]["qk_map"]["kernel"].value.shape == (2, 8, 5)  # rectangular identity


def test_distillation_loss_matches_numpy_cross_entropy_and_ignores_padding():
  t = np.array(
    [  # B=2, H=1, L=3, S=3 softmax rows (zeros where masked)
      [[[0.7, 0.2, 0.1], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]],
      [[[0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.0, 0.0, 0.0]]],
    ],
    np.float32,
  )
  p = np.array(
    [
      [[[0.5, 0.3, 0.2], [0.4, 0.6, 0.0], [0.1, 0.1, 0.8]]],
      [[[0.3, 0.7, 0.0], [0.2, 0.8, 0.0], [0.9, 0.0, 0.1]]],
    ],
    np.float32,
  )
  valid = np.array([[True, True, True], [True, True, False]])
  # by hand: rows (b, h, i) over valid queries; 0·log 0 terms dropped
  rows = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
  want = -sum(t[b, 0, i, j] * np.log(p[b, 0, i, j]) for b, i in rows for j in range(3) if t[b, 0, i, j] > 0) / 5
  got = attention_distillation_loss(jnp.asarray(t), jnp.asarray(p), jnp.asarray(valid))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  segments = Segments.from_lengths(jnp.array([3, 2]), 3)
  np.testing.assert_allclose(attention_distillation_loss(t, p, segments), want, rtol=1e-6)
  np.testing.assert_allclose(attention_distillation_loss(t, p, attention_mask(segments, False)), want, rtol=1e-6)
  garbage = p.copy()
  garbage[1, 0, 2] = [0.0, 1e-30, 0.0]  # a padded row: never read
  t_garbage = t.copy()
  t_garbage[1, 0, 2] = [0.2, 0.3, 0.5]
  np.testing.assert_allclose(attention_distillation_loss(t_garbage, garbage, valid), want, rtol=1e-6)
  # zero predictions are clipped, not -inf
  assert np.isfinite(attention_distillation_loss(t, np.zeros_like(p), valid))


@pytest.fixture(scope="module")
def distillation():
  """Fixed random q, k with padding; the Hedgehog-vs-softmax loss as a function of the feature-map params."""
  mixer, variables, (q, k, v, segments) = _init()
  target = softmax_weights(q, k, segments, causal=False)

  def loss(params):
    weights = mixer.apply({"params": params}, q, k, v, segments, False, method="implied_weights")
    return attention_distillation_loss(target, weights, segments)

  return variables["params"], jax.jit(jax.value_and_grad(loss))


def test_distillation_gradient_reaches_every_feature_map_param(distillation):
  params, value_and_grad = distillation
  _, grads = value_and_grad(params)
  norms = {jax.tree_util.keystr(path): float(jnp.linalg.norm(g)) for path, g in jax.tree.leaves_with_path(grads)}
  assert len(norms) == 4 and all(n > 0 and np.isfinite(n) for n in norms.values()), norms


def test_gradient_descent_on_distillation_loss_mimics_softmax_better(distillation):
  params, value_and_grad = distillation
  losses = []
  for _ in range(10):
    loss, grads = value_and_grad(params)
    losses.append(float(loss))
    params = jax.tree.map(lambda p, g: p - 3.0 * g, params, grads)
  losses.append(float(value_and_grad(params)[0]))
  assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
  assert losses[-1] < losses[0] - 0.05, losses


def test_causal_forms_agree_on_packed_rows():
  segments = packed_segments([6, 1, 11, 9], 30)
  q, k, v = qkv(jax.random.key(3), 1, 30)
  mixer, variables, _ = _init()
  rng = np.random.default_rng(4)
  variables = jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape, np.float32), variables)  # non-trivial maps
  outs = {}
  for form, chunk in (("parallel", 64), ("recurrent", 64), ("chunked", 7)):
    mixer = attention.build("hedgehog", {"causal_form": form, "chunk_size": chunk})
    outs[form] = jax.jit(lambda *a, mixer=mixer: mixer.apply(variables, *a, True))(q, k, v, segments)
  for form in ("recurrent", "chunked"):
    assert relative_rms_error(outs[form], outs["parallel"]) <= 1e-5


def test_bad_config_names_the_value_and_the_choices():
  with pytest.raises(ValueError, match=r"hedgehog causal_form 'blocked'; choose one of parallel, recurrent, chunked"):
    attention.make_config("hedgehog", {"causal_form": "blocked"})
  with pytest.raises(ValueError, match="feature_dim must be >= 0"):
    attention.make_config("hedgehog", {"feature_dim": -1})
