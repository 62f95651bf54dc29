"""train(config, workdir): sharded jit step, exact eval, metrics, progress, checkpoints, exact resume."""

from __future__ import annotations

import functools
import json
import os
import signal
import time
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np
from tqdm import tqdm

from research.config import writable_dir
from research.data import tasks
from research.data.pipeline import Task, build_task, eval_batches, train_dataset
from research.embed import write_card
from research.models.encoder import EncoderConfig
from research.train import distributed, init_from
from research.train.checkpoint import Checkpointer, abstract_like
from research.train.metrics import MetricWriter, read_metrics, truncate_metrics
from research.train.objectives import build_model, finalize
from research.train.optimizer import SCHEDULES, make_optimizer
from research.train.provenance import write_provenance
from research.train.sharding import LOGICAL_RULES, batch_sharding, mesh_from_config
from research.train.state import count_params, create_train_state
from research.train.step import eval_step, train_step


class TrainingDiverged(RuntimeError):
  """The loss became NaN/Inf; the message names the step."""


def encoder_config(config, seq_len: int, vocab_size: int) -> EncoderConfig:
  m = config.model
  max_len = m.max_len or seq_len
  if seq_len > max_len:
    raise ValueError(
      f"data sequences have {seq_len} tokens but model.max_len={max_len}; raise model.max_len or lower data.max_length"
    )
  return EncoderConfig(
    vocab_size=vocab_size,
    max_len=max_len,
    d_model=m.d_model,
    num_heads=m.num_heads,
    num_layers=m.num_layers,
    mlp_dim=m.mlp_dim,
    mlp=m.mlp,
    dropout=m.dropout,
    attention=m.attention,
    attention_cfg=m.attention_cfg.to_dict(),
    positions=m.positions,
    remat_policy=m.remat_policy,
    scan_unroll=m.scan_unroll,
    dtype=m.dtype,
    conv_kernel=m.conv_kernel,
    norm=m.get("norm", "pre"),
    norm_eps=m.get("norm_eps", 1e-6),
    type_vocab_size=m.get("type_vocab_size", 0),
    seq_softmax=m.get("seq_softmax", "ring"),
  )


def validate(config) -> None:
  """Every check that can run before data generation or jit."""
  t = config.train
  for key in ("batch_size", "eval_batch_size", "num_steps", "eval_every", "log_every", "grad_accum", "keep_last"):
    if t[key] <= 0:
      raise ValueError(f"train.{key} must be positive, got {t[key]}")
  if not t.learning_rate > 0:
    raise ValueError(f"train.learning_rate must be > 0, got {t.learning_rate}")
  if t.batch_size % t.grad_accum:
    raise ValueError(f"train.batch_size={t.batch_size} is not divisible by train.grad_accum={t.grad_accum}")
  if t.schedule not in SCHEDULES:
    raise ValueError(f"train.schedule={t.schedule!r}; expected one of {', '.join(SCHEDULES)}")
  if config.model.pool not in ("cls", "mean"):
    raise ValueError(f"model.pool={config.model.pool!r}; expected cls or mean")
  if t.best_mode not in ("max", "min"):
    raise ValueError(f"train.best_mode={t.best_mode!r}; expected max or min")
  tasks.make_config(config.task, config.data.to_dict())  # unknown task, unknown or bad data.* options
  if t.init_from:
    init_from.checkpoint_dir(init_from.resolve(t.init_from, config.model.attention, config.seed))
  encoder_config(config, config.model.max_len or 1, 1)  # model options; lengths are checked once data exists


def prepare_workdir(workdir: str | Path) -> Path:
  return writable_dir(workdir, "workdir", "choose another --workdir")


def _check_divisible(name: str, size: int, shards: int) -> None:
  if size % shards:
    raise ValueError(f"{name}={size} must be divisible by the data*fsdp mesh size {shards}")


def compile_train_step(model, tx, state, state_sh, bsh, example_batch: dict, t, kind: str):
  """(compiled sharded train step with the state donated, its compiled memory in bytes: temp + args + outputs)."""
  step_fn = functools.partial(train_step, model=model, tx=tx, grad_accum=t.grad_accum, kind=kind)
  p_train = jax.jit(step_fn, in_shardings=(state_sh, bsh), out_shardings=(state_sh, None), donate_argnums=0)
  compiled = p_train.lower(state, distributed.global_batch(example_batch, bsh)).compile()
  mem = compiled.memory_analysis()
  return compiled, int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)


def evaluate(p_eval, variables, split, batch_size: int, sharding, kind: str = "classify") -> dict[str, float]:
  """Exact metrics over the whole split (the last partial batch is padded with weight 0). In a multi-process run
  each process feeds its rows of every batch."""
  sums, rows = None, distributed.local_rows(sharding, batch_size)
  for batch in eval_batches(split, batch_size):
    local = jax.tree.map(lambda x: x[rows], batch)
    out = jax.device_get(p_eval(variables, distributed.global_batch(local, sharding)))
    sums = out if sums is None else jax.tree.map(np.add, sums, out)
  if kind != "tokens":  # per-token kinds count masked positions instead
    assert int(sums["count"]) == len(split["tokens"]), "evaluation must count every example exactly once"
  return finalize(kind, sums)


def train(config, workdir: str | Path, *, progress: bool = True, task: Task | None = None) -> dict:
  """Train (or resume) in `workdir`; returns the summary also written to `workdir/summary.json`."""
  wall_start = time.perf_counter()
  validate(config)
  workdir = prepare_workdir(workdir)
  task = task or build_task(config.task, config.data.to_dict())
  enc_cfg = encoder_config(config, task.seq_len, task.vocab_size)
  t = config.train
  mesh = mesh_from_config(config.mesh)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  _check_divisible("train.batch_size", t.batch_size, shards)
  _check_divisible("train.eval_batch_size", t.eval_batch_size, shards)
  if task.seq_len % mesh.shape["seq"]:
    raise ValueError(
      f"the task's sequence length {task.seq_len} must be divisible by mesh.seq={mesh.shape['seq']} "
      "(each seq shard holds an equal slice of every row; change the task's length option, e.g. "
      "data.max_length)"
    )
  main = distributed.is_main()  # only process 0 writes files, logs and progress
  log = functools.partial(print, flush=True) if main else lambda *a, **k: None
  if main:
    write_provenance(workdir, config)
    write_card(workdir, enc_cfg, task)  # what research.embed needs to load this run's encoder

  model = build_model(task.kind, enc_cfg, task.num_classes, config.model.pool)
  tx = make_optimizer(t)
  bsh = batch_sharding(mesh)
  # batch t = train_ds[t] (this process's rows of global batch t): the step alone fixes the data position
  train_ds = train_dataset(task, t.batch_size, seed=config.seed, rows=distributed.local_rows(bsh, t.batch_size))
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    state, state_sh = create_train_state(model, tx, config.seed, train_ds[0], mesh, task.kind)
    ckpt = Checkpointer(workdir / "checkpoints", t.keep_last, t.best_metric, t.best_mode)
    restored = ckpt.restore(abstract_like(state, state_sh))
    start = 0
    if restored is not None:
      state, start = restored
      log(f"resumed from {workdir / 'checkpoints'} at step {start}")
      if main:
        truncate_metrics(workdir, start)
    elif t.init_from:
      state, info = init_from.graft(state, t.init_from, config.model.attention, config.seed, task.vocab_size)
      log(f"encoder initialised from {info['path']} (step {info['step']}, id offset {info['id_offset']})")
    writer = MetricWriter(workdir) if main else None  # opened after any truncation of metrics.jsonl
    p_train, compiled_bytes = compile_train_step(model, tx, state, state_sh, bsh, train_ds[0], t, task.kind)
    p_eval = jax.jit(functools.partial(eval_step, model=model, kind=task.kind), in_shardings=(state_sh.variables, bsh))

    curve, wall_before = _read_history(workdir, start)

    def wall_so_far() -> float:  # this run's wall time, earlier sittings included
      return (wall_before or 0.0) + time.perf_counter() - wall_start

    pending = None
    train_time, train_tokens = 0.0, 0
    bar = tqdm(
      total=t.num_steps,
      initial=start,
      desc=f"{config.model.attention}",
      unit="step",
      disable=not (progress and main),
      dynamic_ncols=True,
      mininterval=1.0,
    )

    def flush():
      nonlocal pending
      if pending is None:
        return
      step, metrics = pending[0], jax.device_get(pending[1])
      pending = None
      if not np.isfinite(metrics["loss"]):
        raise TrainingDiverged(
          f"loss is {metrics['loss']} at step {step}; stopping. Last saved checkpoint: {ckpt.manager.latest_step()} "
          f"in {workdir / 'checkpoints'} (lower train.learning_rate or raise train.warmup_steps)"
        )
      if main and (step % t.log_every == 0 or step == t.num_steps):
        tps = train_tokens / (train_time + time.perf_counter() - tic)
        writer.write(step, "train", {**metrics, "tokens_per_s": tps})
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}", refresh=False)

    tic = time.perf_counter()
    for step in range(start, t.num_steps):
      batch = train_ds[step]
      state, metrics = p_train(state, distributed.global_batch(batch, bsh))
      flush()  # metrics of the previous step, read after this step is dispatched
      pending = (step + 1, metrics)
      train_tokens += int((batch["segment_ids"] > 0).sum()) * jax.process_count()  # equal shares per process
      bar.update(1)
      if (step + 1) % t.eval_every == 0 or step + 1 == t.num_steps:
        flush()
        jax.block_until_ready(state)
        train_time += time.perf_counter() - tic
        val = evaluate(p_eval, state.variables, task.splits["val"], t.eval_batch_size, bsh, task.kind)
        if main:  # wall_s is read back on resume
          writer.write(step + 1, "val", {**val, "wall_s": wall_so_far()})
        curve.append([step + 1, val["accuracy"]])
        ckpt.save(step + 1, state, metrics={f"val_{k}": v for k, v in val.items()})
        if step + 1 == t.crash_after_checkpoint:  # test hook: die hard once this checkpoint is on disk
          ckpt.wait()
          os.kill(os.getpid(), signal.SIGKILL)
        tic = time.perf_counter()
    flush()
    bar.close()
    ckpt.wait()

    best = ckpt.best_step()
    best_state, _ = ckpt.restore(abstract_like(state, state_sh), step=best)
    test = evaluate(p_eval, best_state.variables, task.splits["test"], t.eval_batch_size, bsh, task.kind)
    val_best = evaluate(p_eval, best_state.variables, task.splits["val"], t.eval_batch_size, bsh, task.kind)
    final = evaluate(p_eval, state.variables, task.splits["test"], t.eval_batch_size, bsh, task.kind)
    if main:
      writer.write(best, "test", test)
      writer.close()
    ckpt.close()
  summary = {
    "variant": config.model.attention,
    "seed": config.seed,
    "task": config.task,
    "params": count_params(state.params),
    "test_accuracy": test["accuracy"],
    "test_loss": test["loss"],
    "val_accuracy": val_best["accuracy"],
    "best_step": int(best),
    "num_steps": t.num_steps,
    "kind": task.kind,
    "test_metrics": test,
    "final_test_accuracy": final["accuracy"],
    "final_test_metrics": final,
    "tokens_per_s": train_tokens / train_time if train_time > 0 else None,
    "compiled_memory_bytes": compiled_bytes,
    "majority_baseline": task.majority_baseline,
    "seq_len": task.seq_len,
    "curve": curve,
    "device": jax.devices()[0].device_kind,
    "resumed_from": start or None,
    # wall time of every sitting that produced the kept steps; when an earlier sitting's wall time is unknown
    # (metrics written before it was recorded) only this sitting counts and wall_s_complete is False
    "wall_s": wall_so_far(),
    "wall_s_complete": wall_before is not None,
    "processes": jax.process_count(),
    "init_from": str(init_from.resolve(t.init_from, config.model.attention, config.seed)) if t.init_from else None,
    "id_offset": int(task.card.get("id_offset", 0)),
  }
  if main:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
  return summary


def _read_history(workdir: Path, upto: int) -> tuple[list[list[float]], float | None]:
  """Validation curve of earlier (pre-resume) sittings of this run, from metrics.jsonl, and their wall time (the
  wall_s of the validation row at step `upto`: 0.0 for a fresh run, None when that row does not record it)."""
  rows = read_metrics(workdir) if (workdir / "metrics.jsonl").exists() else []
  val = [r for r in rows if r["split"] == "val" and r["step"] <= upto]
  at_start = [r.get("wall_s") for r in val if r["step"] == upto]
  wall = 0.0 if upto == 0 else (at_start[-1] if at_start else None)
  return [[r["step"], r["accuracy"]] for r in val], wall
