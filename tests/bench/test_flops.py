"""research.bench.flops: the analytic counts against XLA's cost analysis and against the programs' own matmuls.

Scan-free forward programs: `attention_flops` must lie within 25% of `compiled.cost_analysis()['flops']` of the
module's forward apply at L = 64 and L = 128 (B = 1, H = 2, D = 16), and its growth from 64 to 128 within 10% of
XLA's (that pins the scaling in L). The residual is XLA counting mask compares/selects that the formulas leave
out, and not counting exp/log (XLA files them under 'transcendentals').

Programs with a `lax.scan` over the sequence (the chunked causal forms, and retention/gla even bidirectionally:
both directions run as one chunked causal pass) cannot be checked that way: cost_analysis counts a scan body once
whatever its trip count (/work/shared/JAX_NOTES.md), so XLA's number falls short by up to the number of chunks;
on CPU it also counts a cumulative sum (a reduce-window) at up to n FLOPs per element, which alone is ~40% of
gla's count. For those, the analytic count must grow linearly in L and must cover the program's matmuls: it lies
between 1x and 1.5x the matmul FLOPs of the jaxpr with every scan body multiplied by its trip count.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core

import research.attention as attention
from research.attention.masks import Segments
from research.bench.flops import FORMULAS, attention_flops, attention_flops_fwd_bwd

B, H, D = 1, 2, 16
LENGTHS = (64, 128)
# (variant, causal) whose forward program scans over the sequence at the default config
SCANNED = {("retention", False), ("gla", False)} | {
  (name, True) for name in ("linear", "performer", "cosformer", "hedgehog", "based", "retention", "gla")
}
CASES = [(name, False) for name in attention.names()] + [
  (name, True) for name in attention.names() if attention.capabilities(name).supports_causal
]
XLA_CASES = [case for case in CASES if case not in SCANNED]
SCAN_CASES = sorted(SCANNED)


def _forward(name: str, length: int, causal: bool):
  """The module's jitted forward apply and abstract arguments (variables from `module.init`, by shape only)."""
  mixer = attention.build(name, {})
  q = jax.ShapeDtypeStruct((B, length, H, D), jnp.float32)
  segments = Segments.from_lengths(jnp.full((B,), length), length)
  variables = jax.eval_shape(lambda q: mixer.init(jax.random.key(0), q, q, q, segments, causal), q)
  fwd = jax.jit(lambda variables, q, k, v, segments: mixer.apply(variables, q, k, v, segments, causal))
  return fwd, (variables, q, q, q, segments)


def _xla(name: str, length: int, causal: bool) -> tuple[float, bool]:
  """(XLA's forward FLOPs, whether the compiled program has a while loop)."""
  fwd, args = _forward(name, length, causal)
  compiled = fwd.lower(*args).compile()
  return float(compiled.cost_analysis()["flops"]), "while" in compiled.as_text()


def _subjaxprs(eqn):
  for param in eqn.params.values():
    for sub in param if isinstance(param, (list, tuple)) else (param,):
      if isinstance(sub, jex_core.ClosedJaxpr):
        yield sub.jaxpr
      elif isinstance(sub, jex_core.Jaxpr):
        yield sub


def _matmul_flops(jaxpr, trips: int = 1) -> tuple[int, bool]:
  """(2 × multiply-adds of every dot_general, scan bodies times their trip count; whether a scan occurs)."""
  total, scanned = 0, False
  for eqn in jaxpr.eqns:
    is_scan = eqn.primitive.name == "scan"
    for sub in _subjaxprs(eqn):
      flops, inner = _matmul_flops(sub, trips * (eqn.params["length"] if is_scan else 1))
      total, scanned = total + flops, scanned or inner or is_scan
    if eqn.primitive.name == "dot_general":
      (contract, _), _ = eqn.params["dimension_numbers"]
      k = int(np.prod([eqn.invars[0].aval.shape[i] for i in contract]))
      total += trips * 2 * k * int(np.prod(eqn.outvars[0].aval.shape))
  return total, scanned


def test_every_registered_variant_has_a_formula():
  assert sorted(FORMULAS) == attention.names()


@pytest.mark.parametrize("name,causal", XLA_CASES)
def test_scan_free_variants_match_xla(name, causal):
  cfg = attention.make_config(name)
  ours, xla = [], []
  for length in LENGTHS:
    flops, has_while = _xla(name, length, causal)
    assert not has_while, f"{name} causal={causal} now loops at L={length}: move it to SCANNED"
    ours.append(attention_flops(name, cfg, B, length, H, D, causal))
    xla.append(flops)
    assert abs(ours[-1] / flops - 1) <= 0.25, (name, causal, length, ours[-1], flops, ours[-1] / flops)
  growth = (ours[1] / ours[0]) / (xla[1] / xla[0])
  assert abs(growth - 1) <= 0.10, (name, causal, ours, xla, growth)


@pytest.mark.parametrize("name,causal", SCAN_CASES)
def test_scanned_variants_cover_their_matmuls_and_scale_linearly(name, causal):
  """cost_analysis counts a scan body once (see the module docstring): check against the jaxpr and the scaling."""
  cfg = attention.make_config(name)
  for length in LENGTHS:
    fwd, args = _forward(name, length, causal)
    matmuls, scanned = _matmul_flops(jax.make_jaxpr(fwd)(*args).jaxpr)
    assert scanned, f"{name} causal={causal} no longer scans at L={length}: move it out of SCANNED"
    ours = attention_flops(name, cfg, B, length, H, D, causal)
    assert matmuls <= ours <= 1.5 * matmuls, (name, causal, length, ours, matmuls, ours / matmuls)
  for length in (256, 1024, 4096):
    flops = [attention_flops(name, _sized_for(name, n), 1, n, 4, 64, causal) for n in (length, 2 * length)]
    assert 1.8 <= flops[1] / flops[0] <= 2.2, (name, causal, length, flops)


def _sized_for(name: str, length: int):
  """The default config, with the length limits (synthesizer max_len, cosformer causal_m) set to `length`."""
  limit = {"synthesizer": "max_len", "cosformer": "causal_m"}.get(name)
  return attention.make_config(name, {limit: length} if limit else {})


@pytest.mark.parametrize("name,causal", CASES)
def test_long_sequences_scale_as_the_declared_complexity(name, causal):
  """Doubling L from 4096 (H = 4, D = 64): ×4 for the O(N²) variants, ×2 (up to a log factor) for every other."""
  flops = [attention_flops(name, _sized_for(name, length), 1, length, 4, 64, causal) for length in (4096, 8192)]
  lo, hi = (3.5, 4.2) if "N^2" in attention.capabilities(name).complexity else (1.8, 2.2)
  assert lo <= flops[1] / flops[0] <= hi, (name, causal, flops)


def test_fwd_bwd_is_three_forwards():
  cfg = attention.make_config("linear")
  assert attention_flops_fwd_bwd("linear", cfg, 2, 256, 4, 32) == 3 * attention_flops("linear", cfg, 2, 256, 4, 32)


def test_unknown_name_raises_naming_the_valid_ones():
  with pytest.raises(ValueError, match="unknown_attention.*softmax") as info:
    attention_flops("unknown_attention", None, 1, 64, 2, 16)
  assert all(name in str(info.value) for name in attention.names())


def test_calls_the_variant_would_refuse_raise():
  with pytest.raises(ValueError, match="Config"):
    attention_flops("performer", attention.make_config("linear"), 1, 64, 2, 16)
  with pytest.raises(ValueError, match="causal"):
    attention_flops("linformer", None, 1, 64, 2, 16, causal=True)
  with pytest.raises(ValueError, match="max_len"):
    attention_flops("synthesizer", None, 1, 1024, 2, 16)
