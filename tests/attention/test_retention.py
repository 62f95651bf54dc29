"""Retention specifics: the paper's γ schedule, the three forms agree before and after the GroupNorm on packed
rows, and the decay matrix is exactly γ^|i−j| (bidirectional, diagonal once) or γ^(i−j) (causal), built in numpy."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import research.attention as attention
from research.attention.reference import reference_attention, relative_rms_error
from research.attention.retention import log_gammas
from tests.attention.helpers import qkv
from tests.attention.test_decay import LAYOUTS, ROW, packed_rows

FORMS = [{"causal_form": "parallel"}, {"causal_form": "recurrent"}, {"causal_form": "chunked", "chunk_size": 7}]


def _variables(mixer, q, k, v, segments):
  """Init, then random GroupNorm scale and bias so that `finalize` is not the identity."""
  params = nn.meta.unbox(jax.jit(mixer.init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False))
  norm = params["params"]["norm"]
  keys = jax.random.split(jax.random.key(9), 2)
  scale = 1.0 + jax.random.normal(keys[0], norm["scale"].shape)
  return {"params": {"norm": {"scale": scale, "bias": jax.random.normal(keys[1], norm["bias"].shape)}}}


def test_gamma_schedule_is_the_papers():
  np.testing.assert_allclose(np.exp(np.asarray(log_gammas(4), np.float64)), 1 - 2.0 ** (-5 - np.arange(4)), rtol=1e-7)
  assert np.all(np.asarray(log_gammas(24)) < 0)  # γ itself would round to 1 in fp32 from head 19 on


@pytest.mark.parametrize("causal", [False, True], ids=["bidirectional", "causal"])
def test_forms_agree_before_and_after_the_groupnorm_on_packed_rows(causal):
  segments = packed_rows(LAYOUTS, ROW)
  q, k, v = qkv(jax.random.key(0), len(LAYOUTS), ROW)
  base = attention.build("retention")
  variables = _variables(base, q, k, v, segments)

  @jax.jit
  def run(q, k, v):
    pre = {}
    for overrides in FORMS:
      mixer = attention.build("retention", overrides)
      pre[overrides["causal_form"]] = mixer.apply(variables, q, k, v, segments, causal, method="retain")
    out = base.apply(variables, q, k, v, segments, causal)  # chunked, chunk 64
    ref = reference_attention(base.apply(variables, q, k, v, segments, causal, method="implied_weights"), v)
    finalize = lambda x: base.apply(variables, x, segments, method="finalize")  # noqa: E731
    return pre, {form: finalize(x) for form, x in pre.items()}, out, ref, finalize(ref)

  pre, post, out, ref_pre, ref_post = run(q, k, v)
  for form in pre:
    assert relative_rms_error(pre[form], ref_pre) <= 1e-5, form
    assert relative_rms_error(post[form], ref_post) <= 1e-5, form
    np.testing.assert_allclose(post[form], out, rtol=1e-5, atol=2e-5, err_msg=form)
  np.testing.assert_array_equal(np.asarray(out)[~np.asarray(segments.valid)], 0.0)


@pytest.mark.parametrize("causal,normalize_decay", [(False, False), (True, True)], ids=["bidirectional", "causal+D̃"])
def test_decay_matrix_built_in_numpy(causal, normalize_decay):
  """D_ij = γ_h^|i−j| inside each segment (j ≤ i if causal), diagonal once; D̃ divides each row by √(its sum)."""
  lengths, row = [7, 1, 12], 23
  segments = packed_rows([lengths], row)
  q, k, v = qkv(jax.random.key(1), 1, row)
  mixer = attention.build("retention", {"normalize_decay": normalize_decay, "chunk_size": 8})
  got = jax.jit(lambda q, k, v: mixer.apply({}, q, k, v, segments, causal, method="retain"))(q, k, v)

  q_n, k_n, v_n = (np.asarray(x[0], np.float64) for x in (q, k, v))
  gamma = 1 - 2.0 ** (-5 - np.arange(2))
  want = np.zeros_like(v_n)
  start = 0
  for n in lengths:
    idx = np.arange(n)
    for h in range(2):
      decay = gamma[h] ** np.abs(idx[:, None] - idx[None, :])
      if causal:
        decay = np.tril(decay)
      if normalize_decay:
        decay = decay / np.sqrt(decay.sum(-1, keepdims=True))
      s = slice(start, start + n)
      scores = q_n[s, h] @ k_n[s, h].T / np.sqrt(q_n.shape[-1])
      want[s, h] = (scores * decay) @ v_n[s, h]
    start += n
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-5)


def test_groupnorm_params_are_logically_partitioned():
  q, k, v = qkv(jax.random.key(2), 1, 8)
  segments = packed_rows([[8]], 8)
  variables = jax.jit(attention.build("retention").init, static_argnums=5)(jax.random.key(0), q, k, v, segments, False)
  specs = nn.get_partition_spec(variables)["params"]["norm"]
  assert specs == {"scale": PartitionSpec("heads", "kv"), "bias": PartitionSpec("heads", "kv")}


@pytest.mark.parametrize(
  "overrides,message",
  [
    ({"causal_form": "blocked"}, "retention causal_form 'blocked'; choose one of parallel, recurrent, chunked"),
    ({"chunk_size": 0}, "retention chunk_size must be positive, got 0"),
    ({"normalize_decay": "yes"}, "retention normalize_decay must be True or False, got 'yes'"),
    ({"norm_eps": 0.0}, "retention norm_eps must be > 0, got 0.0"),
  ],
)
def test_bad_config_is_a_clear_error(overrides, message):
  with pytest.raises(ValueError, match=message):
    attention.make_config("retention", overrides)
