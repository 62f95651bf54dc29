"""research bench attention: slope fitting, compiled-memory scaling (compile only), the result schema."""

from __future__ import annotations

import json

import pytest

from research.bench import attention as bench

LINEAR_FAMILY = ("linear", "performer", "cosformer", "hedgehog", "retention", "based", "gla", "local")


def test_loglog_slope_of_synthetic_timings():
  ns = [256, 512, 1024, 2048]
  assert bench.loglog_slope(ns, [3e-3 * (n / 256) ** 2 for n in ns]) == pytest.approx(2.0)
  assert bench.loglog_slope(ns, [1.0 + 0.0 * n for n in ns]) == pytest.approx(0.0, abs=1e-12)
  noisy = [t * f for t, f in zip([n * 1e-6 for n in ns], [1.05, 0.95, 1.02, 0.99], strict=True)]
  assert bench.loglog_slope(ns, noisy) == pytest.approx(1.0, abs=0.05)
  assert bench.loglog_slope([512], [1.0]) is None and bench.loglog_slope([512, 512], [1.0, 2.0]) is None


def _temp(name: str, lengths, **kw) -> list[int]:
  spec = bench.Spec(variants=("softmax",), lengths=tuple(lengths), heads=2, head_dim=32, **kw)
  out = []
  for n in lengths:
    compiled, _, _ = bench.compile_fwd_bwd(name, spec, n)
    temp, total = bench.compiled_memory(compiled)
    assert 0 < temp <= total  # from the compiled executable's memory_analysis()
    out.append(temp)
  return out


def test_materialized_softmax_memory_is_quadratic():
  small, large = _temp("softmax", (4096, 8192))  # compile only: nothing of this size is allocated
  assert large / small >= 3.5  # the LxL scores (XLA path on CPU) dominate the temporaries


@pytest.mark.parametrize("name", LINEAR_FAMILY)
def test_linear_family_memory_is_linear(name):
  lengths = (1024, 4096)  # two compiles: the scanned variants compile slowly
  slope = bench.loglog_slope(lengths, _temp(name, lengths))
  assert slope is not None and slope <= 1.15, f"{name}: temp memory slope {slope:.2f}"


def test_bad_specs_are_named():
  with pytest.raises(ValueError, match="unknown attention 'soft'"):
    bench.Spec(variants=("soft",), lengths=(64,))
  with pytest.raises(ValueError, match="increasing"):
    bench.Spec(variants=("linear",), lengths=(128, 64))
  with pytest.raises(ValueError, match="dtype 'fp8'"):
    bench.Spec(variants=("linear",), lengths=(64,), dtype="fp8")
  with pytest.raises(ValueError, match="lengths must be positive"):
    bench.Spec(variants=("linear",), lengths=(0,))


def test_run_schema_and_outputs(tmp_path):
  spec = bench.Spec(variants=("softmax", "linear"), lengths=(32, 64), heads=2, head_dim=16, repeats=2)
  result = bench.run(spec, log=lambda s: None)
  assert set(result) == set(bench.RESULT_FIELDS) and result["schema_version"] == bench.SCHEMA_VERSION
  assert [(r["variant"], r["length"]) for r in result["rows"]] == [
    (v, n) for v in (bench.REFERENCE, "softmax", "linear") for n in (32, 64)
  ]
  for r in result["rows"]:
    assert set(bench.ROW_FIELDS) <= set(r) <= set(bench.ROW_FIELDS) | {"ratio_fwd", "ratio_fwd_bwd"}
    assert isinstance(r["custom_calls"], list)
    assert r["fwd_s"] > 0 and r["fwd_bwd_s"] > 0 and r["flops"] > 0 and r["repeats_done"] == 2
    assert r["variant"] == bench.REFERENCE or r["ratio_fwd_bwd"] == pytest.approx(
      r["fwd_bwd_s"]
      / next(x["fwd_bwd_s"] for x in result["rows"] if x["variant"] == bench.REFERENCE and x["length"] == r["length"])
    )
  assert set(result["summary"]) == {"softmax", "linear", bench.REFERENCE}
  paths = bench.write(result, tmp_path)
  assert paths["json"].parent == tmp_path / bench.device_dir(result["device"])
  assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(result))
  assert paths["md"].read_text().count("\n| linear |") == 3  # two lengths + the summary row
  assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_length_sized_variants_get_max_len_of_the_length_timed():
  # synthesizer's default max_len is 512; an encoder built for 640 tokens would give it 640, and so does the bench
  spec = bench.Spec(variants=("synthesizer",), lengths=(640,), batch=1, heads=1, head_dim=8, repeats=1)
  row = bench.measure("synthesizer", spec, 640)
  assert row["fwd_bwd_s"] > 0 and "skipped" not in row


def test_memory_budget_skips_without_running():
  spec = bench.Spec(variants=("softmax",), lengths=(256,), heads=2, head_dim=16, max_memory_gb=1e-6)
  row = bench.measure("softmax", spec, 256)
  assert row["skipped"].startswith("compiled memory") and "fwd_s" not in row


def test_custom_calls_and_hbm_peaks():
  hlo = 'x = f(y), custom_call_target="__cudnn$fmhaSoftmax", z = g(w), custom_call_target="__cudnn$fmhaSoftmax"'
  assert bench.custom_calls(hlo) == ["__cudnn$fmhaSoftmax"] and bench.custom_calls("add(x, y)") == []
  assert bench.hbm_peak("NVIDIA H100 80GB HBM3") == 3.35e12 and bench.hbm_peak("cpu") is None
