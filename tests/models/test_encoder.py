"""Encoder and heads: padding is exact, packing matches, remat is transparent, dtypes are as configured."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.attention.masks import Segments
from research.models.encoder import Encoder, EncoderConfig, rope
from research.models.heads import Classifier, MaskedLM
from tests.attention.helpers import packed_segments


def _cfg(**kw):
  base = dict(vocab_size=17, max_len=64, d_model=32, num_heads=4, num_layers=2, mlp_dim=64)
  return EncoderConfig(**{**base, **kw})


def _run(module, tokens, segments, **kw):
  variables = jax.jit(module.init)(jax.random.key(0), tokens, segments)
  return jax.jit(lambda v, t, s: module.apply(v, t, s, **kw))(variables, tokens, segments), variables


def _tokens(b, length, seed=0):
  return jax.random.randint(jax.random.key(seed), (b, length), 2, 17)


@pytest.mark.parametrize("attention,positions", [("softmax", "learned"), ("linear", "rope")])
def test_padding_is_exact_zero_and_garbage_under_it_is_ignored(attention, positions):
  enc = Encoder(_cfg(attention=attention, positions=positions))
  tokens = _tokens(2, 24)
  segments = Segments.from_lengths(jnp.array([24, 10]), 24)
  out, variables = _run(enc, tokens, segments)
  assert out.shape == (2, 24, 32) and out.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(out[1, 10:]), 0.0)
  other = jax.jit(enc.apply)(variables, tokens.at[1, 10:].set(5), segments)
  np.testing.assert_allclose(other[1], out[1], atol=1e-6)


@pytest.mark.parametrize(
  "attention,positions,conv",
  [("softmax", "learned", 0), ("linear", "rope", 4), ("softmax", "rope", 3), ("linear+softmax", "learned", 2)],
)
def test_packed_rows_equal_sequences_alone(attention, positions, conv):
  enc = Encoder(_cfg(attention=attention, positions=positions, conv_kernel=conv))
  lengths = [7, 1, 12]
  tokens = _tokens(1, 23, seed=3)
  packed_seg = packed_segments(lengths, 23)
  packed, variables = _run(enc, tokens, packed_seg)
  start, apply = 0, jax.jit(enc.apply)
  for n in lengths:
    alone = apply(variables, tokens[:, start : start + n], Segments.from_lengths(jnp.array([n]), n))
    np.testing.assert_allclose(packed[0, start : start + n], alone[0], atol=2e-5, rtol=1e-4)
    start += n


def test_remat_policies_and_unrolling_change_nothing_but_memory_and_speed():
  tokens, segments = _tokens(2, 16), Segments.from_lengths(jnp.array([16, 9]), 16)
  results, trees = [], []
  for options in (
    dict(remat_policy="none"),
    dict(remat_policy="full"),
    dict(remat_policy="dots"),
    dict(scan_unroll=2),
    dict(scan_unroll=5, remat_policy="dots"),
  ):
    model = Classifier(_cfg(**options), 10)
    variables = jax.jit(model.init)(jax.random.key(0), tokens, segments)
    trees.append(jax.tree.map(jnp.shape, nn.meta.unbox(variables)))
    loss = lambda p, model=model: jnp.sum(model.apply({"params": p}, tokens, segments) ** 2)  # noqa: E731
    grads = jax.jit(jax.grad(loss))(variables["params"])
    results.append(jax.tree.leaves(nn.meta.unbox(grads)))
  for other in results[1:]:
    for a, b in zip(results[0], other, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert all(tree == trees[0] for tree in trees[1:])  # unrolling keeps the stacked parameter tree (checkpoints)


def test_bfloat16_compute_keeps_float32_params():
  enc = Encoder(_cfg(dtype="bfloat16", mlp="geglu"))
  out, variables = _run(enc, _tokens(2, 8), Segments.from_lengths(jnp.array([8, 5]), 8))
  assert out.dtype == jnp.bfloat16
  assert {x.dtype for x in jax.tree.leaves(nn.meta.unbox(variables))} == {jnp.dtype(jnp.float32)}
  mlp_in = nn.meta.unbox(variables)["params"]["stack"]["layers"]["mlp_in"]["kernel"]
  assert mlp_in.shape == (2, 32, 128)  # stacked layers; GeGLU doubles the MLP input width


def test_layers_are_stacked_and_vocab_is_padded():
  cfg = _cfg(vocab_size=130)
  assert cfg.padded_vocab == 256
  variables = jax.eval_shape(
    Encoder(cfg).init, jax.random.key(0), _tokens(1, 8), Segments.from_lengths(jnp.array([8]), 8)
  )
  params = nn.meta.unbox(variables)["params"]
  assert params["embed"]["embedding"].shape == (256, 32)
  assert params["stack"]["layers"]["query"]["kernel"].shape == (2, 32, 4, 8)
  spec = nn.get_partition_spec(variables)["params"]["stack"]["layers"]["query"]["kernel"]
  assert tuple(spec) == ("layers", "embed", "heads", "kv")


def test_too_long_sequence_and_bad_config_are_clear_errors():
  enc = Encoder(_cfg(max_len=16))
  with pytest.raises(ValueError, match="sequence length 20 exceeds model.max_len=16"):
    jax.eval_shape(enc.init, jax.random.key(0), _tokens(1, 20), Segments.from_lengths(jnp.array([20]), 20))
  with pytest.raises(ValueError, match="d_model=30 is not divisible by model.num_heads=4"):
    _cfg(d_model=30)
  with pytest.raises(ValueError, match="model.remat_policy='some'"):
    _cfg(remat_policy="some")
  with pytest.raises(ValueError, match="model.scan_unroll must be >= 1.*got 0"):
    _cfg(scan_unroll=0)


def test_rope_scores_depend_only_on_relative_position():
  q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 16))
  pos = lambda p: jnp.array([[p]])  # noqa: E731
  score = lambda i, j: jnp.sum(rope(q, pos(i)) * rope(k, pos(j)))  # noqa: E731
  np.testing.assert_allclose(score(3, 1), score(12, 10), rtol=1e-5)
  assert not np.isclose(score(3, 1), score(3, 2))


def test_heads_shapes_and_pooling():
  tokens, segments = _tokens(2, 12), Segments.from_lengths(jnp.array([12, 6]), 12)
  logits, variables = _run(Classifier(_cfg(), 10, pool="mean"), tokens, segments)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  mlm_logits, _ = _run(MaskedLM(_cfg()), tokens, segments)
  assert mlm_logits.shape == (2, 12, 128)
  assert float(mlm_logits[..., 17:].max()) == -1e9  # padded vocabulary never predicted


def test_causal_encoder_with_conv_ignores_the_future():
  enc = Encoder(_cfg(attention="linear", causal=True, conv_kernel=4, positions="rope"))
  tokens, segments = _tokens(1, 20), Segments.from_lengths(jnp.array([20]), 20)
  out, variables = _run(enc, tokens, segments)
  moved = jax.jit(enc.apply)(variables, tokens.at[0, 11].set(3), segments)
  np.testing.assert_array_equal(np.asarray(moved[0, :11]), np.asarray(out[0, :11]))
  assert not np.allclose(moved[0, 11], out[0, 11])


def test_hybrid_layers_and_captured_attention():
  cfg = _cfg(attention="linear+softmax", attention_cfg={"chunk_size": 8}, capture_attention=True)
  assert cfg.layer_attention == ("linear", "softmax") and cfg.attention_cfg[0].chunk_size == 8
  enc = Encoder(cfg)
  tokens, segments = _tokens(2, 12), Segments.from_lengths(jnp.array([12, 7]), 12)
  variables = jax.jit(enc.init)(jax.random.key(0), tokens, segments)
  out, state = jax.jit(lambda v: enc.apply({"params": v["params"]}, tokens, segments, mutable=["intermediates"]))(
    variables
  )
  weights = [state["intermediates"]["stack"][f"layer_{i}"]["attention_weights"][0] for i in range(2)]
  for w in weights:
    assert w.shape == (2, 4, 12, 12) and w.dtype == jnp.float32
    np.testing.assert_allclose(w[1, :, :7].sum(-1), 1.0, rtol=1e-5)  # valid rows are distributions
    np.testing.assert_array_equal(np.asarray(w[1, :, :, 7:]), 0.0)  # padding keys get no weight
  assert not np.allclose(weights[0], weights[1])
  with pytest.raises(ValueError, match="unknown attention option"):
    _cfg(attention="linear+softmax", attention_cfg={"window": 3})
  scanned = Encoder(_cfg(capture_attention=True))
  _, state = scanned.apply(
    scanned.init(jax.random.key(0), tokens, segments), tokens, segments, mutable=["intermediates"]
  )
  assert state["intermediates"]["stack"]["layers"]["attention_weights"][0].shape == (2, 2, 4, 12, 12)
