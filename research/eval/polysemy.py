"""Frozen-embedding probes of encoders: word-in-context polysemy per layer, a sentiment probe, cross-lingual retrieval.

Nothing here trains the encoder; every number comes from `research.embed.Embedder` vectors.

* ``wic_frozen``: for each val/test pair of the ``wic`` task (research/data/tasks/wic.py), the target word's
  vector in each sentence is the mean of the per-token vectors whose character span overlaps the target's
  span (:func:`target_spans`: the first occurrence of the lemma, any inflection wic's matching accepts); the
  pair's score is the cosine similarity of the two target vectors, at every asked layer. "Same sense" is
  predicted when the similarity is >= a threshold, chosen per layer to maximise val accuracy (candidates: the
  sorted val similarities, plus one above them all; ties go to the lowest threshold); test accuracy is measured
  at that threshold. The splits are exactly balanced, so the baseline is 50%.
* ``sentiment_probe``: sentence vectors (the embedder's own pooling and normalisation) of the ``sentiment`` task's
  binary target; features standardised with train statistics; an L2-penalised logistic regression fitted by
  damped Newton's method (deterministic) on train, the penalty chosen on val from :data:`L2_GRID` (ties go to
  the larger penalty); val/test accuracy vs the train-majority baseline.
* ``xling_retrieval``: per language pair, the test pairs of the ``xling`` task; both sides embedded (pooled,
  L2-normalised); recall@1 of the right translation among all the split's candidates of that pair, a->b and
  b->a (ties go to the lower index); chance 1/N.

``run`` evaluates several encoders and ``write`` saves ``<out>/<name>.json``, ``<name>.md`` and
``<name>_wic.png`` (WiC accuracy vs layer, one colour per encoder, test solid, val dotted, 50% dashed).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from research.data.tasks import sentiment, wic, xling

EVAL_SPLITS = ("val", "test")
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # mean log-loss + l2/2 * |w|^2 on standardised features
XLING_PAIRS = (("en-us", "de"), ("en-us", "fr"), ("de", "fr"))
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


# --------------------------------------------------------------------------------------------------- WiC
def _word_spans(sentence: str) -> list[tuple[str, int, int]]:
  """wic.words(sentence) with each word's [start, end) character span in the original sentence."""
  lowered, origin = [], []
  for i, ch in enumerate(sentence):  # per character: lower() may change the length (e.g. "İ")
    low = ch.lower()
    lowered.append(low)
    origin += [i] * len(low)
  text = "".join(lowered)
  return [(m.group(), origin[m.start()], origin[m.end() - 1] + 1) for m in re.finditer(r"[a-z0-9]+", text)]


def target_spans(sentence: str, lemma: str, pos: str) -> tuple[int, int]:
  """[start, end) character span of the first occurrence of `lemma` (a `pos` inflection of its head word, as
  `wic.contains` accepts) in `sentence`; a multiword lemma spans from its first word to its last."""
  lemma_words = wic.words(lemma)
  if not lemma_words:
    raise ValueError(f"lemma {lemma!r} has no [a-z0-9] word to look for")
  found = _word_spans(sentence)
  k = len(lemma_words)
  head = 0 if pos == "v" else k - 1
  head_forms = wic.forms(lemma_words[head], pos)
  for i in range(len(found) - k + 1):
    if found[i + head][0] in head_forms and all(found[i + j][0] == lemma_words[j] for j in range(k) if j != head):
      return found[i][1], found[i + k - 1][2]
  raise ValueError(
    f"lemma {lemma!r} (pos {pos!r}) does not occur in {sentence!r}, not even as a regular "
    f"inflection of {lemma_words[head]!r}"
  )


def best_threshold(similarities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
  """(threshold, accuracy) of the rule "label 1 iff similarity >= threshold" with the best accuracy on these
  points. Candidates: every distinct similarity and one just above the largest (everything 0); the lowest best."""
  s = np.asarray(similarities, np.float64)
  y = np.asarray(labels)
  if s.ndim != 1 or s.shape != y.shape or not len(s):
    raise ValueError(f"similarities {s.shape} and labels {y.shape}: expected two equal non-empty 1-d arrays")
  order = np.argsort(s, kind="stable")
  s, y = s[order], y[order] == 1
  n = len(s)
  zeros_below = np.concatenate([[0], np.cumsum(~y)])  # k = 0..n: 0-labels among the k smallest (predicted 0)
  ones_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])  # 1-labels among the rest (predicted 1)
  correct = zeros_below + ones_above
  starts = np.ones(n + 1, bool)
  starts[1:n] = s[1:] != s[:-1]  # a threshold at s[k] also takes s[k]'s equals, so k must start a run of ties
  k = int(np.argmax(np.where(starts, correct, -1)))
  threshold = s[k] if k < n else np.nextafter(s[-1], np.inf)
  return float(threshold), float(correct[k] / n)


def target_vectors(tokens, span: tuple[int, int], where: str) -> np.ndarray:
  """[layers, E]: mean of the vectors of the tokens whose (non-empty) span overlaps `span`."""
  spans = tokens.spans
  hit = (spans[:, 0] < span[1]) & (spans[:, 1] > span[0]) & (spans[:, 1] > spans[:, 0])
  if not hit.any():
    raise ValueError(f"{where}: no token of {tokens.text!r} overlaps characters {span}")
  vectors = tokens.vectors if tokens.vectors.ndim == 3 else tokens.vectors[None]
  return vectors[:, hit].mean(1)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  num = (a * b).sum(-1)
  return num / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def wic_similarities(
  embedder, split_pairs: Sequence[wic.Pair], layers: Sequence[int], batch_size: int = 32
) -> np.ndarray:
  """[layers, N] cosine similarity of the target word's two vectors per pair (one embed call for the split)."""
  sentences = list(dict.fromkeys(s for p in split_pairs for s in (p.sentence_a, p.sentence_b)))
  out = embedder.embed(sentences, layer=list(layers), pooling="none", overflow="window", batch_size=batch_size)
  by_text = dict(zip(sentences, out, strict=True))
  sides = []
  for attr in ("sentence_a", "sentence_b"):
    vecs = []
    for i, p in enumerate(split_pairs):
      text = getattr(p, attr)
      vecs.append(target_vectors(by_text[text], target_spans(text, p.lemma, p.pos), f"pair {i} ({p.lemma!r})"))
    sides.append(np.stack(vecs, axis=1))  # [layers, N, E]
  return _cosine(*sides).astype(np.float64)


def wic_frozen(
  embedder, wic_cfg: wic.Config, layers: Sequence[int], *, max_pairs: int | None = None, batch_size: int = 32
) -> dict[str, Any]:
  """Per-layer WiC accuracy of thresholded target-word cosine similarity (module docstring)."""
  layers = _layer_list(embedder, layers)
  if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int) or max_pairs < 2):
    raise ValueError(f"max_pairs={max_pairs!r}; expected None (all) or an integer >= 2")
  t0 = time.perf_counter()
  all_pairs = wic.pairs(wic_cfg)
  sims, labels = {}, {}
  for split in EVAL_SPLITS:
    chosen = all_pairs[split][:max_pairs]
    if not chosen:
      raise ValueError(f"wic {wic_cfg}: the {split} split has no pairs")
    sims[split] = wic_similarities(embedder, chosen, layers, batch_size)
    labels[split] = np.array([p.label for p in chosen])
  per_layer = []
  for i, layer in enumerate(layers):
    threshold, val_acc = best_threshold(sims["val"][i], labels["val"])
    test_acc = float(((sims["test"][i] >= threshold) == (labels["test"] == 1)).mean())
    per_layer.append(
      {
        "layer": layer,
        "threshold": threshold,
        "val_accuracy": val_acc,
        "test_accuracy": test_acc,
        **{
          f"{split}_mean_similarity_{name}": float(sims[split][i][labels[split] == lab].mean())
          if (labels[split] == lab).any()
          else None
          for split in EVAL_SPLITS
          for name, lab in (("same", 1), ("different", 0))
        },
      }
    )
  majority = int(np.bincount(labels["val"], minlength=2).argmax())
  return {
    "task": "wic",
    "config": dataclasses.asdict(wic_cfg),
    "max_pairs": max_pairs,
    "layers": per_layer,
    "counts": {
      split: {
        "pairs": len(labels[split]),
        "same_sense": int(labels[split].sum()),
        "lemmas": len({p.lemma for p in all_pairs[split][:max_pairs]}),
      }
      for split in EVAL_SPLITS
    },
    "baseline": float((labels["test"] == majority).mean()),
    "baseline_note": "test accuracy of the val majority class (the splits are exactly balanced: 0.5)",
    "seconds": round(time.perf_counter() - t0, 2),
  }


def _pair_arrays(embedder, split_pairs: Sequence[wic.Pair]) -> dict[str, np.ndarray]:
  """Token ids [N, 2, L], lengths [N, 2] and target-token masks [N, 2, L] of both sentences of every pair."""
  rows = []
  for p in split_pairs:
    for text in (p.sentence_a, p.sentence_b):
      ids, spans = embedder.with_specials(*(x[: embedder.capacity] for x in embedder.tokenize(text)))
      start, end = target_spans(text, p.lemma, p.pos)
      spans = np.asarray(spans)
      rows.append((ids, (spans[:, 0] < end) & (spans[:, 1] > start) & (spans[:, 1] > spans[:, 0])))
  length = -(-max(len(ids) for ids, _ in rows) // 16) * 16
  tokens, masks = np.zeros((len(rows), length), np.int32), np.zeros((len(rows), length), np.float32)
  for i, (ids, hit) in enumerate(rows):
    if not hit.any():
      raise ValueError(f"wic pair {i // 2}: no token covers the target word (truncated away?)")
    tokens[i, : len(ids)], masks[i, : len(ids)] = ids, hit
  lengths = np.array([len(ids) for ids, _ in rows], np.int32)
  n = len(split_pairs)
  return {
    "tokens": tokens.reshape(n, 2, length),
    "lengths": lengths.reshape(n, 2),
    "masks": masks.reshape(n, 2, length),
    "labels": np.array([p.label for p in split_pairs], np.int32),
  }


def wic_finetune(
  embedder,
  wic_cfg: wic.Config,
  *,
  steps: int = 260,
  batch_size: int = 32,
  learning_rate: float = 3e-5,
  head_learning_rate: float = 1e-3,
  seed: int = 0,
  eval_every: int = 50,
) -> dict[str, Any]:
  """Fine-tune the whole encoder + a head on WiC train: the target word's output vectors u, v of the two sentences
  -> [u, v, |u - v|, u * v] -> linear -> 2 classes (Sentence-BERT's classification features). AdamW, linear
  warmup (10%) and decay, `learning_rate` for the encoder and `head_learning_rate` for the fresh head (at the
  encoder's 3e-5 a fresh head barely moves in a few hundred steps: train loss stayed at 0.69), no dropout; every
  pair order from `seed`. Reports test accuracy at the best-val evaluation and at the last step. The embedder's
  own parameters are not modified."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  from research.attention.masks import Segments
  from research.models.encoder import Encoder

  if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
    raise ValueError(f"finetune steps={steps!r}; expected a positive integer")
  t0 = time.perf_counter()
  pairs = wic.pairs(wic_cfg)
  data = {split: _pair_arrays(embedder, pairs[split]) for split in ("train", *EVAL_SPLITS)}
  encoder, d = Encoder(embedder.cfg), embedder.cfg.d_model
  frozen = {k: v for k, v in embedder.variables.items() if k != "params"}  # e.g. Performer's random features
  head = nn.Dense(2, kernel_init=nn.initializers.normal(0.02))
  params = {
    "encoder": embedder.variables["params"],
    "head": head.init(jax.random.key(seed), jnp.zeros((1, 4 * d)))["params"],
  }

  def logits(params, tokens_Bx2xL, lengths_Bx2, masks_Bx2xL):
    b, _, length = tokens_Bx2xL.shape
    segments = Segments.from_lengths(lengths_Bx2.reshape(-1), length)
    x = encoder.apply({"params": params["encoder"], **frozen}, tokens_Bx2xL.reshape(2 * b, length), segments)
    m = masks_Bx2xL.reshape(2 * b, length)
    target = (jnp.einsum("nle,nl->ne", x.astype(jnp.float32), m) / m.sum(-1, keepdims=True)).reshape(b, 2, d)
    u, v = target[:, 0], target[:, 1]
    return head.apply({"params": params["head"]}, jnp.concatenate([u, v, jnp.abs(u - v), u * v], -1))

  warmup = max(1, steps // 10)

  def adamw(peak):
    return optax.adamw(
      optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, 0.0, max(1, steps - warmup))], [warmup]
      ),
      weight_decay=0.01,
    )

  tx = optax.chain(
    optax.clip_by_global_norm(1.0),
    optax.multi_transform(
      {"encoder": adamw(learning_rate), "head": adamw(head_learning_rate)},
      lambda p: {part: jax.tree.map(lambda _, part=part: part, p[part]) for part in ("encoder", "head")},
    ),
  )
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, batch):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(
        logits(p, batch["tokens"], batch["lengths"], batch["masks"]), batch["labels"]
      ).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  predict = jax.jit(lambda p, t, n, m: jnp.argmax(logits(p, t, n, m), -1))

  def accuracy(params, split):
    arrays, correct = data[split], 0
    for i in range(0, len(arrays["labels"]), 128):
      sl = slice(i, i + 128)
      correct += int(
        (
          np.asarray(predict(params, arrays["tokens"][sl], arrays["lengths"][sl], arrays["masks"][sl]))
          == arrays["labels"][sl]
        ).sum()
      )
    return correct / len(arrays["labels"])

  rng = np.random.default_rng(seed)
  train, n = data["train"], len(data["train"]["labels"])
  order = np.concatenate([rng.permutation(n) for _ in range(-(-steps * batch_size // n))])
  history, best = [], None
  for step in range(1, steps + 1):
    idx = order[(step - 1) * batch_size : step * batch_size]
    params, opt_state, loss = train_step(params, opt_state, {k: v[idx] for k, v in train.items()})
    if step % eval_every == 0 or step == steps:
      row = {"step": step, "loss": float(loss), "val_accuracy": accuracy(params, "val")}
      history.append(row)
      if best is None or row["val_accuracy"] > best["val_accuracy"]:
        best = {**row, "test_accuracy": accuracy(params, "test")}
  return {
    "steps": steps,
    "batch_size": batch_size,
    "learning_rate": learning_rate,
    "head_learning_rate": head_learning_rate,
    "seed": seed,
    "train_pairs": n,
    "best_step": best["step"],
    "val_accuracy": best["val_accuracy"],
    "test_accuracy_best_val": best["test_accuracy"],
    "test_accuracy_final": accuracy(params, "test"),
    "history": history,
    "seconds": round(time.perf_counter() - t0, 2),
  }


def _layer_list(embedder, layers: Sequence[int] | None) -> list[int]:
  """Layers as indices 0..num_layers (negative ones counted from the output), validated by the embedder."""
  n = embedder.cfg.num_layers
  if layers is None:
    return list(range(n + 1))
  resolved, _ = embedder._layers(list(layers))
  return list(resolved)


# ---------------------------------------------------------------------------------------------- logistic
def fit_logistic(
  x: np.ndarray, y: np.ndarray, l2: float, *, max_iter: int = 100, tol: float = 1e-9
) -> tuple[np.ndarray, float]:
  """(w, b) minimising mean(log(1 + exp(z)) - y z) + l2/2 |w|^2 with z = x w + b (bias unpenalised), by Newton's
  method with backtracking from zero: deterministic. y in {0, 1}."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  if x.ndim != 2 or y.shape != (len(x),) or not len(x):
    raise ValueError(f"x {x.shape}, y {y.shape}: expected [N, D] and [N] with N >= 1")
  if not np.isin(y, (0, 1)).all():
    raise ValueError("y: expected labels 0 and 1")
  if not l2 > 0:
    raise ValueError(f"l2={l2!r}; expected a positive penalty (the optimum must exist)")
  n, d = x.shape
  xa = np.concatenate([x, np.ones((n, 1))], axis=1)
  penalty = np.full(d + 1, float(l2))
  penalty[-1] = 0.0

  def loss(theta):
    z = xa @ theta
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(penalty * theta * theta))

  theta = np.zeros(d + 1)
  current = loss(theta)
  for _ in range(max_iter):
    p = 1.0 / (1.0 + np.exp(-(xa @ theta)))
    grad = xa.T @ (p - y) / n + penalty * theta
    if np.max(np.abs(grad)) < tol:
      break
    hess = (xa.T * (p * (1 - p))) @ xa / n + np.diag(penalty + 1e-12)
    step = np.linalg.solve(hess, grad)
    rate = 1.0
    while rate > 1e-10:  # Armijo backtracking: never increases the loss
      trial = loss(theta - rate * step)
      if trial <= current - 1e-4 * rate * float(grad @ step):
        break
      rate *= 0.5
    else:
      break
    theta, current = theta - rate * step, trial
  return theta[:-1], float(theta[-1])


def _accuracy(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
  return float((((x @ w + b) > 0) == (y == 1)).mean())


def logistic_probe(
  features: dict[str, np.ndarray], labels: dict[str, np.ndarray], l2_grid: Sequence[float] = L2_GRID
) -> dict[str, Any]:
  """Standardise with train statistics, fit on train per penalty, pick the penalty by val accuracy (ties: the
  larger), report train/val/test accuracy at it."""
  if not l2_grid:
    raise ValueError("l2_grid: expected at least one penalty")
  mean = features["train"].mean(0)
  std = features["train"].std(0)
  std = np.where(std > 1e-12, std, 1.0)
  x = {s: (np.asarray(f, np.float64) - mean) / std for s, f in features.items()}
  fits, val = {}, {}
  for l2 in sorted(l2_grid, reverse=True):
    fits[l2] = fit_logistic(x["train"], labels["train"], l2)
    val[l2] = _accuracy(x["val"], labels["val"], *fits[l2])
  best = max(val, key=lambda l2: (val[l2], l2))
  w, b = fits[best]
  return {
    "l2": best,
    "val_accuracy_by_l2": {f"{k:g}": v for k, v in sorted(val.items())},
    **{f"{s}_accuracy": _accuracy(x[s], labels[s], w, b) for s in ("train", "val", "test")},
  }


def sentiment_probe(
  embedder,
  sentiment_cfg: sentiment.Config,
  layer: int = -1,
  *,
  l2_grid: Sequence[float] = L2_GRID,
  batch_size: int = 32,
) -> dict[str, Any]:
  """Logistic-regression probe of pooled vectors on the binary sentiment target (module docstring)."""
  if sentiment_cfg.target != "binary":
    raise ValueError(
      f"sentiment_probe classifies: pass sentiment.Config(target='binary'), got target={sentiment_cfg.target!r}"
    )
  t0 = time.perf_counter()
  split_texts = sentiment.examples(sentiment_cfg)
  features, labels = {}, {}
  for split in ("train", "val", "test"):
    if not split_texts[split]:
      raise ValueError(f"sentiment {sentiment_cfg}: the {split} split is empty")
    features[split] = embedder.embed(
      [t.text for t in split_texts[split]], layer=layer, overflow="truncate", batch_size=batch_size
    )
    labels[split] = np.array([int(t.rating > 0) for t in split_texts[split]])
  probe = logistic_probe(features, labels, l2_grid)
  majority = int(np.bincount(labels["train"], minlength=2).argmax())
  return {
    "task": "sentiment",
    "config": dataclasses.asdict(sentiment_cfg),
    "layer": layer,
    "pooling": embedder.pooling,
    "normalized": embedder.normalize,
    **probe,
    "majority_class": majority,
    "majority_val_accuracy": float((labels["val"] == majority).mean()),
    "majority_test_accuracy": float((labels["test"] == majority).mean()),
    "counts": {s: len(labels[s]) for s in labels},
    "seconds": round(time.perf_counter() - t0, 2),
  }


# ------------------------------------------------------------------------------------------------- xling
def recall_at_1(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  """(a->b, b->a) top-1 accuracy where row i of `a` belongs with row i of `b` (vectors already normalised)."""
  sims = np.asarray(a, np.float64) @ np.asarray(b, np.float64).T
  right = np.arange(len(sims))
  return float((sims.argmax(1) == right).mean()), float((sims.argmax(0) == right).mean())


def xling_retrieval(
  embedder, xling_cfg: xling.Config | Sequence[xling.Config], *, batch_size: int = 32
) -> dict[str, Any]:
  """Recall@1 in both directions for each language pair's test split (module docstring)."""
  cfgs = [xling_cfg] if isinstance(xling_cfg, xling.Config) else list(xling_cfg)
  if not cfgs:
    raise ValueError("xling_retrieval: no language pair")
  t0 = time.perf_counter()
  rows = []
  for cfg in cfgs:
    test = xling.examples(cfg)[0]["test"]
    a, b = (
      embedder.embed([p[side] for p in test], overflow="truncate", normalize=True, batch_size=batch_size)
      for side in ("a", "b")
    )
    a_to_b, b_to_a = recall_at_1(a, b)
    rows.append(
      {
        "pair": list(cfg.pair),
        "n": len(test),
        "recall_at_1_a_to_b": a_to_b,
        "recall_at_1_b_to_a": b_to_a,
        "chance": 1.0 / len(test),
      }
    )
  return {
    "task": "xling",
    "split": "test",
    "pairs": rows,
    "overflow": "truncate",
    "seconds": round(time.perf_counter() - t0, 2),
  }


# --------------------------------------------------------------------------------------------------- run
def run(
  pretrained: Sequence[str] = (),
  checkpoints: Sequence[str | Path] = (),
  *,
  layers: Sequence[int] | None = None,
  max_pairs: int | None = None,
  xling_pairs: Sequence[tuple[str, str]] = XLING_PAIRS,
  text_tasks: bool = True,
  finetune_steps: int = 0,
  log=print,
) -> dict[str, Any]:
  """WiC per layer for every encoder (and, with `finetune_steps`, a fine-tuned WiC classifier); sentiment and
  xling for the pretrained ones (when `text_tasks`)."""
  from research.embed import Embedder

  if not pretrained and not checkpoints:
    raise ValueError("no encoder: give at least one --pretrained NAME or --checkpoint RUN")
  for path in checkpoints:
    if not Path(path).is_dir():
      raise ValueError(f"--checkpoint {str(path)!r} is not a directory; expected a run workdir of research train")
  xling_cfgs = [xling.Config(pair=tuple(p)) for p in xling_pairs] if text_tasks else []
  t0 = time.perf_counter()
  encoders = []
  for kind, source in [("pretrained", n) for n in pretrained] + [("checkpoint", str(c)) for c in checkpoints]:
    emb = Embedder.from_pretrained(source) if kind == "pretrained" else Embedder.from_checkpoint(source)
    log(f"{emb.name}: WiC, layers {_layer_list(emb, layers)}")
    entry = {
      "name": emb.name,
      "kind": kind,
      "source": source,
      "num_layers": emb.cfg.num_layers,
      "d_model": emb.cfg.d_model,
      "max_tokens": emb.max_tokens,
      "wic": wic_frozen(emb, wic.Config(), _layer_list(emb, layers), max_pairs=max_pairs),
    }
    if finetune_steps:
      log(f"{emb.name}: fine-tuning on WiC for {finetune_steps} steps")
      entry["wic_finetune"] = wic_finetune(emb, wic.Config(), steps=finetune_steps)
    if text_tasks and kind == "pretrained":
      log(f"{emb.name}: sentiment probe")
      entry["sentiment"] = sentiment_probe(emb, sentiment.Config())
      if xling_cfgs:
        log(f"{emb.name}: xling retrieval {', '.join('-'.join(c.pair) for c in xling_cfgs)}")
        entry["xling"] = xling_retrieval(emb, xling_cfgs)
    encoders.append(entry)
  return {"encoders": encoders, "seconds": round(time.perf_counter() - t0, 2), "notes": _notes(text_tasks)}


def _notes(text_tasks: bool) -> list[str]:
  return [
    "WiC: target-word vector = mean of the token vectors overlapping the lemma's first occurrence; cosine of the "
    "two sentences' target vectors; threshold chosen per layer on val (>= threshold = same sense), applied to "
    "test. Layer 0 = embedding output, L = encoder output. Splits are balanced (baseline 50%).",
    "Sentiment (VADER tweets, binary): logistic regression on the standardised pooled vectors (the model's own "
    "pooling), L2 penalty chosen on val; baseline = train-majority class."
    if text_tasks
    else "Sentiment and xling were not run.",
    "Xling: recall@1 over all test pairs of each language pair (pooled, L2-normalised; texts truncated to the "
    "model's maximum); chance = 1/N."
    if text_tasks
    else "",
    "Sentiment and xling run only for --pretrained encoders: a --checkpoint run's tokenizer is trained on its own "
    "task's text and need not cover tweets or German/French help pages."
    if text_tasks
    else "",
  ]


# ------------------------------------------------------------------------------------------------- write
def check_name(name: str) -> None:
  """An output file stem (every `research eval` writer and the command line check it before any work)."""
  if not isinstance(name, str) or not _NAME.fullmatch(name):
    raise ValueError(f"--name {name!r}; expected a plain file stem (letters, digits, '_', '-', '.')")


def _pct(x: float | None) -> str:
  return "-" if x is None else f"{100 * x:.1f}"


def markdown(results: dict[str, Any]) -> str:
  lines = ["# Frozen-embedding probes: WiC polysemy per layer, sentiment, cross-lingual retrieval", ""]
  lines += [f"- {n}" for n in results.get("notes", []) if n]
  lines += [f"- wall time: {results.get('seconds', 0):.0f} s", ""]
  for e in results["encoders"]:
    w = e["wic"]
    c = w["counts"]
    subset = "" if w["max_pairs"] is None else f" (the first {w['max_pairs']} per split)"
    lines += [
      f"## {e['name']} ({e['kind']}, {e['num_layers']} layers, d_model {e['d_model']})",
      "",
      f"WiC: {c['val']['pairs']} val / {c['test']['pairs']} test pairs{subset}; baseline "
      f"{_pct(w['baseline'])}%; {w['seconds']:.0f} s.",
      "",
      "| layer | val acc (%) | test acc (%) | threshold | val cos same | val cos different |",
      "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in w["layers"]:
      same, diff = r["val_mean_similarity_same"], r["val_mean_similarity_different"]
      lines.append(
        f"| {r['layer']} | {_pct(r['val_accuracy'])} | {_pct(r['test_accuracy'])} | {r['threshold']:.4f} | "
        f"{'-' if same is None else f'{same:.3f}'} | {'-' if diff is None else f'{diff:.3f}'} |"
      )
    lines.append("")
    f = e.get("wic_finetune")
    if f:
      lines += [
        f"WiC fine-tuned (whole encoder + linear head on the target word's [u, v, |u-v|, u*v]; {f['steps']} "
        f"steps x {f['batch_size']} of {f['train_pairs']} train pairs, AdamW lr {f['learning_rate']:g}, head "
        f"{f.get('head_learning_rate', f['learning_rate']):g}; "
        f"{f['seconds']:.0f} s): test {_pct(f['test_accuracy_best_val'])}% at the best val step "
        f"{f['best_step']} (val {_pct(f['val_accuracy'])}%), {_pct(f['test_accuracy_final'])}% at the "
        "last.",
        "",
      ]
    s = e.get("sentiment")
    if s:
      lines += [
        f"Sentiment probe (VADER {s['config']['corpus']}, binary; layer {s['layer']}, {s['pooling']} pooling"
        f"{', L2-normalised' if s['normalized'] else ''}; {s['counts']['train']}/{s['counts']['val']}/"
        f"{s['counts']['test']} train/val/test; {s['seconds']:.0f} s):",
        "",
        "| l2 | train acc (%) | val acc (%) | test acc (%) | majority test acc (%) |",
        "|---:|---:|---:|---:|---:|",
        f"| {s['l2']:g} | {_pct(s['train_accuracy'])} | {_pct(s['val_accuracy'])} | {_pct(s['test_accuracy'])} "
        f"| {_pct(s['majority_test_accuracy'])} |",
        "",
      ]
    x = e.get("xling")
    if x:
      lines += [
        f"Cross-lingual retrieval (xling test split, {x['seconds']:.0f} s):",
        "",
        "| pair | N | recall@1 a->b (%) | recall@1 b->a (%) | chance (%) |",
        "|---|---:|---:|---:|---:|",
      ]
      lines += [
        f"| {r['pair'][0]} -> {r['pair'][1]} | {r['n']} | {_pct(r['recall_at_1_a_to_b'])} | "
        f"{_pct(r['recall_at_1_b_to_a'])} | {100 * r['chance']:.2f} |"
        for r in x["pairs"]
      ]
      lines.append("")
    if e["kind"] == "checkpoint" and not s:
      lines += ["Sentiment and xling: not run for --checkpoint encoders (see the notes).", ""]
  return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> Path:
  """WiC val (dotted) and test (solid) accuracy vs layer, one colour per encoder, dashed 50% baseline."""
  from matplotlib.lines import Line2D

  from research.report import figures

  encoders = results["encoders"]
  styles = figures._styles([e["name"] for e in encoders])
  fig = figures._new_figure(7.5, 4.2)
  ax = fig.subplots()
  handles = []
  for e in encoders:
    rows = e["wic"]["layers"]
    xs = [r["layer"] for r in rows]
    color = styles[e["name"]]["color"]
    ax.plot(xs, [100 * r["test_accuracy"] for r in rows], color=color, marker="o", linewidth=1.8)
    ax.plot(
      xs,
      [100 * r["val_accuracy"] for r in rows],
      color=color,
      marker="o",
      markerfacecolor="none",
      linestyle=":",
      linewidth=1.2,
    )
    handles.append(Line2D([], [], color=color, marker="o", label=e["name"]))
  ax.axhline(50.0, color="0.3", linestyle="--", linewidth=1.0)
  handles += [
    Line2D([], [], color="black", linestyle="-", label="test"),
    Line2D([], [], color="black", linestyle=":", marker="o", markerfacecolor="none", label="val"),
    Line2D([], [], color="0.3", linestyle="--", label="50% (balanced)"),
  ]
  ax.set_xlabel("layer (0 = embeddings)")
  ax.set_ylabel("accuracy (%)")
  ax.set_title("WiC frozen-embedding accuracy vs layer")
  ax.xaxis.get_major_locator().set_params(integer=True)
  ax.grid(alpha=0.3)
  figures._legend(fig, handles)
  return figures._save(fig, path)


def write(results: dict[str, Any], out_dir: str | Path, name: str) -> dict[str, Path]:
  """`<out_dir>/<name>.json`, `<name>.md`, `<name>_wic.png`."""
  check_name(name)
  if not results.get("encoders"):
    raise ValueError("results hold no encoder")
  from research.report import write_files

  return write_files(out_dir, name, results, markdown(results), plot, "_wic")
