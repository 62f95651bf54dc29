"""research bench train: analytic model FLOPs, device peaks, and one real (tiny) measured step."""

from __future__ import annotations

import dataclasses
import json

import pytest

from research import attention
from research.bench import train as bench_train
from research.bench.flops import attention_flops
from tests.train.common import TINY, tiny_config


@dataclasses.dataclass
class FakeDevice:
  device_kind: str
  platform: str = "gpu"


def test_peaks_by_device_kind_and_a_clear_error_for_unknown_accelerators():
  assert bench_train.peak_flops(FakeDevice("NVIDIA H100 80GB HBM3"))[0] == 989e12
  assert bench_train.peak_flops(FakeDevice("NVIDIA H200"))[0] == 989e12
  assert bench_train.peak_flops(FakeDevice("TPU v5 lite", "tpu"))[0] == 197e12
  with pytest.raises(ValueError, match="'Imaginary GPU'.*PEAKS"):
    bench_train.peak_flops(FakeDevice("Imaginary GPU"))


def test_model_flops_by_hand():
  c = tiny_config("attention=linear")  # d32, 4 heads, 2 layers, MLP 64
  b, n, e, m = 16, 49, 32, 64
  attn = attention_flops("linear", attention.make_config("linear"), b, n, 4, 8)
  forward = 2 * (b * n * (8 * e * e + 4 * e * m) + attn)
  assert bench_train.model_flops(c, "classify", b, n, 128) == 3 * forward
  assert bench_train.model_flops(c, "pair", b, n, 128) == 6 * forward  # both inputs through the encoder
  assert bench_train.model_flops(c, "tokens", b, n, 128) == 3 * (forward + 2 * b * n * e * 128)
  hybrid = tiny_config("attention='linear+softmax'")
  mixed = (
    2 * b * n * (8 * e * e + 4 * e * m)
    + attn
    + attention_flops("softmax", attention.make_config("softmax"), b, n, 4, 8)
  )
  assert bench_train.model_flops(hybrid, "classify", b, n, 128) == 3 * mixed


def test_a_measured_step(tmp_path):
  grid = bench_train.run_grid(
    f"experiments/listops.py:{TINY}",
    ["model.remat_policy='none'", "model.remat_policy='full'"],
    bench_train.Spec(steps=2, warmup=1),
  )
  none, full = grid["rows"]
  assert (none["setting"], full["setting"]) == ("model.remat_policy='none'", "model.remat_policy='full'")
  assert none["model_flops"] == full["model_flops"]  # remat recomputes; model FLOPs do not count it
  result = none
  assert result["step_s"] > 0 and len(result["step_times_s"]) == 2 and result["compile_s"] > 0
  assert result["peak_source"].startswith("measured") and 0 < result["mfu"] < 1
  assert result["mfu"] == pytest.approx(result["model_flops"] / result["step_s"] / result["peak_flops"])
  assert result["compiled_memory_bytes"] > 0 and result["params"] > 0
  paths = bench_train.write(grid, tmp_path, "t")
  assert json.loads(paths["json"].read_text())["schema_version"] == bench_train.SCHEMA_VERSION
  assert "| MFU |" in paths["md"].read_text()
