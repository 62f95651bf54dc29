"""Per task kind: which head, what it is fed, and the loss/metric SUMS of a (micro)batch.

Sums (not means) over weighted examples make gradient accumulation and split-wide evaluation exact: the
caller divides once by the total weight. Every kind returns {"loss_sum", "correct", "count"}; `accuracy` is
correct/count (top-1 class, sign agreement for regression, masked-token accuracy, in-batch retrieval top-1).
Regression also sums what Pearson's r needs.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from research.attention.masks import Segments
from research.models.encoder import EncoderConfig
from research.models.heads import Classifier, DualEncoder, MaskedLM, PairClassifier

KINDS = ("classify", "regress", "pair", "match", "tokens")


def build_model(kind: str, encoder: EncoderConfig, num_classes: int, pool: str = "cls") -> nn.Module:
  if kind == "classify":
    return Classifier(encoder, num_classes, pool)
  if kind == "regress":
    return Classifier(encoder, 1, pool)
  if kind == "pair":
    return PairClassifier(encoder, num_classes, pool)
  if kind == "match":
    return DualEncoder(encoder, pool)
  if kind == "tokens":
    return MaskedLM(encoder)
  raise ValueError(f"task kind {kind!r}; expected one of {', '.join(KINDS)}")


def model_inputs(kind: str, batch: dict) -> tuple:
  """Positional arguments of the head (before `deterministic`)."""
  a = (batch["tokens"], Segments.from_batch(batch))
  if kind in ("pair", "match"):
    b = Segments(batch["segment_ids_b"], batch["positions_b"], int(batch.get("max_segments", 1)))
    return (*a, batch["tokens_b"], b)
  return a


def loss_sums(kind: str, out, batch: dict) -> tuple[jax.Array, dict]:
  """(Σ w·loss, {"loss_sum", "correct", "count", ...}) for one batch of head outputs."""
  w = batch["weights"]
  if kind in ("classify", "pair", "tokens"):
    logits = out.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
    correct = (jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(ce * w), "correct": jnp.sum(correct * w), "count": jnp.sum(w)}
  elif kind == "regress":
    pred, t = out[..., 0].astype(jnp.float32), batch["targets"]
    sums = {
      "loss_sum": jnp.sum(w * (pred - t) ** 2),
      "correct": jnp.sum(w * (jnp.sign(pred) == jnp.sign(t))),
      "count": jnp.sum(w),
      "p": jnp.sum(w * pred),
      "t": jnp.sum(w * t),
      "pp": jnp.sum(w * pred * pred),
      "tt": jnp.sum(w * t * t),
      "pt": jnp.sum(w * pred * t),
    }
  elif kind == "match":
    za, zb, scale = out
    logits = scale * za @ zb.T  # BxB: row i's positive is column i; weight-0 (padding) rows are no candidates
    logits = jnp.where(w[None, :] > 0, logits, -1e9)
    labels = jnp.arange(za.shape[0])
    ce = 0.5 * (
      optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      + optax.softmax_cross_entropy_with_integer_labels(jnp.where(w[:, None] > 0, logits, -1e9).T, labels)
    )
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    sums = {"loss_sum": jnp.sum(ce * w), "correct": jnp.sum(correct * w), "count": jnp.sum(w)}
  else:
    raise ValueError(f"task kind {kind!r}; expected one of {', '.join(KINDS)}")
  return sums["loss_sum"], sums


def finalize(kind: str, sums: dict) -> dict[str, float]:
  """Split-wide metrics from summed batch sums (host floats)."""
  n = max(float(sums["count"]), 1e-12)
  metrics = {"loss": float(sums["loss_sum"]) / n, "accuracy": float(sums["correct"]) / n}
  if kind == "regress":
    cov = sums["pt"] / n - (sums["p"] / n) * (sums["t"] / n)
    var_p, var_t = sums["pp"] / n - (sums["p"] / n) ** 2, sums["tt"] / n - (sums["t"] / n) ** 2
    metrics["mse"] = metrics["loss"]
    metrics["pearson"] = float(cov / max(float(var_p * var_t), 1e-12) ** 0.5)
  return metrics
