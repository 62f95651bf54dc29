"""Task heads over the encoder: sequence classifier and tied masked-LM head."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.attention.masks import Segments
from research.models.encoder import Encoder, EncoderConfig

POOLS = ("cls", "mean")


class Classifier(nn.Module):
  """Logits BxC from the CLS vector (position 0) or the mean over valid tokens."""

  encoder: EncoderConfig
  num_classes: int
  pool: str = "cls"

  @nn.compact
  def __call__(self, tokens_BxL, segments: Segments, deterministic: bool = True) -> jax.Array:
    if self.pool not in POOLS:
      raise ValueError(f"model.pool={self.pool!r}; expected one of {', '.join(POOLS)}")
    x_BxLxE = Encoder(self.encoder, name="encoder")(tokens_BxL, segments, deterministic)
    if self.pool == "cls":
      pooled_BxE = x_BxLxE[:, 0]
    else:
      valid_BxL = segments.valid.astype(jnp.float32)
      pooled_BxE = jnp.einsum("ble,bl->be", x_BxLxE.astype(jnp.float32), valid_BxL) / jnp.maximum(
        valid_BxL.sum(-1, keepdims=True), 1.0)
    hidden = nn.Dense(self.encoder.d_model, name="pre_logits", kernel_init=nn.with_logical_partitioning(
      nn.initializers.lecun_normal(), ("embed", "mlp")), bias_init=nn.with_logical_partitioning(
        nn.initializers.zeros, ("mlp",)))(pooled_BxE)
    return nn.Dense(self.num_classes, name="logits", dtype=jnp.float32, kernel_init=nn.with_logical_partitioning(
      nn.initializers.zeros, ("mlp", None)), bias_init=nn.with_logical_partitioning(
        nn.initializers.zeros, (None,)))(nn.tanh(hidden))


class MaskedLM(nn.Module):
  """Logits BxLxV (fp32) with the output projection tied to the token embedding."""

  encoder: EncoderConfig

  def setup(self):
    self.backbone = Encoder(self.encoder)
    self.bias = self.param(
      "output_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (self.encoder.padded_vocab,))

  def __call__(self, tokens_BxL, segments: Segments, deterministic: bool = True) -> jax.Array:
    x_BxLxE = self.backbone(tokens_BxL, segments, deterministic)
    logits = self.backbone.attend(x_BxLxE).astype(jnp.float32) + self.bias
    real_vocab_V = jnp.arange(self.encoder.padded_vocab) < self.encoder.vocab_size
    return jnp.where(real_vocab_V, logits, -1e9)  # vocabulary padding never gets probability
