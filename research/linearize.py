"""Linearize a pretrained encoder: distil its softmax attention into linear attention (Hedgehog's recipe).

  research linearize --config experiments/linearize.py --workdir runs/linearize/minilm-hedgehog
  research linearize --config experiments/linearize.py --feature-map based --workdir runs/linearize/minilm-based

1. `swap_mixers`: the student is the teacher with every softmax mixer replaced by a linear one (hedgehog, based or
   performer). Every teacher array is kept bit-identical under the same tree path (q/k/v/o projections, MLPs,
   norms, embeddings); only the new mixers' arrays (`.../mixer/...`: hedgehog's feature maps, based's projections)
   and non-trained collections (performer's `random_features`) are fresh.
2. Stage 1, `attention_distill`: only the mixer parameters train, on the attention-distillation loss: per layer,
   head and valid query row the cross-entropy −Σ_j A_ij log Â_ij between the teacher's softmax row A (no gradient)
   and the student's implied weights Â, the student running its own forward (so layer l's queries and keys come
   from the student's layer l−1). Every other parameter is not even an argument of the gradient: it stays
   bit-identical. Performer has no trainable feature map (its random features are fixed): stage 1 is skipped.
3. Stage 2, `output_distill`: every student parameter trains on output matching: the mean squared error between
   student and teacher hidden states after every block (valid tokens, mean over layers and channels) plus
   `cosine_weight` · (1 − cos) of the mean-pooled, L2-normalised sentence embeddings.

Data (`corpus_batches`): documents of the offline corpora, lines without letters dropped, consecutive lines packed
into [CLS] … [SEP] rows of at most `max_tokens` teacher word pieces; a document is held out for evaluation iff
crc32("<corpus>/<id>") % 100 < held_out_percent. The batch of global step s is a pure function of (s, seed): rows in
a seeded permutation per epoch, so a resumed run needs no iterator state.

The driver `linearize(config, workdir)` runs stage 1 then stage 2 on one global step counter (stage 2 steps follow
stage 1's), checkpoints (orbax: params, optimizer state, and a JSON item with the stage and its step) every
`train.eval_every` steps and at the end of each stage, and resumes from the newest checkpoint. metrics.jsonl holds
train rows (stage 1: per-layer attention KL `kl_layer<i>`; stage 2: mse, cosine) and held-out rows at step 0, every
`eval_every` steps and at the end of each stage (per-layer attention KL, mse, cosine of student vs teacher sentence
embeddings). Loading the student: the checkpoints have research train's layout (state["params"]["encoder"],
non-trained collections under state["extra"][collection]["encoder"]) and the workdir gets an encoder.json card and a
summary.json whose best_step is the final step, so `Embedder.from_checkpoint(workdir)` reads the student's arrays;
for a WordPiece teacher (MiniLM) the card names the teacher, whose tokenizer.json it loads, and keeps the teacher's
[CLS]/[SEP], pooling and normalisation conventions (`load_student` is that call).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from research import attention
from research.attention.masks import Segments
from research.models.encoder import Encoder, EncoderConfig

LINEAR_MAPS = ("hedgehog", "based", "performer")  # mixers a softmax layer may be linearized into
TRAINABLE_MAPS = ("hedgehog", "based")  # those with a learned feature map (performer's features are random, fixed)
EPS = 1e-6  # inside the logs of the distillation losses
CARD = "encoder.json"


# ------------------------------------------------------------------------------------------------- the student
def _check_feature_map(feature_map: str, options: dict | None) -> None:
  if feature_map not in LINEAR_MAPS:
    known = "; it is a registered mixer but not a linear one" if feature_map in attention.names() else ""
    raise ValueError(
      f"feature map {feature_map!r} cannot linearize softmax attention{known}; choose one of {', '.join(LINEAR_MAPS)}"
    )
  attention.make_config(feature_map, options)  # an option the variant does not accept -> a clear error


def swap_mixers(
  teacher_cfg: EncoderConfig, teacher_params: dict, feature_map: str, options: dict | None = None, seed: int = 0
) -> tuple[EncoderConfig, dict]:
  """(student config, student variables): the teacher with each softmax mixer replaced by `feature_map`.

  `options` are the linear mixer's Config fields (e.g. {"feature_dim": 32}). The student's params hold every
  teacher array unchanged under the same path, plus the new mixer arrays; non-trained collections (performer's
  random features) come from `seed`.
  """
  options = dict(options or {})
  _check_feature_map(feature_map, options)
  if teacher_cfg.layer_attention != ("softmax",) * teacher_cfg.num_layers:
    raise ValueError(f"the teacher must use softmax attention in every layer, got attention={teacher_cfg.attention!r}")
  student_cfg = dataclasses.replace(teacher_cfg, attention=feature_map, attention_cfg=options, capture_attention=False)
  fresh = init_variables(student_cfg, jax.random.key(seed))
  teacher_flat = traverse_util.flatten_dict(nn.meta.unbox(teacher_params))
  fresh_flat = traverse_util.flatten_dict(fresh["params"])
  missing = sorted("/".join(k) for k in teacher_flat.keys() - fresh_flat.keys())
  bad = [
    f"{'/'.join(k)}: {np.shape(v)} vs {fresh_flat[k].shape}"
    for k, v in teacher_flat.items()
    if k in fresh_flat and tuple(np.shape(v)) != tuple(fresh_flat[k].shape)
  ]
  if missing or bad:
    raise ValueError(f"teacher params do not fit its config: missing in the encoder {missing[:3]}, shapes {bad[:3]}")
  new = {k: v for k, v in fresh_flat.items() if k not in teacher_flat}
  not_mixer = sorted("/".join(k) for k in new if "mixer" not in k)
  if not_mixer:
    raise ValueError(f"the teacher params lack non-mixer arrays {not_mixer[:3]}; pass the teacher's full params")
  params = traverse_util.unflatten_dict({**new, **{k: jnp.asarray(v) for k, v in teacher_flat.items()}})
  return student_cfg, {"params": params, **{c: v for c, v in fresh.items() if c != "params"}}


@functools.partial(jax.jit, static_argnames=("cfg",))
def init_variables(cfg: EncoderConfig, key: jax.Array) -> dict:
  """Fresh, unboxed variables of Encoder(cfg) (compiled once per config)."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return nn.meta.unbox(Encoder(cfg).init(key, tokens, Segments.from_lengths(jnp.ones((1,), jnp.int32), 1)))


def is_mixer(path: tuple[str, ...]) -> bool:
  return "mixer" in path


def split_mixer(params: dict) -> tuple[dict, dict]:
  """(mixer params, all other params), both nested like `params`."""
  flat = traverse_util.flatten_dict(params)
  mixer = {k: v for k, v in flat.items() if is_mixer(k)}
  rest = {k: v for k, v in flat.items() if not is_mixer(k)}
  return traverse_util.unflatten_dict(mixer), traverse_util.unflatten_dict(rest)


def merge(*trees: dict) -> dict:
  return traverse_util.unflatten_dict({k: v for t in trees for k, v in traverse_util.flatten_dict(t).items()})


# ----------------------------------------------------------------------------------------------------- losses
def _valid_rows(valid_BxL: jax.Array, rows_shape: tuple[int, ...]) -> jax.Array:
  """BxL valid queries broadcast to [..., B, H, L] rows."""
  return jnp.broadcast_to(jnp.asarray(valid_BxL, bool)[:, None, :], rows_shape).astype(jnp.float32)


def _row_terms(teacher: jax.Array, student: jax.Array, kind: str, eps: float) -> jax.Array:
  t, p = teacher.astype(jnp.float32), student.astype(jnp.float32)
  log_t = jnp.log(jnp.maximum(t, eps))
  if kind == "entropy":
    return -jnp.sum(t * log_t, axis=-1)
  log_p = jnp.log(jnp.maximum(p, eps))
  if kind == "ce":
    return -jnp.sum(t * log_p, axis=-1)
  if kind == "kl":
    return jnp.sum(t * (log_t - log_p), axis=-1)
  raise ValueError(f"distillation loss kind {kind!r}; expected ce or kl")


def per_layer_distillation_loss(
  teacher_NxBxHxLxS: jax.Array,
  student_NxBxHxLxS: jax.Array,
  valid_BxL: jax.Array,
  *,
  kind: str = "ce",
  eps: float = EPS,
) -> jax.Array:
  """Mean over valid query rows (batch, head, query) of each layer: an N vector (any leading axes are kept).

  kind="ce": −Σ_j A_ij log max(Â_ij, eps), Hedgehog's cross-entropy (the gradient of the KL form);
  kind="kl": Σ_j A_ij (log max(A_ij, eps) − log max(Â_ij, eps)) = ce − H(A), exactly 0 when Â == A.
  Rows of padded queries are excluded; entries with A_ij = 0 (padded keys) contribute nothing.
  """
  rows = _row_terms(teacher_NxBxHxLxS, student_NxBxHxLxS, kind, eps)
  w = _valid_rows(valid_BxL, rows.shape)
  return jnp.sum(rows * w, axis=(-3, -2, -1)) / jnp.maximum(jnp.sum(w, axis=(-3, -2, -1)), 1.0)


def distillation_loss(
  teacher_weights: jax.Array, student_weights: jax.Array, valid_mask: jax.Array, *, kind: str = "ce", eps: float = EPS
) -> jax.Array:
  """The attention-distillation loss, a scalar: the mean over layers (any leading axes), heads and valid query
  rows of the per-row cross-entropy (kind="ce") or KL divergence (kind="kl"); weights are [..., B, H, L, S]."""
  return jnp.mean(per_layer_distillation_loss(teacher_weights, student_weights, valid_mask, kind=kind, eps=eps))


def attention_entropy(weights: jax.Array, valid_mask: jax.Array, eps: float = EPS) -> jax.Array:
  """Mean −Σ_j A_ij log max(A_ij, eps) over layers, heads and valid rows: the CE loss's floor (CE = KL + this)."""
  rows = _row_terms(weights, weights, "entropy", eps)
  w = _valid_rows(valid_mask, rows.shape)
  return jnp.mean(jnp.sum(rows * w, axis=(-3, -2, -1)) / jnp.maximum(jnp.sum(w, axis=(-3, -2, -1)), 1.0))


def pooled(out_BxLxE: jax.Array, valid_BxL: jax.Array) -> jax.Array:
  """Mean over valid tokens ([CLS]/[SEP] included, as sentence-transformers), L2-normalised: BxE fp32."""
  valid = valid_BxL[..., None].astype(jnp.float32)
  mean = jnp.sum(out_BxLxE.astype(jnp.float32) * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def output_losses(teacher_hidden_NxBxLxE, student_hidden_NxBxLxE, valid_BxL) -> tuple[jax.Array, jax.Array]:
  """(per-layer MSE over valid tokens and channels: N, per-row cosine of the pooled embeddings: B)."""
  valid = valid_BxL.astype(jnp.float32)
  sq_NxBxL = jnp.mean(
    (student_hidden_NxBxLxE.astype(jnp.float32) - teacher_hidden_NxBxLxE.astype(jnp.float32)) ** 2, axis=-1
  )
  mse_N = jnp.sum(sq_NxBxL * valid, axis=(-2, -1)) / jnp.maximum(jnp.sum(valid), 1.0)
  cos_B = jnp.sum(pooled(student_hidden_NxBxLxE[-1], valid_BxL) * pooled(teacher_hidden_NxBxLxE[-1], valid_BxL), -1)
  return mse_N, cos_B


# ----------------------------------------------------------------------------------------------------- models
def forward(
  cfg: EncoderConfig, variables: dict, tokens_BxL: jax.Array, lengths_B: jax.Array, *, capture: bool
) -> tuple[jax.Array, jax.Array | None]:
  """(hidden states after every block NxBxLxE, implied attention weights NxBxHxLxS or None)."""
  segments = Segments.from_lengths(lengths_B, tokens_BxL.shape[1])
  cfg = dataclasses.replace(cfg, capture_attention=capture)
  _, state = Encoder(cfg).apply(variables, tokens_BxL, segments, mutable="intermediates")
  layers = state["intermediates"]["stack"]["layers"]
  weights = layers["attention_weights"][0] if capture else None
  return layers["hidden"][0], weights


@dataclasses.dataclass(frozen=True)
class OptSpec:
  """AdamW with linear warmup and cosine decay to 0 over `total_steps`, global-norm clipping (hashable: jit-static)."""

  learning_rate: float
  total_steps: int
  warmup_steps: int = 0
  clip_norm: float = 1.0
  weight_decay: float = 0.0

  def make(self) -> optax.GradientTransformation:
    from research.train.optimizer import learning_rate_schedule

    schedule = learning_rate_schedule(self.learning_rate, self.warmup_steps, self.total_steps, "cosine")
    return optax.chain(
      optax.clip_by_global_norm(self.clip_norm),
      optax.adamw(schedule, b1=0.9, b2=0.98, eps=1e-9, weight_decay=self.weight_decay),
    )


@functools.partial(jax.jit, static_argnames=("spec", "student_cfg", "teacher_cfg"))
def stage1_step(
  spec: OptSpec,
  student_cfg: EncoderConfig,
  teacher_cfg: EncoderConfig,
  mixer: dict,
  rest: dict,
  collections: dict,
  opt_state,
  teacher_params: dict,
  tokens_BxL,
  lengths_B,
):
  """One attention-distillation step on the mixer params only: (mixer, opt_state, metrics)."""
  valid_BxL = Segments.from_lengths(lengths_B, tokens_BxL.shape[1]).valid
  _, target = forward(teacher_cfg, {"params": teacher_params}, tokens_BxL, lengths_B, capture=True)
  target = jax.lax.stop_gradient(target)

  def loss_fn(mixer):
    _, weights = forward(
      student_cfg, {"params": merge(rest, mixer), **collections}, tokens_BxL, lengths_B, capture=True
    )
    ce_N = per_layer_distillation_loss(target, weights, valid_BxL, kind="ce")
    return jnp.mean(ce_N), (ce_N, per_layer_distillation_loss(target, weights, valid_BxL, kind="kl"))

  (loss, (ce_N, kl_N)), grads = jax.value_and_grad(loss_fn, has_aux=True)(mixer)
  updates, opt_state = spec.make().update(grads, opt_state, mixer)
  metrics = {"loss": loss, "kl": jnp.mean(kl_N), "grad_norm": optax.tree.norm(grads)}
  metrics.update({f"kl_layer{i}": kl_N[i] for i in range(kl_N.shape[0])})
  return optax.apply_updates(mixer, updates), opt_state, metrics


@functools.partial(jax.jit, static_argnames=("spec", "student_cfg", "teacher_cfg", "cosine_weight"))
def stage2_step(
  spec: OptSpec,
  student_cfg: EncoderConfig,
  teacher_cfg: EncoderConfig,
  cosine_weight: float,
  params: dict,
  collections: dict,
  opt_state,
  teacher_params: dict,
  tokens_BxL,
  lengths_B,
):
  """One output-matching step on every student param: (params, opt_state, metrics)."""
  valid_BxL = Segments.from_lengths(lengths_B, tokens_BxL.shape[1]).valid
  target, _ = forward(teacher_cfg, {"params": teacher_params}, tokens_BxL, lengths_B, capture=False)
  target = jax.lax.stop_gradient(target)

  def loss_fn(params):
    hidden, _ = forward(student_cfg, {"params": params, **collections}, tokens_BxL, lengths_B, capture=False)
    mse_N, cos_B = output_losses(target, hidden, valid_BxL)
    mse, cos = jnp.mean(mse_N), jnp.mean(cos_B)
    return mse + cosine_weight * (1.0 - cos), (mse, cos)

  (loss, (mse, cos)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = spec.make().update(grads, opt_state, params)
  metrics = {"loss": loss, "mse": mse, "cosine": cos, "grad_norm": optax.tree.norm(grads)}
  return optax.apply_updates(params, updates), opt_state, metrics


@functools.partial(jax.jit, static_argnames=("student_cfg", "teacher_cfg"))
def _eval_sums(student_cfg, teacher_cfg, student_vars, teacher_params, tokens_BxL, lengths_B) -> dict:
  valid_BxL = Segments.from_lengths(lengths_B, tokens_BxL.shape[1]).valid
  t_hidden, t_weights = forward(teacher_cfg, {"params": teacher_params}, tokens_BxL, lengths_B, capture=True)
  s_hidden, s_weights = forward(student_cfg, student_vars, tokens_BxL, lengths_B, capture=True)
  rows = jnp.sum(_valid_rows(valid_BxL, t_weights.shape[-4:-1]))
  mse_N, cos_B = output_losses(t_hidden, s_hidden, valid_BxL)
  tokens = jnp.sum(valid_BxL)
  return {
    "kl_N": per_layer_distillation_loss(t_weights, s_weights, valid_BxL, kind="kl") * rows,
    "ce_N": per_layer_distillation_loss(t_weights, s_weights, valid_BxL, kind="ce") * rows,
    "rows": rows,
    "mse_N": mse_N * tokens,
    "tokens": tokens,
    "cos": jnp.sum(jnp.where(lengths_B > 0, cos_B, 0.0)),
    "seqs": jnp.sum(lengths_B > 0),
  }


def evaluate(
  student_cfg: EncoderConfig,
  student_vars: dict,
  teacher_cfg: EncoderConfig,
  teacher_params: dict,
  rows: Rows,
  batch_size: int,
) -> dict[str, float]:
  """Student vs teacher on `rows`: attention KL/CE per layer and mean, hidden-state MSE, sentence-embedding cosine,
  output loss (mse + 1 − cosine). Short last batches are padded with empty rows, which count nothing."""
  if not len(rows.lengths):
    raise ValueError("no held-out rows to evaluate on; raise data.held_out_percent or data.held_out_rows")
  sums = None
  for start in range(0, len(rows.lengths), batch_size):
    tokens, lengths = rows.tokens[start : start + batch_size], rows.lengths[start : start + batch_size]
    pad = batch_size - len(lengths)
    tokens = np.pad(tokens, ((0, pad), (0, 0)))
    lengths = np.pad(lengths, (0, pad))
    out = jax.device_get(_eval_sums(student_cfg, teacher_cfg, student_vars, teacher_params, tokens, lengths))
    sums = out if sums is None else jax.tree.map(np.add, sums, out)
  kl, ce = sums["kl_N"] / sums["rows"], sums["ce_N"] / sums["rows"]
  mse, cos = float(np.sum(sums["mse_N"]) / sums["tokens"] / len(kl)), float(sums["cos"] / sums["seqs"])
  metrics = {
    "attn_kl": float(np.mean(kl)),
    "attn_ce": float(np.mean(ce)),
    "mse": mse,
    "cosine": cos,
    "output_loss": mse + 1.0 - cos,
  }
  metrics.update({f"kl_layer{i}": float(v) for i, v in enumerate(kl)})
  return metrics


# ------------------------------------------------------------------------------------------ library-level stages
def attention_distill(
  student_cfg: EncoderConfig,
  student_vars: dict,
  teacher_cfg: EncoderConfig,
  teacher_params: dict,
  batches: Iterable[tuple[np.ndarray, np.ndarray]],
  spec: OptSpec,
) -> tuple[dict, list[dict]]:
  """Stage 1 over `batches` of (tokens BxL, lengths B): (student variables, per-step metrics). Only the mixer
  params change; a student without trainable mixer params (performer) is an error."""
  if student_cfg.attention not in TRAINABLE_MAPS:
    raise ValueError(
      f"{student_cfg.attention} has no trainable feature map; stage 1 applies to {', '.join(TRAINABLE_MAPS)}"
    )
  student_vars, teacher_params = _place((student_vars, teacher_params))
  mixer, rest = split_mixer(student_vars["params"])
  collections = {c: v for c, v in student_vars.items() if c != "params"}
  opt_state, history = _place(spec.make().init(mixer)), []
  for tokens, lengths in batches:
    mixer, opt_state, metrics = stage1_step(
      spec, student_cfg, _no_capture(teacher_cfg), mixer, rest, collections, opt_state, teacher_params, tokens, lengths
    )
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return {"params": merge(rest, mixer), **collections}, history


def output_distill(
  student_cfg: EncoderConfig,
  student_vars: dict,
  teacher_cfg: EncoderConfig,
  teacher_params: dict,
  batches: Iterable[tuple[np.ndarray, np.ndarray]],
  spec: OptSpec,
  cosine_weight: float = 1.0,
) -> tuple[dict, list[dict]]:
  """Stage 2 over `batches`: (student variables, per-step metrics); every param trains."""
  student_vars, teacher_params = _place((student_vars, teacher_params))
  params = student_vars["params"]
  collections = {c: v for c, v in student_vars.items() if c != "params"}
  opt_state, history = _place(spec.make().init(params)), []
  for tokens, lengths in batches:
    params, opt_state, metrics = stage2_step(
      spec,
      student_cfg,
      _no_capture(teacher_cfg),
      float(cosine_weight),
      params,
      collections,
      opt_state,
      teacher_params,
      tokens,
      lengths,
    )
    history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return {"params": params, **collections}, history


def _device() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def _place(tree: Any) -> Any:
  """Every array committed to the first device: fresh, restored and stepped states then share compiled programs."""
  return jax.device_put(tree, _device())


def _no_capture(cfg: EncoderConfig) -> EncoderConfig:
  return dataclasses.replace(cfg, capture_attention=False) if cfg.capture_attention else cfg


# -------------------------------------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class Rows:
  """Token rows [CLS] … [SEP], zero-padded to a common length: tokens NxL int32, lengths N int32."""

  tokens: np.ndarray
  lengths: np.ndarray

  @classmethod
  def from_lists(cls, rows: Sequence[Sequence[int]], length: int) -> Rows:
    tokens = np.zeros((len(rows), length), np.int32)
    for i, r in enumerate(rows):
      tokens[i, : len(r)] = r
    return cls(tokens, np.asarray([len(r) for r in rows], np.int32).reshape(-1))


@dataclasses.dataclass(frozen=True)
class Batches:
  """Training rows, held-out rows, and the deterministic batch of each global step."""

  train: Rows
  held_out: Rows
  info: dict = dataclasses.field(default_factory=dict)

  def batch(self, step: int, batch_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows step·bs … (step+1)·bs − 1 of the stream that visits the training rows in a fresh seeded permutation
    per epoch."""
    n = len(self.train.lengths)
    if n == 0:
      raise ValueError("no training rows; add corpora or raise data.max_documents")
    stream = np.arange(step * batch_size, (step + 1) * batch_size)
    idx = np.empty_like(stream)
    for epoch in np.unique(stream // n):
      at = stream // n == epoch
      idx[at] = np.random.default_rng([seed, int(epoch)]).permutation(n)[stream[at] % n]
    return self.train.tokens[idx], self.train.lengths[idx]


def chunk_document(tokenizer: Any, text: str, capacity: int) -> list[list[int]]:
  """Word pieces of the lines that contain a letter, consecutive lines packed into chunks of <= capacity pieces
  (a longer line is split)."""
  chunks, current = [], []
  for line in text.splitlines():
    if not any(ch.isalpha() for ch in line):
      continue
    ids = list(tokenizer.encode_with_spans(line.strip())[0])
    while ids:
      if len(current) + len(ids) <= capacity:
        current, ids = current + ids, []
      elif current:
        chunks.append(current)
        current = []
      else:
        chunks.append(ids[:capacity])
        ids = ids[capacity:]
  return chunks + ([current] if current else [])


def held_out(corpus: str, doc_id: str, percent: float) -> bool:
  return zlib.crc32(f"{corpus}/{doc_id}".encode()) % 100 < percent


def corpus_batches(
  tokenizer: Any,
  corpora: Sequence[str] = ("linux-doc", "python-doc", "wordnet"),
  max_tokens: int = 128,
  *,
  max_documents: int = 300,
  max_rows: int = 2000,
  held_out_percent: float = 5.0,
  held_out_rows: int = 64,
  seed: int = 0,
) -> Batches:
  """Rows of the installed `corpora`, tokenized with the teacher's tokenizer.

  Per corpus, documents are visited in a seeded permutation; training rows come from the first documents outside
  the held-out split until `max_documents` documents or `max_rows` rows; held-out rows are the first chunk of each
  held-out document, up to `held_out_rows`.
  """
  from research.data import corpora as registry

  if max_tokens < 3:
    raise ValueError(f"data.max_tokens must be >= 3 ([CLS], a piece, [SEP]), got {max_tokens}")
  capacity = max_tokens - 2
  train, evals, info = [], [], {}
  wrap = lambda ids: [tokenizer.cls_id, *ids, tokenizer.sep_id]  # noqa: E731
  for name in corpora:
    docs = registry.read(name)
    order = np.random.default_rng([seed, zlib.crc32(name.encode())]).permutation(len(docs))
    n_train, n_docs, n_eval = 0, 0, 0
    for i in order:
      doc = docs[i]
      is_held_out = held_out(name, str(doc.get("id", i)), held_out_percent)
      if is_held_out and n_eval < held_out_rows:
        chunks = chunk_document(tokenizer, doc["text"], capacity)
        if chunks:
          evals.append(wrap(chunks[0]))
          n_eval += 1
      elif not is_held_out and n_docs < max_documents and n_train < max_rows:
        chunks = chunk_document(tokenizer, doc["text"], capacity)[: max_rows - n_train]
        train += [wrap(c) for c in chunks]
        n_train, n_docs = n_train + len(chunks), n_docs + 1
      if n_eval >= held_out_rows and (n_docs >= max_documents or n_train >= max_rows):
        break
    info[name] = {"train_documents": n_docs, "train_rows": n_train, "held_out_rows": n_eval}
  return Batches(Rows.from_lists(train, max_tokens), Rows.from_lists(evals, max_tokens), info)


# ------------------------------------------------------------------------------------------------------ driver
def validate(config) -> None:
  """Every option checked before a teacher is loaded or anything is compiled."""
  _check_feature_map(config.feature_map, dict(config.attention_cfg))
  minimum = {
    "stage1.steps": 0,
    "stage2.steps": 0,
    "stage1.warmup_steps": 0,
    "stage2.warmup_steps": 0,
    "train.batch_size": 1,
    "train.eval_batch_size": 1,
    "train.eval_every": 1,
    "train.log_every": 1,
    "train.keep_last": 1,
    "data.max_documents": 1,
    "data.max_rows": 1,
    "data.held_out_rows": 1,
    "data.max_tokens": 3,
  }
  checks = [(name, config[name.split(".")[0]][name.split(".")[1]], low) for name, low in minimum.items()]
  for name, value, low in checks:
    if value < low:
      raise ValueError(f"{name} must be >= {low}, got {value}")
  for name in ("stage1.learning_rate", "stage2.learning_rate", "train.clip_norm"):
    section, key = name.split(".")
    if not config[section][key] > 0:
      raise ValueError(f"{name} must be positive, got {config[section][key]}")
  if not config.data.corpora:
    raise ValueError("data.corpora is empty; name at least one installed corpus, e.g. ('wordnet',)")


def _specs(config, stage1_steps: int) -> tuple[OptSpec, OptSpec]:
  t = config.train
  make = lambda s, n: OptSpec(
    float(s.learning_rate),
    max(n, 1),
    int(s.warmup_steps),
    float(t.clip_norm),  # noqa: E731
    float(t.weight_decay),
  )
  return make(config.stage1, stage1_steps), make(config.stage2, config.stage2.steps)


def _state(params: dict, collections: dict, opt_state) -> dict:
  """research train's checkpoint layout: params and non-trained collections under "encoder"."""
  state = {"params": {"encoder": params}, "opt_state": opt_state}
  if collections:
    state["extra"] = {c: {"encoder": v} for c, v in collections.items()}
  return state


def _tokenizer_kind(tokenizer: Any) -> str:
  from research.data.tokenizer import ByteTokenizer, SentencePieceTokenizer
  from research.pretrained import WordPieceTokenizer

  for cls, kind in (
    (ByteTokenizer, "bytes"),
    (SentencePieceTokenizer, "sentencepiece"),
    (WordPieceTokenizer, "wordpiece"),
  ):
    if isinstance(tokenizer, cls):
      return kind
  raise ValueError(f"unsupported tokenizer {type(tokenizer).__name__}; expected bytes, sentencepiece or WordPiece")


def _write_card(workdir: Path, cfg: EncoderConfig, tokenizer: Any, info: dict, max_tokens: int) -> None:
  """encoder.json in research.embed.write_card's format, plus the teacher and its pooling conventions."""
  from research.embed import TOKENIZER_FILE

  kind = _tokenizer_kind(tokenizer)
  if kind == "sentencepiece":
    tokenizer.save(workdir / TOKENIZER_FILE)
  card = {
    "encoder": dataclasses.asdict(cfg),
    "task": "linearize",
    "tokenizer": kind,
    "add_cls": True,
    "add_sep": True,
    "max_tokens": int(max_tokens),
    "teacher": info.get("name"),
    "pooling": info.get("pooling", "mean"),
    "normalize": bool(info.get("normalize", True)),
  }
  (workdir / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=list))


def load_student(workdir: str | Path, **kwargs) -> Any:
  """An Embedder of the linearized student in `workdir` (= `Embedder.from_checkpoint`: the card carries the
  teacher's tokenizer and its [CLS]/[SEP], pooling and normalisation conventions)."""
  from research.embed import Embedder

  return Embedder.from_checkpoint(workdir, **kwargs)


def _load_teacher(config) -> tuple[EncoderConfig, dict, Any, dict]:
  from research import pretrained

  return pretrained.load(config.teacher)


def linearize(
  config, workdir: str | Path, *, progress: bool = True, teacher: tuple | None = None, data: Batches | None = None
) -> dict:
  """Run (or resume) both stages in `workdir`; returns the summary also written to workdir/summary.json.

  `teacher`: (EncoderConfig, params, tokenizer, info) instead of `pretrained.load(config.teacher)`;
  `data`: Batches instead of `corpus_batches` on config.data (tests pass tiny synthetic ones).
  """
  import orbax.checkpoint as ocp
  from tqdm import tqdm

  from research import pretrained
  from research.config import writable_dir
  from research.train.metrics import MetricWriter, read_metrics, truncate_metrics
  from research.train.provenance import write_provenance

  wall_start = time.perf_counter()
  validate(config)
  if teacher is None:
    pretrained.resolve(config.teacher)  # an unknown name fails before anything is loaded
  workdir = writable_dir(workdir, "workdir", "pass a writable --workdir")
  teacher_cfg, teacher_params, tokenizer, info = teacher or _load_teacher(config)
  if config.data.max_tokens > teacher_cfg.max_len:
    raise ValueError(f"data.max_tokens={config.data.max_tokens} exceeds the teacher's max_len={teacher_cfg.max_len}")
  teacher_cfg = _no_capture(teacher_cfg)
  device, place = _device(), _place
  teacher_params = place(teacher_params)
  options = dict(config.attention_cfg)
  student_cfg, init_vars = swap_mixers(teacher_cfg, teacher_params, config.feature_map, options, seed=config.seed)
  init_vars = place(init_vars)
  collections = {c: v for c, v in init_vars.items() if c != "params"}
  if data is None:
    d = config.data
    data = corpus_batches(
      tokenizer,
      tuple(d.corpora),
      d.max_tokens,
      max_documents=d.max_documents,
      max_rows=d.max_rows,
      held_out_percent=d.held_out_percent,
      held_out_rows=d.held_out_rows,
      seed=config.seed,
    )
    print(
      f"data: {len(data.train.lengths):,} training rows, {len(data.held_out.lengths)} held-out rows "
      f"({json.dumps(data.info)})",
      flush=True,
    )
  write_provenance(workdir, config)
  _write_card(workdir, student_cfg, tokenizer, info, data.train.tokens.shape[1])

  s1 = config.stage1.steps if config.feature_map in TRAINABLE_MAPS else 0
  if config.stage1.steps and not s1:
    print(
      f"stage 1 skipped: {config.feature_map} has no trainable feature map (its random features are fixed); "
      f"going straight to output matching",
      flush=True,
    )
  s2, total = config.stage2.steps, s1 + config.stage2.steps
  spec1, spec2 = _specs(config, s1)
  t = config.train

  manager = ocp.CheckpointManager(
    (workdir / "checkpoints").absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=t.keep_last, create=True)
  )

  def fresh_state(stage: int, params: dict) -> dict:
    trainable = split_mixer(params)[0] if stage == 1 else params
    return place(_state(params, collections, (spec1 if stage == 1 else spec2).make().init(trainable)))

  def save(step: int, stage: int, state: dict) -> None:
    meta = {"stage": stage, "stage_step": step - (s1 if stage == 2 else 0), "step": step, **run_id}
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))

  # ---- where to start: stage, global step, state
  run_id = {"feature_map": config.feature_map, "attention_cfg": options, "stage1_steps": s1}
  stage, step, state = (1 if s1 else 2), 0, fresh_state(1 if s1 else 2, init_vars["params"])
  latest = manager.latest_step()
  if latest is not None:
    meta = manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    saved = {k: meta.get(k) for k in run_id}
    if saved != run_id:
      raise ValueError(
        f"{workdir} holds a run with {saved}, this config has {run_id}; resume with the same "
        "feature_map, attention_cfg and stage1.steps, or use a new --workdir"
      )
    stage, step = int(meta["stage"]), int(meta["step"])
    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), fresh_state(stage, init_vars["params"])
    )
    state = manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    print(f"resumed from {workdir / 'checkpoints'} at step {step} (stage {stage})", flush=True)
    truncate_metrics(workdir, step)
  writer = MetricWriter(workdir)
  teacher_args = (teacher_cfg, teacher_params)

  def run_eval(step: int, stage: int, params: dict) -> dict:
    metrics = evaluate(student_cfg, {"params": params, **collections}, *teacher_args, data.held_out, t.eval_batch_size)
    writer.write(step, "held_out", {"stage": stage, **metrics})
    return metrics

  if latest is None:
    first = run_eval(0, 0, state["params"]["encoder"])
    print(
      f"step 0 (linearized, untrained): held-out attention KL {first['attn_kl']:.4f}, cosine "
      f"{first['cosine']:.4f}, mse {first['mse']:.4f}",
      flush=True,
    )

  seconds = {1: [], 2: []}
  stopped = False
  for this in (1, 2):
    steps = s1 if this == 1 else s2
    offset = 0 if this == 1 else s1
    if stage > this or steps == 0:
      continue
    if stage < this:  # stage 1 just finished: output matching starts from its params with a fresh optimizer
      state, stage = fresh_state(2, state["params"]["encoder"]), 2
    params, opt_state = state["params"]["encoder"], state["opt_state"]
    mixer, rest = split_mixer(params) if this == 1 else (None, None)
    bar = tqdm(
      total=steps,
      initial=step - offset,
      desc=f"stage {this} ({config.feature_map})",
      unit="step",
      disable=not progress,
      dynamic_ncols=True,
      mininterval=1.0,
    )
    while step < offset + steps:
      tokens, lengths = data.batch(step, t.batch_size, config.seed)
      tic = time.perf_counter()
      if this == 1:
        mixer, opt_state, metrics = stage1_step(
          spec1, student_cfg, teacher_cfg, mixer, rest, collections, opt_state, teacher_params, tokens, lengths
        )
      else:
        params, opt_state, metrics = stage2_step(
          spec2,
          student_cfg,
          teacher_cfg,
          float(config.stage2.cosine_weight),
          params,
          collections,
          opt_state,
          teacher_params,
          tokens,
          lengths,
        )
      metrics = jax.device_get(metrics)
      seconds[this].append(time.perf_counter() - tic)
      step += 1
      bar.update(1)
      if not np.isfinite(metrics["loss"]):
        raise ValueError(
          f"stage {this} loss is {metrics['loss']} at step {step}; lower stage{this}.learning_rate "
          f"(last checkpoint: {manager.latest_step()} in {workdir / 'checkpoints'})"
        )
      if step % t.log_every == 0 or step == offset + steps:
        writer.write(step, "train", {"stage": this, **metrics})
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", refresh=False)
      end = step == offset + steps
      if step % t.eval_every == 0 or end or step == t.stop_after:
        current = merge(rest, mixer) if this == 1 else params
        if step % t.eval_every == 0 or end:
          run_eval(step, this, current)
        save(step, this, _state(current, collections, opt_state))
        if step == t.stop_after and step < total:
          stopped = True
          break
    bar.close()
    state = _state(merge(rest, mixer) if this == 1 else params, collections, opt_state)
    if stopped:
      break
  if manager.latest_step() is None:  # nothing to train (e.g. performer without stage 2): save the swapped student
    save(step, stage, state)
  manager.wait_until_finished()
  manager.close()
  writer.close()

  held = [r for r in read_metrics(workdir) if r["split"] == "held_out"]
  by_step = {r["step"]: {k: v for k, v in r.items() if k not in ("step", "split")} for r in held}
  summary = {
    "teacher": config.teacher if teacher is None else info.get("name"),
    "feature_map": config.feature_map,
    "attention_cfg": options,
    "stage1_steps": s1,
    "stage2_steps": s2,
    "stage1_skipped": bool(config.stage1.steps and not s1),
    "step": step,
    "finished": not stopped,
    "best_step": step,
    "resumed_from": latest,
    "held_out_initial": by_step.get(0),
    "held_out_after_stage1": by_step.get(s1) if s1 else None,
    "held_out_final": by_step.get(step) if not stopped else None,
    "s_per_step": {f"stage{k}": _median_after_first(v) for k, v in seconds.items()},
    "train_rows": len(data.train.lengths),
    "held_out_rows": len(data.held_out.lengths),
    "max_tokens": int(data.train.tokens.shape[1]),
    "batch_size": t.batch_size,
    "device": jax.devices()[0].device_kind,
    "wall_s": time.perf_counter() - wall_start,
  }
  (workdir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
  return summary


def _median_after_first(xs: list[float]) -> float | None:
  """Median seconds per step, the first step of this process (compilation) excluded."""
  return float(np.median(xs[1:])) if len(xs) > 1 else None
