"""`research plan`: per-device memory of the sharded train step on a target, and whether it fits.

    research plan --config experiments/mlm.py:size=base --target h100x8 --target v5e-256 --mesh fsdp=-1 \
      --seq-len 4096,16384,65536 --variants softmax,linear --per-device-batch 1

One row per (target, mesh) x sequence length x attention variant, with these per-device bytes:

  params, optimizer   EXACT: the shard shapes of the abstract train state (`jax.eval_shape` of the state that
                      research/train/state.py creates, placed by LOGICAL_RULES on the mesh); no compile needed
  batch + other state EXACT likewise: the batch shard, the step counter, the rng and non-trained collections
  activations + temp  the compiled train step's `memory_analysis()` temporaries: saved activations, gradients,
                      optimizer intermediates, workspace (not separable from outside XLA)
  total               arguments + temporaries + outputs not aliased to the donated state (`with_budget`)

How the step is compiled (the same jit, shardings and donation as research/train/loop.py `compile_train_step`,
on abstract inputs; nothing is allocated or run):
  TPU targets   ahead of time for the target's topology (`jax.experimental.topologies`; needs libtpu, i.e. the
                `jax[tpu]` wheels of the installed jax): the XLA TPU compiler's own numbers, whose arguments include
                the tile padding of small arrays. A program that does not fit fails to compile with
                RESOURCE_EXHAUSTED; the row then carries the temporaries its message states.
  GPU targets   ESTIMATE: compiled by XLA:CPU on a mesh of fake CPU devices of the target's size (or, when the
                process has too few, one shard's worth: the per-device batch on one device, parameters unsharded).
                Softmax compiles to the XLA path, which materialises the BxHxLxL scores; cuDNN's fused attention on
                an H100 does not, so softmax GPU rows are upper bounds.
  TPU targets without libtpu get the GPU method, labelled so, with the reason in the row's notes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, AxisType, Mesh

from research.config import load_config
from research.report import write_files
from research.train.loop import encoder_config, validate
from research.train.objectives import build_model, model_inputs
from research.train.optimizer import make_optimizer
from research.train.sharding import LOGICAL_RULES, MESH_AXES, batch_sharding, config_mesh_sizes, make_mesh
from research.train.state import TrainState, count_params
from research.train.step import train_step

SCHEMA_VERSION = 1
GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Target:
  name: str
  platform: str  # cpu | gpu | tpu
  devices: int  # 0: the attached CPU devices
  hbm_bytes: int  # per-device budget; 0: host RAM / devices
  chip: str
  topology: tuple = ()  # TPU: keyword arguments of jax.experimental.topologies.get_topology_desc


def _tpu(
  name: str,
  topology: str,
  devices: int,
  hbm_gib: float,
  chip: str,
  megacore: bool = False,
  wrap: tuple = (False, False, False),
) -> Target:
  kwargs = (
    ("topology_name", topology),
    ("chip_config_name", "megacore" if megacore else "default"),
    ("chips_per_host_bounds", (2, 2, 1)),
    ("num_slices", 1),
    ("wrap", wrap),
  )
  return Target(name, "tpu", devices, int(hbm_gib * GiB), chip, kwargs)


TARGETS = {
  t.name: t
  for t in (
    Target("cpu", "cpu", 0, 0, "this host's CPU devices (budget: host RAM / device count)"),
    Target("h100", "gpu", 1, 80 * GiB, "NVIDIA H100 80GB"),
    Target("h100x8", "gpu", 8, 80 * GiB, "8x NVIDIA H100 80GB (one HGX node)"),
    Target("a100x8", "gpu", 8, 80 * GiB, "8x NVIDIA A100 80GB"),
    _tpu("v4-8", "v4:2x2x1", 4, 32, "TPU v4, 4 chips (megacore)", megacore=True),
    _tpu("v5p-8", "v5:2x2x1", 4, 95, "TPU v5p, 4 chips (megacore)", megacore=True),
    _tpu("v5e-16", "v5e:4x4", 16, 15.75, "TPU v5e 4x4"),
    _tpu("v5e-256", "v5e:16x16", 256, 15.75, "TPU v5e 16x16 pod", wrap=(True, True, False)),
    _tpu("v6e-256", "v6e:16x16", 256, 31.25, "TPU v6e 16x16 pod", wrap=(True, True, False)),
  )
}
BUDGET_NOTE = (
  "HBM: usable bytes per device. TPU: what the XLA TPU compiler reports as available (v5e 15.75 of 16 "
  "GiB). GPU: the nominal 80 GiB; JAX preallocates 75% of it (60 GiB) unless "
  "XLA_PYTHON_CLIENT_MEM_FRACTION is raised, and the CUDA context takes ~0.5 GiB."
)
ESTIMATE_NOTE = (
  "estimate (CPU compile): XLA:CPU's buffer assignment, not the target compiler's. Softmax compiles to "
  "the XLA path, which materialises the BxHxLxL scores as it does on GPU without cuDNN; cuDNN's fused "
  "attention (bf16, no dense mask) does not, so softmax GPU rows are upper bounds."
)
OOM_NOTE = (
  "(compiler, OOM): the XLA TPU compiler refused the program (RESOURCE_EXHAUSTED); the figure is the "
  "requirement for HLO temporaries that its message states (the full message is in the JSON `error`)."
)
ONE_SHARD_NOTE = (
  "estimate (CPU compile of one shard): the process had too few CPU devices, so the per-device batch "
  "was compiled on one device with unsharded parameters and no tensor split; its temporaries hold "
  "full-size gradients, an over-estimate when fsdp or tensor > 1."
)


def get_target(name: str) -> Target:
  if name not in TARGETS:
    raise ValueError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
  return TARGETS[name]


def parse_mesh(text: str, num_devices: int, target: str = "") -> dict[str, int]:
  """`data=2,fsdp=4,tensor=1` -> sizes of MESH_AXES (missing axes 1; one -1 takes the remaining devices)."""
  where = f" for target {target!r}" if target else ""
  usage = f"expected axis=size items over {', '.join(MESH_AXES)} (one size may be -1), e.g. data=2,fsdp=4,tensor=1"
  sizes: dict[str, int] = {}
  for item in filter(None, (s.strip() for s in (text or "").split(","))):
    axis, sep, raw = (s.strip() for s in item.partition("="))
    if not sep:
      raise ValueError(f"--mesh {text!r}: {item!r} is not axis=size; {usage}")
    if axis not in MESH_AXES:
      raise ValueError(f"--mesh {text!r}: unknown axis {axis!r}; {usage}")
    if axis in sizes:
      raise ValueError(f"--mesh {text!r}: axis {axis!r} given twice; {usage}")
    try:
      sizes[axis] = int(raw)
    except ValueError:
      raise ValueError(f"--mesh {text!r}: size {raw!r} of {axis!r} is not an integer; {usage}") from None
    if sizes[axis] == 0 or sizes[axis] < -1:
      raise ValueError(f"--mesh {text!r}: size {sizes[axis]} of {axis!r}; {usage}")
  if not sizes:
    raise ValueError(f"--mesh {text!r} is empty; {usage}")
  if list(sizes.values()).count(-1) > 1:
    raise ValueError(f"--mesh {text!r}: more than one -1; {usage}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if -1 in sizes.values():
    if num_devices % known:
      raise ValueError(
        f"--mesh {text!r}: the other axes use {known} devices, which does not divide the {num_devices} devices{where}"
      )
    sizes = {a: num_devices // known if s == -1 else s for a, s in sizes.items()}
  shape = {a: sizes.get(a, 1) for a in MESH_AXES}
  if math.prod(shape.values()) != num_devices:
    raise ValueError(
      f"--mesh {text!r} uses {math.prod(shape.values())} devices but {num_devices} are expected"
      f"{where}; sizes must multiply to {num_devices} (use -1 for the rest)"
    )
  return shape


def mesh_text(shape: dict[str, int]) -> str:
  return ",".join(f"{a}={s}" for a, s in shape.items())


# --- the model without its data ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TaskShape:
  kind: str
  vocab_size: int
  num_classes: int
  note: str = ""


def task_shape(config) -> TaskShape:
  """Kind, vocabulary and classes of the config's task, from its options alone (no data is built)."""
  from research.data.tasks import listops, pathfinder
  from research.data.tokenizer import ByteTokenizer

  task, d = config.task, config.data
  if task == "mlm" and not d.self_task:
    return TaskShape("tokens", d.vocab_size, d.vocab_size, f"sentencepiece vocabulary of {d.vocab_size}")
  if task == "mqar":
    return TaskShape("tokens", d.vocab_size, d.vocab_size)
  if task == "listops":
    return TaskShape("classify", len(listops.VOCAB), listops.NUM_CLASSES)
  if task == "text_cls":  # classes are the corpus's top directories: 9 with the default min_docs
    return TaskShape("classify", ByteTokenizer.vocab_size, 9, "9 classes assumed (the linux-doc dataset card)")
  if task == "retrieval":
    return TaskShape("pair", ByteTokenizer.vocab_size, 2)
  if task == "pathfinder":
    return TaskShape("classify", pathfinder.VOCAB_SIZE, 2)
  raise ValueError(
    f"research plan cannot size task {task!r} without building its data; supported: mlm (corpora), "
    "mqar, listops, text_cls, retrieval, pathfinder"
  )


def batch_spec(kind: str, batch: int, seq_len: int) -> dict[str, jax.ShapeDtypeStruct]:
  """The abstract model batch of research/data/pipeline.py `model_batch` for one task kind."""
  i32, f32 = jnp.int32, jnp.float32
  row = lambda dtype: jax.ShapeDtypeStruct((batch, seq_len), dtype)  # noqa: E731
  ex = lambda dtype: jax.ShapeDtypeStruct((batch,), dtype)  # noqa: E731
  out = {k: row(i32) for k in ("tokens", "segment_ids", "positions")}
  if kind in ("pair", "match"):
    out.update({f"{k}_b": row(i32) for k in ("tokens", "segment_ids", "positions")})
  if kind == "tokens":
    out.update(targets=row(i32), weights=row(f32))
  else:
    out.update({"weights": ex(f32), **({"targets": ex(f32 if kind == "regress" else i32)} if kind != "match" else {})})
  return out


def abstract_state(model: nn.Module, tx, kind: str, seq_len: int):
  """The boxed (logically partitioned) abstract TrainState that research/train/state.py `create_train_state` builds."""

  def init(rng, batch):
    init_rng, state_rng = jax.random.split(rng)
    variables = dict(model.init(init_rng, *model_inputs(kind, batch)))
    params = variables.pop("params")
    variables.pop("intermediates", None)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), state_rng, variables)

  return jax.eval_shape(init, jax.ShapeDtypeStruct((2,), jnp.uint32), batch_spec(kind, 1, seq_len))


def shard_bytes(abstract, shardings) -> int:
  """Exact bytes of one device's shard of every leaf (each dimension divided by its mesh axes' sizes)."""
  total = 0
  for (path, leaf), sh in zip(
    jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree.leaves(shardings), strict=True
  ):
    shape = list(leaf.shape)
    for i, axes in enumerate(sh.spec):
      n = math.prod(sh.mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
      if shape[i] % n:
        raise ValueError(
          f"{jax.tree_util.keystr(path)} has dimension {i} of size {shape[i]}, not divisible by the "
          f"{n} devices of mesh axes {axes}; choose another --mesh"
        )
      shape[i] //= n
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


# --- one row -----------------------------------------------------------------------------------------------------
def _set_attention(config, variant: str, platform: str) -> list[str]:
  config.model.attention = variant
  if platform != "cpu" and "softmax" in variant.split("+") and "implementation" not in config.model.attention_cfg:
    with config.model.attention_cfg.unlocked():
      config.model.attention_cfg.implementation = "xla"  # what None picks on TPU (and GPU without cuDNN)
    return ["softmax implementation 'xla' (jax.nn.dot_product_attention; None would pick the CPU-only path here)"]
  return []


def _devices(target: Target) -> tuple[Any, str, str]:
  """(devices to compile for, or None for one shard on one CPU device; the method; why TPU AOT was not used)."""
  why = ""
  if target.platform == "tpu":
    from jax.experimental import topologies

    try:
      devices = topologies.get_topology_desc(platform="tpu", **dict(target.topology)).devices
      return devices, "TPU AOT compile", ""
    except Exception as e:  # noqa: BLE001 -- no libtpu / unknown topology: say why and estimate on CPU
      why = f"{target.name}: TPU AOT unavailable ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
  cpus = jax.devices("cpu")
  n = target.devices or len(cpus)
  if target.platform == "cpu":
    return cpus[:n], "CPU compile", why
  if len(cpus) >= n:
    return cpus[:n], f"estimate (CPU compile, {n} fake devices)", why
  return None, "estimate (CPU compile of one shard)", why


def _budget(target: Target, n: int) -> int:
  if target.hbm_bytes:
    return target.hbm_bytes
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // max(n, 1)


def _mesh(devices, shape: dict[str, int], platform: str) -> Mesh:
  if platform == "tpu":
    from jax.experimental import mesh_utils

    try:  # devices laid out along the physical torus
      arr = mesh_utils.create_device_mesh(tuple(shape.values()), list(devices))
    except (ValueError, NotImplementedError, AssertionError):
      arr = np.asarray(devices).reshape(tuple(shape.values()))
    return Mesh(arr, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  return make_mesh(tuple(shape.values()), devices)


_OOM = re.compile(r"\(([\d.]+)([KMGT]?)\)")


def _oom_figures(message: str) -> tuple[int | None, int | None]:
  """(required, available) bytes from the XLA TPU compiler's RESOURCE_EXHAUSTED message, where it states them."""
  figures = [int(float(v) * 1024 ** " KMGT".index(u or " ")) for v, u in _OOM.findall(message)]
  return (figures[0], figures[1]) if len(figures) >= 2 else (None, None)


@dataclasses.dataclass
class _Setup:
  config: Any
  kind: str
  model: nn.Module
  tx: Any
  boxed: Any  # the logically partitioned abstract TrainState
  per_device_batch: int
  sizes: dict[str, int]  # exact per-device bytes
  notes: list[str]


def _setup(
  config,
  shape: dict[str, int],
  seq_len: int,
  variant: str | None,
  platform: str = "cpu",
  per_device_batch: int | None = None,
) -> _Setup:
  config = config.copy_and_resolve_references()
  notes = _set_attention(config, variant or config.model.attention, platform)
  validate(config)
  shards, t = shape["data"] * shape["fsdp"], config.train
  if per_device_batch is not None:
    if per_device_batch < 1:
      raise ValueError(f"--per-device-batch {per_device_batch}; expected >= 1")
    t.batch_size = per_device_batch * shards
  if t.batch_size % shards or (t.batch_size // shards) % t.grad_accum:
    raise ValueError(
      f"train.batch_size={t.batch_size} must split over the data*fsdp={shards} devices and then into "
      f"train.grad_accum={t.grad_accum} micro-batches; set --per-device-batch or train.batch_size"
    )
  ts = task_shape(config)
  model = build_model(ts.kind, encoder_config(config, seq_len, ts.vocab_size), ts.num_classes, config.model.pool)
  tx = make_optimizer(t)
  boxed = abstract_state(model, tx, ts.kind, seq_len)
  state = nn.meta.unbox(boxed)
  mesh = AbstractMesh(tuple(shape.values()), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))
  sh = nn.meta.unbox(nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, LOGICAL_RULES))
  batch = t.batch_size // shards
  sizes = {
    "params": shard_bytes(state.params, sh.params),
    "optimizer": shard_bytes(state.opt_state, sh.opt_state),
    "other_state": shard_bytes((state.step, state.rng, state.extra), (sh.step, sh.rng, sh.extra)),
    "batch": sum(
      math.prod(s.shape) * jnp.dtype(s.dtype).itemsize for s in batch_spec(ts.kind, batch, seq_len).values()
    ),
  }
  notes += [ts.note] if ts.note else []
  return _Setup(config, ts.kind, model, tx, boxed, batch, sizes, notes)


def state_bytes(
  config, shape: dict[str, int], seq_len: int, variant: str | None = None, per_device_batch: int | None = None
) -> dict[str, int]:
  """EXACT per-device bytes of params, optimizer state, other state (step, rng, extra) and the batch; no compile."""
  return _setup(config, shape, seq_len, variant, per_device_batch=per_device_batch).sizes


def plan_row(
  config,
  target: Target,
  shape: dict[str, int],
  seq_len: int,
  variant: str | None = None,
  per_device_batch: int | None = None,
  hbm_bytes: int | None = None,
) -> dict[str, Any]:
  """Plan one (target, mesh, length, variant): exact state bytes, the compiled step's memory, fits or not."""
  s = _setup(config, shape, seq_len, variant, target.platform, per_device_batch)
  t, n = s.config.train, target.devices or len(jax.devices("cpu"))
  devices, how, why = _devices(target)
  compile_shape, batch = shape, t.batch_size
  if devices is None:  # one shard's worth on one device
    devices, compile_shape, batch = jax.devices("cpu")[:1], dict.fromkeys(MESH_AXES, 1), s.per_device_batch
  mesh = _mesh(devices, compile_shape, target.platform)
  state_sh = nn.meta.unbox(nn.logical_to_mesh_sharding(nn.get_partition_spec(s.boxed), mesh, LOGICAL_RULES))
  step_fn = functools.partial(train_step, model=s.model, tx=s.tx, grad_accum=t.grad_accum, kind=s.kind)
  p_train = jax.jit(
    step_fn, in_shardings=(state_sh, batch_sharding(mesh)), out_shardings=(state_sh, None), donate_argnums=0
  )
  state = nn.meta.unbox(s.boxed)  # outside the rules context, where unboxing would add sharding constraints
  tic = time.perf_counter()
  compiled, error = None, None
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    try:
      compiled = p_train.lower(state, batch_spec(s.kind, batch, seq_len)).compile()
    except Exception as e:  # noqa: BLE001 -- the TPU compiler refuses programs that do not fit
      if "RESOURCE_EXHAUSTED" not in str(e):
        raise
      error = str(e).splitlines()[0][:300]
  row = {
    "target": target.name,
    "chip": target.chip,
    "platform": target.platform,
    "devices": n,
    "mesh": shape,
    "compiled_mesh": compile_shape,
    "seq_len": seq_len,
    "attention": s.config.model.attention,
    "global_batch": t.batch_size,
    "per_device_batch": s.per_device_batch,
    "grad_accum": t.grad_accum,
    "params_count": count_params(state.params),
    "hbm_bytes": hbm_bytes or _budget(target, n),
    "method": how,
    "compile_s": time.perf_counter() - tic,
    "notes": s.notes + ([why] if why else []),
    "exact_bytes": s.sizes,
    "error": error,
    "compiled_bytes": None,
  }
  if compiled is not None:
    m = compiled.memory_analysis()
    row["compiled_bytes"] = {
      k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("argument", "output", "alias", "temp", "generated_code")
    }
  return with_budget(row, row["hbm_bytes"])


def with_budget(row: dict[str, Any], hbm_bytes: int) -> dict[str, Any]:
  """The row's temporaries, total and verdict against a per-device budget, from its exact and compiled bytes.

  total = arguments + temporaries + outputs not aliased to the donated state. Arguments are the compiled ones when
  the step was compiled for the real mesh (on TPU they include tile padding of small arrays), else (one-shard
  estimates; programs the TPU compiler refused, whose temporaries are the figure its message states) the exact ones.
  """
  mem, exact_args = row["compiled_bytes"], sum(row["exact_bytes"].values())
  if mem is not None:
    args = mem["argument"] if row["compiled_mesh"] == row["mesh"] else exact_args
    temp, total = mem["temp"], args + mem["temp"] + mem["output"] - mem["alias"]
  else:
    temp, available = _oom_figures(row["error"])
    total = None if temp is None else exact_args + temp
    row = {**row, "compiler_available_bytes": available}
  fits = row["error"] is None and total is not None and total <= hbm_bytes
  return {**row, "temp_bytes": temp, "total_bytes": total, "hbm_bytes": hbm_bytes, "fits": fits}


def load(config_spec: str, sets: list[str] | tuple[str, ...] = ()):
  """The config with every --set "k=v[,k=v]" appended to the spec's argument, as `research bench train` does (so the
  experiment's own presets, e.g. lra.py's task=, apply)."""
  extra = ",".join(text for text in sets if text.strip())
  return load_config(f"{config_spec}{',' if ':' in config_spec else ':'}{extra}" if extra else config_spec)


def run(
  config_spec: str,
  targets: list[str],
  meshes: list[str] | None,
  seq_lens: list[int],
  variants: list[str] | None = None,
  sets: list[str] | tuple[str, ...] = (),
  per_device_batch: int | None = None,
  hbm_gib: float | None = None,
  log=None,
) -> dict[str, Any]:
  """One row per (target, mesh) x seq_len x variant; `meshes` pairs with `targets` (or one mesh for all)."""
  config = load(config_spec, sets)
  targets = [get_target(t) for t in targets]
  meshes = list(meshes or [])
  if meshes and len(meshes) not in (1, len(targets)):
    raise ValueError(f"{len(meshes)} --mesh for {len(targets)} --target; give one mesh, or one per target in order")
  if not seq_lens or any(n < 1 for n in seq_lens):
    raise ValueError(f"--seq-len {seq_lens}; expected positive integers")
  default_mesh = mesh_text(dict(zip(MESH_AXES, config_mesh_sizes(config.mesh)[0], strict=True)))
  rows = []
  for i, target in enumerate(targets):
    n = target.devices or len(jax.devices("cpu"))
    shape = parse_mesh(meshes[min(i, len(meshes) - 1)] if meshes else default_mesh, n, target.name)
    for seq_len in seq_lens:
      for variant in variants or [config.model.attention]:
        row = plan_row(
          config, target, shape, seq_len, variant, per_device_batch, int(hbm_gib * GiB) if hbm_gib else None
        )
        rows.append(row)
        if log:
          log(
            f"{target.name} {mesh_text(shape)} L={seq_len} {variant}: total {_size(row['total_bytes'])} "
            f"({'fits' if row['fits'] else 'does not fit'}), compile {row['compile_s']:.1f}s, {row['method']}"
          )
  m = config.model
  return {
    "schema_version": SCHEMA_VERSION,
    "kind": "plan",
    "config": config_spec,
    "sets": list(sets),
    "rows": rows,
    "model": {
      "d_model": m.d_model,
      "num_heads": m.num_heads,
      "num_layers": m.num_layers,
      "mlp_dim": m.mlp_dim,
      "dtype": m.dtype,
      "remat_policy": m.remat_policy,
      "task": config.task,
    },
    "jax_version": jax.__version__,
    "libtpu_version": _libtpu_version(),
    "host_cpus": os.cpu_count(),
  }


def _libtpu_version() -> str | None:
  from importlib.metadata import PackageNotFoundError, version

  try:
    return version("libtpu")
  except PackageNotFoundError:
    return None


# --- output ------------------------------------------------------------------------------------------------------
def _size(b: int | None) -> str:
  if b is None:
    return "—"
  return f"{b / GiB:,.2f} GiB" if b >= GiB / 10 else f"{b / 2**20:,.1f} MiB"


def markdown(result: dict[str, Any]) -> str:
  m = result["model"]
  lines = [
    f"## Memory plan: `{result['config']}`" + (f" with {', '.join(result['sets'])}" if result["sets"] else ""),
    "",
    f"Task {m['task']}; {m['num_layers']} layers, d_model {m['d_model']}, {m['num_heads']} heads, MLP "
    f"{m['mlp_dim']}, {m['dtype']} compute, fp32 parameters and AdamW moments, remat {m['remat_policy']}. "
    f"Per-device bytes of one train step; jax {result['jax_version']}"
    + (f", libtpu {result['libtpu_version']}" if result["libtpu_version"] else "")
    + f"; compiled on a {result['host_cpus']}-core CPU host.",
    "",
    *([f"`{result['command']}`", ""] if result.get("command") else []),
    "| target | mesh | batch (global / device) | tokens | attention | params | optimizer | batch + other "
    "state | activations + temp | total | HBM | use | fits | method | compile (s) |",
    "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|",
  ]
  for r in result["rows"]:
    e = r["exact_bytes"]
    temp = _size(r["temp_bytes"]) + (" (compiler, OOM)" if r["error"] and r["temp_bytes"] else "")
    use = "—" if r["total_bytes"] is None else f"{100 * r['total_bytes'] / r['hbm_bytes']:,.0f}%"
    lines.append(
      f"| {r['target']} | {mesh_text(r['mesh'])} | {r['global_batch']} / {r['per_device_batch']} | "
      f"{r['seq_len']:,} | {r['attention']} | {_size(e['params'])} | {_size(e['optimizer'])} | "
      f"{_size(e['batch'] + e['other_state'])} | {temp} | {_size(r['total_bytes'])} | "
      f"{_size(r['hbm_bytes'])} | {use} | {'yes' if r['fits'] else '**no**'} | {r['method']} | "
      f"{r['compile_s']:.1f} |"
    )
  notes = sorted({n for r in result["rows"] for n in r["notes"]})
  lines += [
    "",
    "- params, optimizer, batch + other state: exact shard bytes of the abstract train state under "
    "research/train/sharding.py LOGICAL_RULES (no compile).",
    "- activations + temp: compiled `memory_analysis()` temporaries of the train step (saved activations, "
    "gradients, optimizer intermediates, workspace); total = arguments + temporaries + outputs not aliased "
    "to the donated state.",
    f"- {BUDGET_NOTE}",
  ] + [f"- {n}" for n in notes]
  if any(r["method"].startswith("estimate") for r in result["rows"]):
    lines.append(f"- {ESTIMATE_NOTE}")
  if any(r["method"].endswith("of one shard)") for r in result["rows"]):
    lines.append(f"- {ONE_SHARD_NOTE}")
  if any(r["error"] for r in result["rows"]):
    lines.append(f"- {OOM_NOTE}")
  return "\n".join(lines + [""])


def write(result: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Path]:
  return write_files(out_dir, name, result, markdown(result))


# --- command line ------------------------------------------------------------------------------------------------
def _int_list(text: str, flag: str) -> list[int]:
  try:
    return [int(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"{flag} {text!r}; expected comma-separated integers, e.g. 4096,16384") from None


def prepare_devices(target_names: list[str], cap: int = 256) -> None:
  """Before JAX starts its backends: CPU only (unless JAX_PLATFORMS says otherwise), with as many fake devices as the
  largest target compiled on CPU needs (GPU targets; TPU targets without libtpu). Once started (or above `cap`),
  targets with more devices than there are get one-shard estimates."""
  from jax._src import xla_bridge

  tpu_aot = importlib.util.find_spec("libtpu") is not None
  need = max(
    [t.devices for t in map(get_target, target_names) if t.platform == "gpu" or (t.platform == "tpu" and not tpu_aot)]
    or [0]
  )
  if xla_bridge.backends_are_initialized():
    return
  if not os.environ.get("JAX_PLATFORMS"):  # plans never run a step: no accelerator backend (TPU AOT needs none)
    jax.config.update("jax_platforms", "cpu")
  if need > 1:
    jax.config.update("jax_num_cpu_devices", min(need, cap))


def command(args) -> str:
  """The `research plan` command line that reproduces a result."""
  parts = ["research", "plan", "--config", args.config]
  for flag, values in (("--set", args.set), ("--target", args.target), ("--mesh", args.mesh)):
    parts += [x for v in values or () for x in (flag, v)]
  parts += ["--seq-len", args.seq_len]
  for flag, value in (
    ("--variants", args.variants),
    ("--per-device-batch", args.per_device_batch),
    ("--hbm-gib", args.hbm_gib),
    ("--name", args.name),
  ):
    parts += [flag, str(value)] if value is not None else []
  return shlex.join(parts)


def main(args) -> dict[str, Any]:
  targets = args.target or ["cpu"]
  prepare_devices(targets)
  result = run(
    args.config,
    targets,
    args.mesh,
    _int_list(args.seq_len, "--seq-len"),
    [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None,
    args.set or (),
    args.per_device_batch,
    args.hbm_gib,
    log=lambda msg: print(msg, flush=True),
  )
  result["command"] = command(args)
  print(markdown(result))
  name = args.name or f"plan_{Path(args.config.partition(':')[0]).stem}"
  print("wrote " + ", ".join(str(p) for p in write(result, Path(args.out), name).values()))
  return result


def add_parser(subparsers) -> None:
  p = subparsers.add_parser(
    "plan",
    help="per-device parameter, optimizer and activation memory of the train step "
    "on a target (TPU: AOT compile; GPU: CPU-compile estimate), and whether it fits",
  )
  p.add_argument("--config", required=True, help="experiments/<name>.py[:key=value,...]")
  p.add_argument("--set", action="append", metavar="KEY=VALUE[,KEY=VALUE]", help="overrides on top of --config")
  p.add_argument("--target", action="append", help=f"repeatable; one of {', '.join(TARGETS)} (default cpu)")
  p.add_argument(
    "--mesh",
    action="append",
    help="e.g. data=2,fsdp=4,tensor=1 (-1: the rest); one for every "
    "target or one per --target in order (default: the config's mesh.shape)",
  )
  p.add_argument("--seq-len", required=True, help="tokens per sequence, comma-separated, e.g. 4096,16384,65536")
  p.add_argument("--variants", help="attention variants, comma-separated (default: the config's)")
  p.add_argument(
    "--per-device-batch",
    type=int,
    help="sequences per data*fsdp shard (default: the config's train.batch_size split over the mesh)",
  )
  p.add_argument("--hbm-gib", type=float, help="override the per-device memory budget of every target")
  p.add_argument("--out", default="results/plan")
  p.add_argument("--name", help="output file stem (default: plan_<config>)")
  p.set_defaults(func=main)
