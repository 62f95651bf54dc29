"""Contextual embeddings out of an encoder: pooled sentence vectors or per-token vectors with character spans.

  emb = Embedder.from_pretrained("minilm")            # all-MiniLM-L6-v2, imported exactly (research/pretrained.py)
  emb = Embedder.from_checkpoint("runs/mlm/softmax-seed0")  # any run of ours with a text tokenizer
  vecs = emb.embed(["The bank approved my loan."])                # [N, E] float32 (the model's pooling)
  toks = emb.embed(texts, pooling="none", layer=3)                # list of TokenVectors (ids, spans, vectors)

Layers: 0 is the embedding output (after BERT's embedding LayerNorm), i is the output of block i, and -1 (or
`num_layers`) the encoder's output (for a pre-LN encoder, after its final LayerNorm; other layers are the raw
residual stream). A sequence of layers adds a leading layer axis. Texts are sorted by length and run in
batches padded to a multiple of 32 tokens, so a batch compiles once per length bucket. A text longer than the
model's maximum is an error unless `overflow="truncate"` (keep the first pieces) or `overflow="window"`
(overlapping windows with stride half the window; each token's vector comes from the window where it has the
most context on both sides; [CLS] from the first window, [SEP] from the last). Pooling: "mean" over every
token of the text ([CLS]/[SEP] included, as sentence-transformers does), "cls" (first position), "none".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research import attention
from research.attention.masks import Segments
from research.models.encoder import Encoder, EncoderConfig

POOLINGS = ("mean", "cls", "none")
OVERFLOWS = ("error", "truncate", "window")
BUCKET = 32  # sequence lengths are padded to a multiple of this
CARD = "encoder.json"  # written into every run's workdir by research train (write_card)
TOKENIZER_FILE = "tokenizer.model"


@dataclasses.dataclass(frozen=True)
class TokenVectors:
  """One text's tokens: ids [T], character spans [T, 2] ([start, end) in `text`; (0, 0) for specials), vectors
  [T, E] (or [layers, T, E] when several layers were asked for)."""

  text: str
  ids: np.ndarray
  spans: np.ndarray
  vectors: np.ndarray


def encoder_shapes(cfg: EncoderConfig) -> dict[str, tuple[int, ...]]:
  """keystr(path) -> shape of every parameter of Encoder(cfg), without allocating it."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  shapes = jax.eval_shape(
    lambda: Encoder(cfg).init(jax.random.key(0), tokens, Segments.from_lengths(jnp.ones((1,), jnp.int32), 1))
  )["params"]
  return {
    jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(nn.meta.unbox(shapes))[0]
  }


def _card_config(card: dict) -> EncoderConfig:
  fields = dict(card["encoder"])
  names = fields["attention"].split("+")
  given = fields.get("attention_cfg")
  if isinstance(given, list):  # a hybrid stack: one options mapping per layer
    fields["attention_cfg"] = tuple(attention.make_config(n, o) for n, o in zip(names, given, strict=True))
  return EncoderConfig(**fields)


def write_card(workdir: str | Path, cfg: EncoderConfig, task) -> None:
  """encoder.json (+ tokenizer.model for sentencepiece tasks): what `Embedder.from_checkpoint` needs."""
  from research.data.tokenizer import ByteTokenizer, SentencePieceTokenizer

  workdir, tok = Path(workdir), getattr(task, "tokenizer", None)
  kind = (
    "sentencepiece" if isinstance(tok, SentencePieceTokenizer) else "bytes" if isinstance(tok, ByteTokenizer) else None
  )
  if kind == "sentencepiece":
    tok.save(workdir / TOKENIZER_FILE)
  card = {
    "encoder": dataclasses.asdict(cfg),
    "task": task.name,
    "tokenizer": kind,
    "add_cls": task.name != "mlm",
    "max_tokens": task.seq_len,
  }
  (workdir / CARD).write_text(json.dumps(card, indent=2, sort_keys=True, default=list))


class Embedder:
  """Batched, length-sorted embedding of raw texts with any Encoder and a tokenizer that gives spans."""

  def __init__(
    self,
    cfg: EncoderConfig,
    variables: dict,
    tokenizer: Any,
    *,
    max_tokens: int,
    add_cls: bool,
    add_sep: bool,
    pooling: str = "mean",
    normalize: bool = False,
    name: str = "encoder",
  ):
    if pooling not in POOLINGS:
      raise ValueError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}")
    self.cfg, self.tokenizer, self.name = cfg, tokenizer, name
    self.max_tokens = min(int(max_tokens), cfg.max_len)
    self.add_cls, self.add_sep = add_cls, add_sep
    self.pooling, self.normalize = pooling, normalize
    self.variables = jax.tree.map(jnp.asarray, nn.meta.unbox(variables))
    self._forward = jax.jit(self._hidden, static_argnames=("layers",))

  # ---------------------------------------------------------------------------------------------- constructors
  @classmethod
  def from_pretrained(cls, name: str, **kwargs) -> Embedder:
    from research import pretrained

    cfg, params, tok, info = pretrained.load(name)
    options = dict(
      max_tokens=info["max_tokens"],
      add_cls=True,
      add_sep=True,
      pooling=info["pooling"],
      normalize=info["normalize"],
      name=info["name"],
    )
    return cls(cfg, {"params": params}, tok, **{**options, **kwargs})

  @classmethod
  def from_checkpoint(cls, path: str | Path, **kwargs) -> Embedder:
    """The encoder of a run of ours (any head; its best step, else its newest) and that run's tokenizer."""
    from research.data import tokenizer as tokenizers
    from research.train import init_from

    path = Path(path)
    workdir = path.parent if path.name == "checkpoints" else path
    state, step, _ = init_from.load(workdir)
    cfg, tok, options = _run_encoder(workdir, tokenizers)
    key = init_from._encoder_key(state["params"], f"run {workdir}")
    variables = {
      "params": state["params"][key],
      **{c: tree[key] for c, tree in state.get("extra", {}).items() if key in tree},
    }
    _check_tree(variables["params"], cfg, workdir)
    return cls(cfg, variables, tok, **{**options, "name": f"{workdir}@{step}", **kwargs})

  # ------------------------------------------------------------------------------------------------- encoding
  def tokenize(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Pieces (no specials) and their character spans; an empty result is an error."""
    if not isinstance(text, str):
      raise ValueError(f"texts must be strings, got {type(text).__name__}: {text!r:.60}")
    ids, spans = self.tokenizer.encode_with_spans(text)
    if not ids:
      raise ValueError(f"text {text!r:.60} tokenizes to nothing (no pieces); drop empty or whitespace-only texts")
    return ids, spans

  def with_specials(self, ids: list[int], spans: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """`ids`/`spans` with the model's [CLS]/[SEP] added (empty spans for them), as `embed` feeds the encoder."""
    head = [self.tokenizer.cls_id] if self.add_cls else []
    tail = [self.tokenizer.sep_id] if self.add_sep else []
    return head + ids + tail, [(0, 0)] * len(head) + list(spans) + [(0, 0)] * len(tail)

  @property
  def capacity(self) -> int:
    """Content pieces per sequence (the maximum minus [CLS]/[SEP])."""
    return self.max_tokens - int(self.add_cls) - int(self.add_sep)

  def _windows(self, n: int) -> list[int]:
    c = self.capacity
    stride = max(1, c // 2)
    starts = list(range(0, max(n - c, 0) + 1, stride))
    if starts[-1] + c < n:
      starts.append(n - c)
    return starts

  def embed(
    self,
    texts: Sequence[str] | str,
    layer: int | Sequence[int] = -1,
    pooling: str | None = None,
    overflow: str = "error",
    batch_size: int = 32,
    normalize: bool | None = None,
  ):
    """Pooled vectors [N, E] (or [layers, N, E]) float32, or a list of TokenVectors with pooling="none"."""
    if isinstance(texts, str):
      raise ValueError("embed takes a sequence of texts; wrap a single text in a list")
    pooling = self.pooling if pooling is None else pooling
    normalize = self.normalize if normalize is None else normalize
    if pooling not in POOLINGS:
      raise ValueError(f"pooling={pooling!r}; expected one of {', '.join(POOLINGS)}")
    if overflow not in OVERFLOWS:
      raise ValueError(f"overflow={overflow!r}; expected one of {', '.join(OVERFLOWS)}")
    if not isinstance(batch_size, int) or batch_size < 1:
      raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    layers, many = self._layers(layer)
    texts = list(texts)
    if not texts:
      raise ValueError("embed got no texts")

    # Every text becomes one or more sequences (windows); sequences are run length-sorted, then reassembled.
    pieces = [self.tokenize(t) for t in texts]
    seqs, plan = [], []  # plan[i]: (window starts, first sequence index)
    for i, (ids, spans) in enumerate(pieces):
      if len(ids) > self.capacity and overflow == "error":
        raise ValueError(
          f"text {i} ({texts[i]!r:.50}) has {len(ids)} pieces but {self.name} takes at most "
          f"{self.capacity} (+ specials, {self.max_tokens} tokens); pass overflow='truncate' or "
          "overflow='window'"
        )
      starts = [0] if overflow != "window" else self._windows(len(ids))
      plan.append((starts, len(seqs)))
      seqs += [self.with_specials(ids[s : s + self.capacity], spans[s : s + self.capacity]) for s in starts]
    vectors = self._run([s[0] for s in seqs], layers, batch_size)

    out = []
    for i, (starts, first) in enumerate(plan):
      ids, spans = pieces[i]
      if len(starts) == 1:
        full_ids, full_spans = seqs[first]
        vec = vectors[first]
      else:
        full_ids, full_spans = self.with_specials(ids, spans)
        vec = self._assemble(vectors[first : first + len(starts)], starts, len(ids))
      out.append(
        TokenVectors(
          texts[i], np.asarray(full_ids, np.int32), np.asarray(full_spans, np.int32), vec if many else vec[0]
        )
      )
    if pooling == "none":
      return out
    pooled = np.stack(
      [
        (o.vectors if many else o.vectors[None]).mean(-2)
        if pooling == "mean"
        else (o.vectors if many else o.vectors[None])[:, 0]
        for o in out
      ],
      axis=1,
    )  # [layers, N, E]
    if normalize:
      pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled if many else pooled[0]

  def _assemble(self, windows: list[np.ndarray], starts: list[int], n: int) -> np.ndarray:
    """[layers, T, E] of the whole text from overlapping windows' [layers, t, E]."""
    head = int(self.add_cls)
    best = np.zeros(n, np.int64)  # per content piece, the window where it sits farthest from an edge
    margin = np.full(n, -1)
    for w, s in enumerate(starts):
      idx = np.arange(s, min(s + self.capacity, n))
      m = np.minimum(idx - s, s + self.capacity - 1 - idx)
      better = m > margin[idx]
      best[idx[better]], margin[idx[better]] = w, m[better]
    body = np.stack([windows[w][:, head + p - starts[w]] for p, w in enumerate(best)], axis=1)
    parts = ([windows[0][:, :1]] if self.add_cls else []) + [body] + ([windows[-1][:, -1:]] if self.add_sep else [])
    return np.concatenate(parts, axis=1)

  def _layers(self, layer) -> tuple[tuple[int, ...], bool]:
    many = not isinstance(layer, int | np.integer)
    wanted = list(layer) if many else [layer]
    n = self.cfg.num_layers
    if many and not wanted:
      raise ValueError("layer: an empty sequence of layers")
    out = []
    for v in wanted:
      if isinstance(v, bool) or not isinstance(v, int | np.integer) or not -n - 1 <= v <= n:
        raise ValueError(
          f"layer={v!r}; expected an integer in [0, {n}] (0 = embeddings, {n} = output) or negative from the end"
        )
      out.append(int(v) % (n + 1))
    return tuple(out), many

  # -------------------------------------------------------------------------------------------------- running
  def _hidden(self, variables, tokens_BxL, lengths_B, layers: tuple[int, ...]) -> jax.Array:
    """[layers, B, L, E] fp32 hidden states of the asked layers."""
    segments = Segments.from_lengths(lengths_B, tokens_BxL.shape[1])
    out, state = Encoder(self.cfg).apply(variables, tokens_BxL, segments, mutable="intermediates")
    inter = state["intermediates"]
    per_layer = [inter["embedded"][0]] + _block_outputs(inter["stack"], self.cfg)
    per_layer[-1] = out  # the encoder's output (after a pre-LN encoder's final LayerNorm)
    valid = segments.valid[None, :, :, None]
    return jnp.where(valid, jnp.stack([per_layer[i] for i in layers]), 0).astype(jnp.float32)

  def _run(self, seqs: list[list[int]], layers: tuple[int, ...], batch_size: int) -> list[np.ndarray]:
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    results: list[np.ndarray | None] = [None] * len(seqs)
    for b in range(0, len(order), batch_size):
      idx = order[b : b + batch_size]
      length = min(-(-len(seqs[idx[0]]) // BUCKET) * BUCKET, self.cfg.max_len)
      rows = batch_size if len(order) > batch_size else 1 << (len(idx) - 1).bit_length()
      tokens = np.zeros((rows, length), np.int32)
      lengths = np.zeros((rows,), np.int32)
      for r, i in enumerate(idx):
        tokens[r, : len(seqs[i])], lengths[r] = seqs[i], len(seqs[i])
      hidden = np.asarray(self._forward(self.variables, jnp.asarray(tokens), jnp.asarray(lengths), layers=layers))
      for r, i in enumerate(idx):
        results[i] = hidden[:, r, : len(seqs[i])]
    return results


def _block_outputs(stack_inter: dict, cfg: EncoderConfig) -> list[jax.Array]:
  """Per-block outputs from the sown intermediates: stacked under `layers` (nn.scan) or per `layer_<i>`."""
  if "layers" in stack_inter:
    stacked = stack_inter["layers"]["hidden"][0]
    return [stacked[i] for i in range(cfg.num_layers)]
  return [stack_inter[f"layer_{i}"]["hidden"][0] for i in range(cfg.num_layers)]


def _check_tree(params: dict, cfg: EncoderConfig, where: Path) -> None:
  expected = encoder_shapes(cfg)
  got = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  bad = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
  if bad:
    k = bad[0]
    raise ValueError(
      f"checkpoint of {where} does not match its encoder config at {len(bad)} array(s), e.g. {k}: "
      f"checkpoint {got.get(k, 'missing')} vs config {expected.get(k, 'missing')}"
    )


def _run_encoder(workdir: Path, tokenizers) -> tuple[EncoderConfig, Any, dict]:
  """(encoder config, tokenizer, Embedder options) of a run: from its encoder.json (research train, research
  linearize), else rebuilt from its provenance config (the task is built again: slower, its corpus installed)."""
  card_path = workdir / CARD
  if card_path.is_file():
    try:
      card = json.loads(card_path.read_text())
      cfg = _card_config(card)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{card_path} is not a valid encoder card ({type(e).__name__}: {e})") from e
    kind = card.get("tokenizer")
    if kind == "sentencepiece":
      tok = tokenizers.load(workdir / TOKENIZER_FILE)
    elif kind == "bytes":
      tok = tokenizers.ByteTokenizer()
    elif kind == "wordpiece":  # a student of an imported model (research linearize): the teacher's tokenizer
      from research.pretrained import WordPieceTokenizer, model_dir

      tok = WordPieceTokenizer(model_dir(card["teacher"]) / "tokenizer.json")
    else:
      raise ValueError(
        f"run {workdir} trained on task {card.get('task')!r}, which has no text tokenizer; "
        "embed runs of text tasks (mlm on corpora, wic, sentiment, xling, text_cls, retrieval)"
      )
    options = {
      "max_tokens": int(card.get("max_tokens", cfg.max_len)),
      "add_cls": bool(card.get("add_cls", True)),
      "add_sep": bool(card.get("add_sep", False)),
      "pooling": card.get("pooling", "mean"),
      "normalize": bool(card.get("normalize", False)),
    }
    return cfg, tok, options
  provenance = workdir / "provenance.json"
  if not provenance.is_file():
    raise ValueError(f"{workdir} has neither {CARD} nor provenance.json; expected the workdir of a research train run")
  import ml_collections

  from research.config import MODEL_DEFAULTS
  from research.data.tasks import build
  from research.train.loop import encoder_config

  config = ml_collections.ConfigDict(json.loads(provenance.read_text())["config"])
  config.model = ml_collections.ConfigDict({**MODEL_DEFAULTS, **config.model.to_dict()})  # options added later
  task = build(config.task, config.data.to_dict())
  if getattr(task, "tokenizer", None) is None:
    raise ValueError(f"run {workdir} trained on task {config.task!r}, which has no text tokenizer")
  options = {"max_tokens": task.seq_len, "add_cls": task.name != "mlm", "add_sep": False}
  return encoder_config(config, task.seq_len, task.vocab_size), task.tokenizer, options
