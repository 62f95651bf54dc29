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
        valid_BxL.sum(-1, keepdims=True), 1.0
      )
    hidden = nn.Dense(
      self.encoder.d_model,
      name="pre_logits",
      kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
    )(pooled_BxE)
    return nn.Dense(
      self.num_classes,
      name="logits",
      dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp", None)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (None,)),
    )(nn.tanh(hidden))


class MaskedLM(nn.Module):
  """Logits BxLxV (fp32) with the output projection tied to the token embedding."""

  encoder: EncoderConfig

  def setup(self):
    self.backbone = Encoder(self.encoder)
    self.bias = self.param(
      "output_bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)), (self.encoder.padded_vocab,)
    )

  def __call__(self, tokens_BxL, segments: Segments, deterministic: bool = True) -> jax.Array:
    x_BxLxE = self.backbone(tokens_BxL, segments, deterministic)
    logits = self.backbone.attend(x_BxLxE).astype(jnp.float32) + self.bias
    real_vocab_V = jnp.arange(self.encoder.padded_vocab) < self.encoder.vocab_size
    return jnp.where(real_vocab_V, logits, -1e9)  # vocabulary padding never gets probability


def _pool(x_BxLxE: jax.Array, segments: Segments, pool: str) -> jax.Array:
  if pool == "cls":
    return x_BxLxE[:, 0].astype(jnp.float32)
  valid_BxL = segments.valid.astype(jnp.float32)
  return jnp.einsum("ble,bl->be", x_BxLxE.astype(jnp.float32), valid_BxL) / jnp.maximum(
    valid_BxL.sum(-1, keepdims=True), 1.0
  )


def _dense(features: int, name: str, axes: tuple, init=None) -> nn.Dense:
  init = init or nn.initializers.lecun_normal()
  return nn.Dense(
    features,
    name=name,
    dtype=jnp.float32,
    kernel_init=nn.with_logical_partitioning(init, axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros, (axes[1],)),
  )


class PairClassifier(nn.Module):
  """Siamese encoder over two inputs; logits from [u, v, u*v, u-v] of the pooled vectors (LRA Retrieval)."""

  encoder: EncoderConfig
  num_classes: int
  pool: str = "cls"

  @nn.compact
  def __call__(
    self, tokens_a, segments_a: Segments, tokens_b, segments_b: Segments, deterministic: bool = True
  ) -> jax.Array:
    enc = Encoder(self.encoder, name="encoder")
    u = _pool(enc(tokens_a, segments_a, deterministic), segments_a, self.pool)
    v = _pool(enc(tokens_b, segments_b, deterministic), segments_b, self.pool)
    h = nn.gelu(_dense(self.encoder.d_model, "pre_logits", ("embed", "mlp"))(jnp.concatenate([u, v, u * v, u - v], -1)))
    return _dense(self.num_classes, "logits", ("mlp", None), nn.initializers.zeros)(h)


class DualEncoder(nn.Module):
  """Two inputs -> unit vectors (shared encoder) and a learned inverse temperature, for in-batch contrast."""

  encoder: EncoderConfig
  pool: str = "mean"
  init_scale: float = 20.0

  @nn.compact
  def __call__(
    self, tokens_a, segments_a: Segments, tokens_b, segments_b: Segments, deterministic: bool = True
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    enc = Encoder(self.encoder, name="encoder")
    proj = _dense(self.encoder.d_model, "projection", ("embed", "mlp"))
    za = proj(_pool(enc(tokens_a, segments_a, deterministic), segments_a, self.pool))
    zb = proj(_pool(enc(tokens_b, segments_b, deterministic), segments_b, self.pool))
    normalize = lambda z: z * jax.lax.rsqrt(jnp.sum(z * z, -1, keepdims=True) + 1e-12)  # noqa: E731
    log_scale = self.param(
      "log_scale", nn.with_logical_partitioning(nn.initializers.constant(jnp.log(self.init_scale)), ()), ()
    )
    return normalize(za), normalize(zb), jnp.exp(log_scale)
