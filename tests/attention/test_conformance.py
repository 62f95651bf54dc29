"""Conformance suite: every registered variant, tested against what it declares.

Adding a variant to the registry puts it under these tests. The checks and their tolerances live in
`research/attention/conformance.py` (so that a notebook can run them on a variant registered in its kernel); here
each one runs per variant and causal mode, and a failure names the variant, the check and what was measured.
"""

from __future__ import annotations

import pytest

import research.attention as attention
from research.attention import conformance

NAMES = attention.names()


def _cases(need_weights: bool = False, need_packing: bool = False):
  caps = attention.capabilities
  keep = [
    n for n in NAMES if (caps(n).implied_weights or not need_weights) and (caps(n).supports_packing or not need_packing)
  ]
  return [(n, c) for n in keep for c in conformance.causal_modes(n)]


def _assert_passed(*checks: conformance.Check):
  failed = [c for c in checks if not c.passed]
  assert not failed, "\n".join(map(str, failed))


@pytest.mark.parametrize("name,causal", _cases(need_weights=True))
def test_matches_fp32_reference_with_padding(name, causal):
  _assert_passed(conformance.fp32_reference(name, causal))


@pytest.mark.parametrize("name,causal", _cases(need_packing=True))
def test_padded_equals_packed_equals_alone(name, causal):
  """Variants that declare supports_packing=False are checked for their clear error instead (below)."""
  _assert_passed(conformance.padded_packed_alone(name, causal))


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).supports_causal])
def test_causal_outputs_ignore_the_future(name):
  _assert_passed(conformance.causal_ignores_future(name))


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).length_invariant])
def test_extra_padding_changes_nothing(name):
  _assert_passed(conformance.extra_padding(name))


@pytest.mark.parametrize("name,causal", _cases(need_weights=True))
def test_gradients_match_reference(name, causal):
  _assert_passed(conformance.gradients(name, causal))


@pytest.mark.parametrize("name", NAMES)
def test_undeclared_use_is_a_clear_error(name):
  _assert_passed(*conformance.clear_errors(name))


def test_unknown_attention_name_lists_choices():
  with pytest.raises(ValueError, match=r"unknown attention 'sofmax'; choose one of .*softmax"):
    attention.get("sofmax")


@pytest.mark.parametrize("name", [n for n in NAMES if attention.capabilities(n).implied_weights])
def test_bfloat16_inputs_within_stated_tolerance(name):
  _assert_passed(conformance.bfloat16(name))
