"""`research bench train --config ...`: encoder train-step time, tokens/s, compile time, compiled memory and MFU.

The step is the one `research train` runs (research/train/loop.py `compile_train_step`: sharded, state donated),
on real batches of the config's task. Reported:

  compile_s          lowering + XLA compilation of the train step
  step_s             median wall time of `steps` steps after `warmup` (each step blocked on)
  tokens_per_s       real (non-padding) tokens of the timed batches / their total time
  model_flops        analytic FLOPs of one step = 3 × forward (forward + backward), forward = per layer the
                     q/k/v/o projections (8·E² per token), the MLP (4·E·M per token, 6·E·M for geglu) and the
                     attention (research/bench/flops.py) + the output head (MLM: 2·E·V per token); pair and
                     match tasks run the encoder on both inputs. Embedding lookups, norms, the optimizer and
                     the short convolution are not counted (< 1% at these widths).
  mfu                model_flops / step_s / peak FLOP/s of the device (PEAKS, dense bf16; the config's dtype
                     is noted beside it). On CPU the peak is MEASURED: the best of a few 2048² fp32 matmuls.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research import attention
from research.bench.attention import device_dir
from research.bench.flops import attention_flops
from research.data.pipeline import build_task, train_dataset
from research.report import write_files
from research.train.loop import compile_train_step, encoder_config, validate
from research.train.objectives import build_model
from research.train.optimizer import make_optimizer
from research.train.sharding import LOGICAL_RULES, batch_sharding, mesh_from_config
from research.train.state import count_params, create_train_state

PEAKS = {  # dense bf16 FLOP/s per chip (vendor figures), matched against jax.Device.device_kind
  "H100": 989e12,
  "H200": 989e12,
  "A100": 312e12,
  "TPU v4": 275e12,
  "TPU v5 lite": 197e12,
  "TPU v5e": 197e12,
}
SCHEMA_VERSION = 1


def peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
  """(peak FLOP/s, where it comes from) for one device: the PEAKS table, or a measured matmul probe on CPU."""
  device = device or jax.devices()[0]
  for key, peak in PEAKS.items():
    if key.lower() in device.device_kind.lower():
      return peak, f"vendor peak for {key} (dense bf16)"
  if device.platform != "cpu":
    raise ValueError(f"no peak FLOP/s known for {device.device_kind!r}; add it to research.bench.train.PEAKS")
  return matmul_probe(), "measured: best of 5 jitted 2048x2048 fp32 matmuls on this CPU"


def matmul_probe(n: int = 2048, repeats: int = 5) -> float:
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best = float("inf")
  for _ in range(repeats):
    tic = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - tic)
  return 2 * n**3 / best


def model_flops(config, kind: str, batch: int, length: int, vocab_size: int) -> float:
  """Analytic FLOPs of one train step (see the module docstring)."""
  m = config.model
  e, mlp, h = m.d_model, m.mlp_dim, m.num_heads
  tokens = batch * length
  per_layer = tokens * (8 * e * e + (6 if m.mlp == "geglu" else 4) * e * mlp)
  layers = m.attention.split("+")
  layers = layers * m.num_layers if len(layers) == 1 else layers
  attn = sum(
    attention_flops(name, attention.make_config(name, m.attention_cfg.to_dict()), batch, length, h, e // h)
    for name in layers
  )
  forward = m.num_layers * per_layer + attn
  if kind == "tokens":
    forward += 2 * tokens * e * vocab_size
  if kind in ("pair", "match"):
    forward *= 2
  return 3.0 * forward


@dataclasses.dataclass(frozen=True)
class Spec:
  steps: int = 10
  warmup: int = 2

  def __post_init__(self):
    if self.steps < 1 or self.warmup < 0:
      raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={self.steps}, warmup={self.warmup}")


def run(config, spec: Spec = Spec(), config_spec: str = "") -> dict[str, Any]:
  validate(config)
  t = config.train
  task = build_task(config.task, config.data.to_dict())
  enc_cfg = encoder_config(config, task.seq_len, task.vocab_size)
  mesh = mesh_from_config(config.mesh)
  model = build_model(task.kind, enc_cfg, task.num_classes, config.model.pool)
  tx = make_optimizer(t)
  it = iter(train_dataset(task, t.batch_size, seed=config.seed).to_iter_dataset())
  batches = [next(it) for _ in range(spec.warmup + spec.steps)]
  bsh = batch_sharding(mesh)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, state_sh = create_train_state(model, tx, config.seed, batches[0], mesh, task.kind)
    tic = time.perf_counter()
    step, compiled_bytes = compile_train_step(model, tx, state, state_sh, bsh, batches[0], t, task.kind)
    compile_s = time.perf_counter() - tic
    on_device = [jax.device_put(b, bsh) for b in batches]
    times = []
    for i, batch in enumerate(on_device):
      tic = time.perf_counter()
      state, metrics = step(state, batch)
      jax.block_until_ready((state, metrics))
      if i >= spec.warmup:
        times.append(time.perf_counter() - tic)
  real_tokens = sum(int(b["segment_ids"].sum()) for b in batches[spec.warmup :])
  if task.kind in ("pair", "match"):
    real_tokens += sum(int(b["segment_ids_b"].sum()) for b in batches[spec.warmup :])
  flops = model_flops(config, task.kind, t.batch_size, task.seq_len, enc_cfg.padded_vocab)
  step_s = statistics.median(times)
  peak, peak_source = peak_flops()
  device = jax.devices()[0]
  return {
    "schema_version": SCHEMA_VERSION,
    "kind": "train",
    "config": config_spec,
    "task": config.task,
    "attention": config.model.attention,
    "dtype": config.model.dtype,
    "batch_size": t.batch_size,
    "seq_len": task.seq_len,
    "params": count_params(state.params),
    "compile_s": compile_s,
    "step_s": step_s,
    "step_times_s": times,
    "tokens_per_s": real_tokens / sum(times),
    "compiled_memory_bytes": compiled_bytes,
    "model_flops": flops,
    "achieved_tflops_s": flops / step_s / 1e12,
    "peak_flops": peak,
    "peak_source": peak_source,
    "mfu": flops / step_s / peak,
    "device": device.device_kind,
    "platform": device.platform,
    "num_devices": jax.device_count(),
    "jax_version": jax.__version__,
    "final_loss": float(metrics["loss"]),
  }


def run_grid(config_spec: str, sets: list[str] | tuple[str, ...] = (), spec: Spec = Spec()) -> dict[str, Any]:
  """One row per `--set` string (each "k=v[,k=v]" applied on top of config_spec; none: the config as is)."""
  from research.config import load_config

  rows = []
  for text in sets or ("",):
    full = f"{config_spec}{',' if ':' in config_spec else ':'}{text}" if text else config_spec
    rows.append({**run(load_config(full), spec, full), "setting": text})
  return {"schema_version": SCHEMA_VERSION, "kind": "train", "config": config_spec, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
  r0 = result["rows"][0]
  lines = [
    f"## Train-step benchmark on {r0['device']} ({r0['num_devices']} device(s))",
    "",
    f"`{result['config']}`: task {r0['task']}, batch {r0['batch_size']} × {r0['seq_len']} tokens, "
    f"jax {r0['jax_version']}; median of the timed steps.",
    "",
    "| setting | attention | dtype | params | compile (s) | step (ms) | tokens/s | compiled memory (MiB) "
    "| model TFLOP/step | achieved TFLOP/s | MFU |",
    "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["rows"]:
    lines.append(
      f"| {r['setting'] or '(config)'} | {r['attention']} | {r['dtype']} | {r['params']:,} | "
      f"{r['compile_s']:.2f} | {r['step_s'] * 1e3:.1f} | {r['tokens_per_s']:,.0f} | "
      f"{r['compiled_memory_bytes'] / 2**20:.1f} | {r['model_flops'] / 1e12:.4f} | "
      f"{r['achieved_tflops_s']:.4f} | {100 * r['mfu']:.1f}% |"
    )
  lines += [
    "",
    f"Peak {r0['peak_flops'] / 1e12:.3f} TFLOP/s: {r0['peak_source']}. Model FLOPs are analytic "
    "(research/bench/train.py).",
    "",
  ]
  return "\n".join(lines)


def write(result: dict[str, Any], out_dir: Path, name: str) -> dict[str, Path]:
  return write_files(Path(out_dir) / device_dir(result["rows"][0]["device"]), name, result, markdown(result))
