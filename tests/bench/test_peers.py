"""research bench peers: equal-shape peer encoders (x-transformers, performer-pytorch, linear-attention-transformer),
the timed comparison's schema, FAVOR+ equivalence with performer-pytorch, and the missing-extra error."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from research.bench import peers  # before torch loads: sets OMP_WAIT_POLICY (see research/bench/peers.py)

# The [peers] extra (CPU torch + three libraries) lives in its own venv: scripts/test_peers.sh runs this file there.
# CI never installs torch, so there only the torch-free tests below run.
needs_peers = pytest.mark.skipif(
  importlib.util.find_spec("torch") is None, reason="the [peers] extra: run scripts/test_peers.sh"
)

TINY = peers.Shape(layers=2, d_model=64, heads=4, length=64, batch=2, vocab_size=20)


@pytest.mark.parametrize("variant", sorted(peers.PAIRS))
@needs_peers
def test_parameter_counts_match_within_one_percent_and_differ_only_by_the_documented_biases(variant):
  ours = peers.our_param_count(variant, TINY)
  peer = peers.param_count(peers.peer_model(variant, TINY))
  assert abs(peer / ours - 1) <= peers.PARAM_TOLERANCE
  assert ours - peer == peers.expected_param_gap(variant, TINY)


@needs_peers
def test_run_schema_times_and_ratio(tmp_path):
  result = peers.run(["linear"], [32, 64], batch=2, layers=2, d_model=64, heads=4, steps=2, warmup=1, vocab_size=20)
  assert result["kind"] == "peers" and result["platform"] == "cpu"
  assert result["torch_threads"] == result["jax_threads"] == peers.jax_threads()
  assert set(result["versions"]) == {"jax", *peers.PACKAGES.values()}
  assert [(r["variant"], r["length"]) for r in result["rows"]] == [("linear", 32), ("linear", 64)]
  for row in result["rows"]:
    assert set(row) == set(peers.ROW_FIELDS)
    assert row["peer"] == "linear_attention_transformer"
    assert row["ours_s"] > 0 and row["peer_s"] > 0 and len(row["ours_times_s"]) == len(row["peer_times_s"]) == 2
    assert row["ratio"] == pytest.approx(row["peer_s"] / row["ours_s"])
    assert row["params_rel_diff"] == pytest.approx(row["params_peer"] / row["params_ours"] - 1)
    assert not row["params_flagged"]
  assert result["summary"]["linear"]["min_ratio"] == min(r["ratio"] for r in result["rows"])
  paths = peers.write(result, tmp_path)
  assert paths["json"].parent.name == "cpu" and json.loads(paths["json"].read_text())["rows"] == result["rows"]
  assert "| linear | linear_attention_transformer | 64 |" in paths["md"].read_text()


@needs_peers
def test_our_performer_equals_performer_pytorch_favor_plus_given_the_same_projection():
  result = peers.performer_equivalence(batch=2, length=32, heads=2, head_dim=16, num_features=32)
  assert result["max_abs_diff"] < 1e-4
  # Their shipped convention (feature eps 1e-4 inside the exponential features) is a different function.
  assert result["max_abs_diff_default"] > 100 * result["max_abs_diff"]


@pytest.mark.parametrize("missing", ["torch", "x_transformers"])
def test_missing_library_is_one_error_line_naming_the_install_command(monkeypatch, missing):
  monkeypatch.setitem(sys.modules, missing, None)  # import fails as if not installed
  with pytest.raises(ValueError) as err:
    peers.run(["softmax"], [32], steps=1, warmup=0)
  message = str(err.value)
  first_missing = "torch" if missing == "torch" or importlib.util.find_spec("torch") is None else missing
  assert "\n" not in message and first_missing in message and peers.INSTALL_HINT in message
  with pytest.raises(ValueError, match="no peer for variant"):
    peers.run(["reformer"], [32])
