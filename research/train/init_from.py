"""Start a run from a pretrained encoder ("never train from scratch"): `train.init_from=<workdir>`.

The encoder of an earlier run (any head: MaskedLM keeps it under "backbone", the other heads under "encoder")
replaces the freshly initialised encoder of the new run; the head stays freshly initialised. Non-trained
collections (e.g. Performer's random features) of the encoder are copied too, so the pretrained function is
kept exactly. Conventions:

  * `init_from` is a run workdir (or its checkpoints/ directory). It may hold `{variant}` and `{seed}`, filled
    from model.attention and seed, so one sweep can fine-tune each variant from its own pretraining run.
  * The checkpoint read is the pretraining run's best step (summary.json "best_step"); without a summary
    (an unfinished run) its newest step.
  * Every encoder array must have the same shape in both runs (same variant, widths, layers, model.max_len),
    except the token embedding: the pretraining run's summary.json "id_offset" k (MLM on a task with its own
    vocabulary, e.g. ListOps, shifts non-pad ids by k) maps new row i >= 1 to pretrained row i + k. With k = 0
    the vocabularies must be equal.
  * Only a fresh start grafts; a resumed run continues from its own checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

ENCODER_KEYS = ("encoder", "backbone")  # Classifier/PairClassifier/DualEncoder, MaskedLM


def resolve(init_from: str, variant: str, seed: int) -> Path:
  try:
    return Path(init_from.format(variant=variant, seed=seed))
  except (KeyError, IndexError, ValueError) as e:
    raise ValueError(f"train.init_from={init_from!r}: only {{variant}} and {{seed}} may be filled in ({e})") from e


def checkpoint_dir(path: Path) -> Path:
  ckpt = path / "checkpoints" if (path / "checkpoints").is_dir() else path
  if not ckpt.is_dir() or not any(p.name.isdigit() for p in ckpt.iterdir()):
    raise ValueError(
      f"train.init_from: {str(path)!r} holds no checkpoints (expected the workdir of a finished "
      "run, e.g. runs/mlm/softmax-seed0); train that run first"
    )
  return ckpt


def _encoder_key(tree: dict, where: str) -> str:
  keys = [k for k in ENCODER_KEYS if k in tree]
  if len(keys) != 1:
    raise ValueError(
      f"{where} has no single encoder subtree (found top-level keys {sorted(tree)}; expected "
      f"one of {', '.join(ENCODER_KEYS)})"
    )
  return keys[0]


def load(path: Path) -> tuple[dict, int, int]:
  """(restored state as host arrays, step read, id_offset) of the run at `path`."""
  ckpt = checkpoint_dir(path)
  summary_path = ckpt.parent / "summary.json"
  summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
  step = summary.get("best_step") or max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
  try:
    state = ocp.StandardCheckpointer().restore((ckpt / str(step) / "state").absolute())
  except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is reported as such
    raise ValueError(
      f"train.init_from: checkpoint {ckpt / str(step)} cannot be read ({type(e).__name__}: {str(e)[:200]})"
    ) from e
  return jax.tree.map(np.asarray, state), int(step), int(summary.get("id_offset", 0))


def _graft_tree(new: Any, old: Any, where: str, id_offset: int, vocab_size: int) -> Any:
  """`old` (host arrays) shaped and placed like `new` (sharded jax arrays)."""
  new_flat = dict(jax.tree_util.tree_flatten_with_path(new)[0])
  old_flat = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(old)[0]}
  out = {}
  for key, target in new_flat.items():
    name = jax.tree_util.keystr(key)
    if name not in old_flat:
      raise ValueError(
        f"train.init_from: the pretrained {where} has no {name} (it has {len(old_flat)} arrays); "
        "pretrain and fine-tune need the same model.attention and layer structure"
      )
    value = old_flat.pop(name)
    if name.endswith("['embed']['embedding']") and (id_offset or value.shape != target.shape):
      value = _embedding_rows(np.asarray(target), value, id_offset, vocab_size)
    if value.shape != target.shape:
      raise ValueError(
        f"train.init_from: {where}{name} has shape {value.shape} in the pretrained run but "
        f"{tuple(target.shape)} here; match model.d_model/num_heads/mlp_dim/max_len to the pretraining"
      )
    out[key] = jax.device_put(value.astype(target.dtype), target.sharding)
  if old_flat:
    raise ValueError(f"train.init_from: the pretrained {where} has arrays this model lacks: {sorted(old_flat)[:3]}")
  treedef = jax.tree_util.tree_structure(new)
  return jax.tree_util.tree_unflatten(treedef, [out[k] for k, _ in jax.tree_util.tree_flatten_with_path(new)[0]])


def _embedding_rows(target: np.ndarray, pretrained: np.ndarray, id_offset: int, vocab_size: int) -> np.ndarray:
  """New rows 0 and 1..vocab_size-1 from pretrained rows 0 and 1+k..vocab_size-1+k; padding rows keep init."""
  if target.shape[1] != pretrained.shape[1]:
    return pretrained  # the width mismatch is reported by the caller
  if vocab_size + id_offset > pretrained.shape[0]:
    raise ValueError(
      f"train.init_from: this task's vocabulary ({vocab_size} ids, offset {id_offset}) does not fit "
      f"the pretrained embedding ({pretrained.shape[0]} rows); pretrain on this task's inputs"
    )
  if not id_offset and pretrained.shape != target.shape:
    raise ValueError(
      f"train.init_from: the pretrained embedding has {pretrained.shape[0]} rows, this model "
      f"{target.shape[0]}; fine-tune with the pretraining vocabulary"
    )
  out = target.copy()
  out[0] = pretrained[0]
  out[1:vocab_size] = pretrained[1 + id_offset : vocab_size + id_offset]
  return out


def graft(state: Any, init_from: str, variant: str, seed: int, vocab_size: int) -> tuple[Any, dict]:
  """`state` with its encoder (params and non-trained collections) from the pretrained run; and what was read."""
  path = resolve(init_from, variant, seed)
  old, step, id_offset = load(path)
  key_new, key_old = _encoder_key(state.params, "this model"), _encoder_key(old["params"], f"run {path}")
  params = dict(state.params)
  params[key_new] = _graft_tree(state.params[key_new], old["params"][key_old], "encoder", id_offset, vocab_size)
  extra = dict(state.extra)
  for collection, tree in state.extra.items():
    if key_new in tree:
      source = old.get("extra", {}).get(collection, {})
      if key_old not in source:
        raise ValueError(f"train.init_from: run {path} has no {collection!r} collection for its encoder")
      extra[collection] = {**tree, key_new: _graft_tree(tree[key_new], source[key_old], collection, 0, vocab_size)}
  unused = [c for c, tree in old.get("extra", {}).items() if key_old in tree and key_new not in state.extra.get(c, {})]
  if unused:
    raise ValueError(
      f"train.init_from: run {path} has the non-trained collection(s) {unused} that this model "
      f"lacks; pretrain and fine-tune need the same model.attention"
    )
  info = {"path": str(path), "step": step, "id_offset": id_offset}
  return state.replace(params=params, extra=extra), info
