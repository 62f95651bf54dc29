"""`research bench attention`: time, compiled memory, FLOPs and throughput of attention variants vs length.

For each variant and length, on q, k, v of shape [batch, length, heads, head_dim] (one full-length sequence per
row, self-attention) and in the same process as the reference `jax.nn.dot_product_attention`:

  fwd_s / fwd_bwd_s    median wall time of N calls after warm-up (`block_until_ready`), forward and
                       forward+backward (gradient of sum(out) w.r.t. q, k, v and the variant's parameters)
  memory_bytes         `jit(...).lower(...).compile().memory_analysis()` of the fwd+bwd program:
                       temp + argument + output bytes (compiled memory, not a device-memory measurement);
                       temp_bytes separately (what grows with length)
  flops                analytic forward FLOPs (research/bench/flops.py; fwd+bwd = 3x forward) — XLA's
                       cost_analysis() counts a scan body once, so it is not used for the table
  tflops_s, gb_s       achieved: flops / time, and the unavoidable traffic (read q, k, v, write out; fwd+bwd
                       also reads the output gradient and writes dq, dk, dv) / time
  ratio_fwd, ratio_fwd_bwd   time / the reference's time at the same length (> 1: slower than the reference)

Per variant: the log-log slopes of fwd+bwd time, temp memory and total memory vs length (least squares over the
measured lengths, and between the last two: the asymptotic regime), and the crossover: the shortest measured
length from which the variant stays faster than `softmax` (when softmax is in the run).

A (variant, length) whose compiled memory exceeds `max_memory_gb` is recorded as skipped (nothing is run); one
whose first call takes longer than `max_seconds` is timed by that call alone (`repeats_done` says so).
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research import attention
from research.attention.masks import Segments
from research.report import write_files

REFERENCE = "reference"  # jax.nn.dot_product_attention called directly
HBM_PEAKS = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12, "TPU v4": 1.2e12, "TPU v5 lite": 0.82e12}  # bytes/s
DTYPES = ("float32", "bfloat16", "float16")
SCHEMA_VERSION = 1
RESULT_FIELDS = (
  "schema_version",
  "kind",
  "spec",
  "device",
  "platform",
  "num_devices",
  "jax_version",
  "rows",
  "summary",
)
ROW_FIELDS = (
  "variant",
  "length",
  "temp_bytes",
  "memory_bytes",
  "compile_s",
  "fwd_s",
  "fwd_bwd_s",
  "repeats_done",
  "custom_calls",
  "flops",
  "flops_fwd_bwd",
  "tflops_s",
  "tflops_s_fwd_bwd",
  "gb_s",
  "gb_s_fwd_bwd",
)
# + ratio_fwd, ratio_fwd_bwd (variants) and hbm_fraction_fwd_bwd (devices with a known HBM peak)


@dataclasses.dataclass(frozen=True)
class Spec:
  variants: tuple[str, ...]
  lengths: tuple[int, ...]
  batch: int = 1
  heads: int = 4
  head_dim: int = 64
  dtype: str = "float32"
  causal: bool = False
  repeats: int = 5
  warmup: int = 1
  max_memory_gb: float = 8.0
  max_seconds: float = 30.0

  def __post_init__(self):
    if not self.variants:
      raise ValueError("no variants given (expected e.g. softmax,linear)")
    for name in self.variants:
      attention.get(name)  # unknown names: one clear error listing the valid ones
    if not self.lengths or any(not isinstance(n, int) or n < 1 for n in self.lengths):
      raise ValueError(f"lengths must be positive integers, got {list(self.lengths)}")
    if list(self.lengths) != sorted(set(self.lengths)):
      raise ValueError(f"lengths must be increasing and distinct, got {list(self.lengths)}")
    for key in ("batch", "heads", "head_dim", "repeats"):
      if getattr(self, key) < 1:
        raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
    if self.warmup < 0:
      raise ValueError(f"warmup must be >= 0, got {self.warmup}")
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
    if self.causal:
      bad = [n for n in self.variants if not attention.capabilities(n).supports_causal]
      if bad:
        raise ValueError(f"--causal: {', '.join(bad)} do(es) not support causal attention")


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
  """Least-squares slope of log(y) vs log(x); None with fewer than two positive points."""
  pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x and y and x > 0 and y > 0]
  if len(pts) < 2:
    return None
  lx, ly = np.array(pts).T
  if np.ptp(lx) == 0:
    return None
  return float(np.polyfit(lx, ly, 1)[0])


def median_time(fn: Callable[[], Any], repeats: int, warmup: int, max_seconds: float) -> tuple[float, int]:
  """(median seconds of `repeats` calls after `warmup` calls, calls timed); a slow first call is the sample."""
  for i in range(warmup):
    tic = time.perf_counter()
    jax.block_until_ready(fn())
    if i == 0 and time.perf_counter() - tic > max_seconds:
      return time.perf_counter() - tic, 1
  samples = []
  for _ in range(repeats):
    tic = time.perf_counter()
    jax.block_until_ready(fn())
    samples.append(time.perf_counter() - tic)
    if samples[0] > max_seconds:
      break
  return statistics.median(samples), len(samples)


def _programs(name: str, spec: Spec, length: int, abstract: bool = False):
  """(fwd, fwd args, fwd_bwd, fwd_bwd args) jitted for one variant (or the reference) at one length.

  With `abstract`, the args are `jax.ShapeDtypeStruct`s from `jax.eval_shape`: nothing is computed or allocated
  (a softmax module's `init` runs its forward, which materialises the BxHxLxL scores).
  """
  dtype = jnp.dtype(spec.dtype)
  shape = (spec.batch, length, spec.heads, spec.head_dim)
  if name == REFERENCE:

    def apply(variables, q, k, v, lengths):
      del variables, lengths
      return jax.nn.dot_product_attention(q, k, v, is_causal=spec.causal)

    def init(key, q, k, v, lengths):
      del key, q, k, v, lengths
      return {}
  else:
    module = attention.build(name, attention.length_options(name, length))  # as an encoder for `length` would

    def apply(variables, q, k, v, lengths):
      return module.apply(variables, q, k, v, Segments.from_lengths(lengths, length), causal=spec.causal)

    def init(key, q, k, v, lengths):
      return module.init(key, q, k, v, Segments.from_lengths(lengths, length), causal=spec.causal)

  def inputs():
    kq, kk, kv, kinit = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v = (jax.random.normal(key, shape, jnp.float32).astype(dtype) for key in (kq, kk, kv))
    lengths = jnp.full((spec.batch,), length, jnp.int32)
    variables = dict(init(kinit, q, k, v, lengths))
    variables = jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, variables)
    return variables, q, k, v, lengths

  variables, q, k, v, lengths = jax.eval_shape(inputs) if abstract else inputs()

  def loss(params, q, k, v, rest, lengths):
    return jnp.sum(
      apply({**rest, "params": params} if params is not None else rest, q, k, v, lengths).astype(jnp.float32)
    )

  params = variables.get("params")
  rest = {c: t for c, t in variables.items() if c != "params"}
  fwd = jax.jit(apply)
  fwd_bwd = jax.jit(
    jax.grad(loss, argnums=(0, 1, 2, 3))
    if params is not None
    else jax.grad(lambda p, q, k, v, r, n: loss(None, q, k, v, r, n), argnums=(1, 2, 3))
  )
  return fwd, (variables, q, k, v, lengths), fwd_bwd, (params, q, k, v, rest, lengths)


def compiled_memory(compiled) -> tuple[int, int]:
  """(temp bytes, temp + argument + output bytes) of a compiled executable's memory_analysis()."""
  mem = compiled.memory_analysis()
  temp = int(mem.temp_size_in_bytes)
  return temp, temp + int(mem.argument_size_in_bytes + mem.output_size_in_bytes)


def _compile(fn, args: tuple):
  """(compiled executable, lowering + compile seconds)."""
  tic = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - tic


def compile_fwd_bwd(name: str, spec: Spec, length: int):
  """(compiled fwd+bwd executable, its abstract arguments, compile seconds), compiled only: nothing of size
  `length` is computed or allocated, so any length can be asked for. The memory numbers come from this."""
  _, _, fwd_bwd, bwd_args = _programs(name, spec, length, abstract=True)
  compiled, compile_s = _compile(fwd_bwd, bwd_args)
  return compiled, bwd_args, compile_s


def measure(name: str, spec: Spec, length: int) -> dict[str, Any]:
  """One row: times, compiled memory, FLOPs, throughput of `name` (or REFERENCE) at `length`."""
  from research.bench.flops import attention_flops  # analytic per-variant counts

  fwd, fwd_args, fwd_bwd, bwd_args = _programs(name, spec, length)  # inputs and variables built once
  compiled, compile_s = _compile(fwd_bwd, bwd_args)
  temp, total = compiled_memory(compiled)
  row: dict[str, Any] = {
    "variant": name,
    "length": length,
    "temp_bytes": temp,
    "memory_bytes": total,
    "compile_s": compile_s,
  }
  if total > spec.max_memory_gb * 2**30:
    return {**row, "skipped": f"compiled memory {total / 2**30:.1f} GiB > max_memory_gb={spec.max_memory_gb}"}
  compiled_fwd, _ = _compile(fwd, fwd_args)
  row["fwd_s"], n_fwd = median_time(lambda: compiled_fwd(*fwd_args), spec.repeats, spec.warmup, spec.max_seconds)
  row["fwd_bwd_s"], n_bwd = median_time(lambda: compiled(*bwd_args), spec.repeats, spec.warmup, spec.max_seconds)
  row["repeats_done"] = min(n_fwd, n_bwd)
  row["custom_calls"] = custom_calls(compiled_fwd.as_text())  # e.g. cuDNN's fused attention on GPU
  variant = "softmax" if name == REFERENCE else name
  cfg = attention.make_config(variant, attention.length_options(variant, length))
  flops = attention_flops(variant, cfg, spec.batch, length, spec.heads, spec.head_dim, spec.causal)
  itemsize = jnp.dtype(spec.dtype).itemsize
  tensor = spec.batch * length * spec.heads * spec.head_dim * itemsize
  row.update(
    flops=flops,
    flops_fwd_bwd=3 * flops,
    tflops_s=flops / row["fwd_s"] / 1e12,
    tflops_s_fwd_bwd=3 * flops / row["fwd_bwd_s"] / 1e12,
    gb_s=4 * tensor / row["fwd_s"] / 1e9,
    gb_s_fwd_bwd=(4 + 8) * tensor / row["fwd_bwd_s"] / 1e9,
  )
  return row


def custom_calls(hlo_text: str) -> list[str]:
  """Sorted custom-call targets of a compiled program (cuDNN flash attention shows as `__cudnn$fmha...`)."""
  return sorted(set(re.findall(r'custom_call_target="([^"]+)"', hlo_text)))


def hbm_peak(device_kind: str) -> float | None:
  return next((peak for key, peak in HBM_PEAKS.items() if key.lower() in device_kind.lower()), None)


def summarize(rows: Sequence[dict[str, Any]], variants: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Per variant: slopes of time and memory vs length, and the crossover length against softmax."""
  by = {(r["variant"], r["length"]): r for r in rows if "skipped" not in r}
  out = {}
  for name in [*variants, REFERENCE]:
    pts = sorted((n, r) for (v, n), r in by.items() if v == name)
    ns = [n for n, _ in pts]
    entry: dict[str, Any] = {}
    for key, field in (
      ("time_slope", "fwd_bwd_s"),
      ("temp_memory_slope", "temp_bytes"),
      ("memory_slope", "memory_bytes"),
    ):
      ys = [r[field] for _, r in pts]
      entry[key] = loglog_slope(ns, ys)
      entry[f"{key}_top"] = loglog_slope(ns[-2:], ys[-2:]) if len(ns) >= 2 else None
    soft = {n: r["fwd_bwd_s"] for (v, n), r in by.items() if v == "softmax"}
    common = [n for n in ns if n in soft]
    if name not in ("softmax", REFERENCE) and common:
      faster = [by[name, n]["fwd_bwd_s"] < soft[n] for n in common]
      entry["crossover_vs_softmax"] = next((n for i, n in enumerate(common) if all(faster[i:])), None)
    out[name] = entry
  return out


def run(spec: Spec, log: Callable[[str], Any] = print) -> dict[str, Any]:
  rows = []
  for name in [REFERENCE, *spec.variants]:
    for length in spec.lengths:
      row = measure(name, spec, length)
      if "skipped" not in row and name != REFERENCE:
        ref = next(r for r in rows if r["variant"] == REFERENCE and r["length"] == length)
        if "skipped" not in ref:
          row["ratio_fwd"] = row["fwd_s"] / ref["fwd_s"]
          row["ratio_fwd_bwd"] = row["fwd_bwd_s"] / ref["fwd_bwd_s"]
      rows.append(row)
      log(
        f"{name:>14} L={length:>6}: "
        + (
          row["skipped"]
          if "skipped" in row
          else f"fwd {row['fwd_s'] * 1e3:9.2f} ms  fwd+bwd {row['fwd_bwd_s'] * 1e3:9.2f} ms  "
          f"mem {row['memory_bytes'] / 2**20:9.1f} MiB"
        )
      )
  device = jax.devices()[0]
  peak = hbm_peak(device.device_kind)
  for row in rows:
    if peak and "gb_s_fwd_bwd" in row:
      row["hbm_fraction_fwd_bwd"] = row["gb_s_fwd_bwd"] * 1e9 / peak
  return {
    "schema_version": SCHEMA_VERSION,
    "kind": "attention",
    "spec": dataclasses.asdict(spec),
    "device": device.device_kind,
    "platform": device.platform,
    "num_devices": jax.device_count(),
    "jax_version": jax.__version__,
    "rows": rows,
    "summary": summarize(rows, spec.variants),
  }


def device_dir(device_kind: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-") or "unknown"


def _fmt(x: Any, scale: float = 1.0, digits: int = 2) -> str:
  return "—" if x is None else f"{x * scale:,.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
  s = result["spec"]
  lines = [
    f"## Attention benchmark on {result['device']} ({result['platform']})",
    "",
    f"batch {s['batch']}, heads {s['heads']}, head_dim {s['head_dim']}, {s['dtype']}, "
    f"{'causal' if s['causal'] else 'bidirectional'}; median of {s['repeats']} calls after {s['warmup']} "
    f"warm-up; jax {result['jax_version']}. Ratios are against `jax.nn.dot_product_attention` "
    '("reference") measured in the same process.',
    "",
    "| variant | length | fwd (ms) | fwd+bwd (ms) | ratio fwd+bwd | compiled memory (MiB) | temp (MiB) "
    "| GFLOP fwd | TFLOP/s fwd+bwd | GB/s fwd+bwd |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["rows"]:
    if "skipped" in r:
      lines.append(
        f"| {r['variant']} | {r['length']} | skipped: {r['skipped']} | | | "
        f"{_fmt(r['memory_bytes'], 2**-20, 1)} | {_fmt(r['temp_bytes'], 2**-20, 1)} | | | |"
      )
      continue
    lines.append(
      f"| {r['variant']} | {r['length']} | {_fmt(r['fwd_s'], 1e3)} | {_fmt(r['fwd_bwd_s'], 1e3)} | "
      f"{_fmt(r.get('ratio_fwd_bwd'))} | {_fmt(r['memory_bytes'], 2**-20, 1)} | "
      f"{_fmt(r['temp_bytes'], 2**-20, 1)} | {_fmt(r['flops'], 1e-9, 3)} | "
      f"{_fmt(r['tflops_s_fwd_bwd'], 1, 4)} | {_fmt(r['gb_s_fwd_bwd'], 1, 2)} |"
    )
  lines += [
    "",
    "| variant | time slope | time slope (last two) | temp memory slope | temp slope (last two) "
    "| crossover vs softmax |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for name, e in result["summary"].items():
    lines.append(
      f"| {name} | {_fmt(e['time_slope'])} | {_fmt(e['time_slope_top'])} | "
      f"{_fmt(e['temp_memory_slope'])} | {_fmt(e['temp_memory_slope_top'])} | "
      f"{e.get('crossover_vs_softmax') or '—'} |"
    )
  return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(12, 4.8), layout="constrained")
  FigureCanvasAgg(fig)
  ax_t, ax_m = fig.subplots(1, 2)
  names = [REFERENCE, *result["spec"]["variants"]]
  palette = [f"C{i}" for i in range(10)]  # 10 colours x 2 markers: no two of 20 lines look alike
  for i, name in enumerate(names):
    pts = sorted((r["length"], r) for r in result["rows"] if r["variant"] == name and "skipped" not in r)
    if not pts:
      continue
    ns = [n for n, _ in pts]
    style = dict(
      marker="os"[i // len(palette) % 2],
      markersize=3.5,
      linewidth=1.4,
      color=palette[i % len(palette)],
      linestyle="--" if name == REFERENCE else ("-" if i < len(palette) else ":"),
    )
    (line,) = ax_t.plot(ns, [r["fwd_bwd_s"] * 1e3 for _, r in pts], label=name, **style)
    ax_m.plot(ns, [r["temp_bytes"] / 2**20 for _, r in pts], **style)
    cross = result["summary"].get(name, {}).get("crossover_vs_softmax")
    if cross is not None:
      y = next(r["fwd_bwd_s"] * 1e3 for n, r in pts if n == cross)
      ax_t.plot([cross], [y], marker="*", markersize=12, color=line.get_color(), linestyle="")
  for ax, label in ((ax_t, "fwd+bwd time (ms)"), (ax_m, "compiled temp memory of fwd+bwd (MiB)")):
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3, which="both")
  ax_t.set_title("time (star: crossover, faster than softmax from here on)")
  ax_m.set_title("memory")
  fig.legend(loc="outside right upper", fontsize="small")
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  return path


def write(result: dict[str, Any], out_dir: Path, name: str = "attention") -> dict[str, Path]:
  """`<out_dir>/<device>/<name>.json|md|png`."""
  return write_files(Path(out_dir) / device_dir(result["device"]), name, result, markdown(result), plot)
