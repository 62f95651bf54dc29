"""The encoder: Embed -> N x Block(pre-LN, mixer, MLP) -> LayerNorm (or BERT's post-LN layout, `norm="post"`).

Layers run under `nn.scan` (parameters stacked on a leading logical axis `layers`), optionally rematerialised.
`scan_unroll` unrolls that loop without changing the parameter tree: on CPU a rolled loop writes every layer's
saved activations into stacked buffers (zero-filled, then dynamic-update-sliced, then copied), ~10% of a train
step of a 4-layer d256 encoder at 512 tokens (results/bench/README.md); unrolled, XLA keeps them per layer at
the price of compiling each layer separately.
`norm="post"` is BERT's layout for imported checkpoints (research/pretrained.py): LayerNorm after the summed
embeddings and after each residual add, no final LayerNorm; with `norm_eps=1e-12` and `type_vocab_size=2` it
computes Hugging Face's BertModel exactly. Every block sows its output as `intermediates/hidden` (the embeddings
as `intermediates/embedded`), which costs nothing unless `apply(..., mutable="intermediates")` asks for it.
The mixer is looked up in the attention registry by name; every parameter carries logical axis names and
only `research.train.sharding.LOGICAL_RULES` says where they live.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import research.attention as attention
from research.attention.masks import Segments
from research.models.conv import ShortConv
from research.parallel import sequence

REMAT_POLICIES = {
  "none": None,
  "full": jax.checkpoint_policies.nothing_saveable,
  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
POSITIONS = ("learned", "rope")
MLPS = ("gelu", "geglu")
NORMS = ("pre", "post")


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  vocab_size: int
  max_len: int
  d_model: int = 64
  num_heads: int = 4
  num_layers: int = 2
  mlp_dim: int = 128
  mlp: str = "gelu"  # exact GELU MLP, or GeGLU
  gelu_approximate: bool = False
  dropout: float = 0.0
  attention: str = "softmax"  # a registry name, or per-layer names joined by "+" (e.g. "linear+linear+softmax")
  attention_cfg: Any = None  # None, the mixer's frozen Config, per-layer Configs, or an options mapping
  conv_kernel: int = 0  # >0: short depthwise convolution (segment-aware) before the q/k/v projections
  capture_attention: bool = False  # sow each layer's implied attention weights (where a matrix exists)
  positions: str = "learned"
  causal: bool = False
  remat_policy: str = "none"
  scan_unroll: int = 1  # layers per iteration of the layer loop; >= num_layers unrolls it fully (same params)
  dtype: str = "float32"  # compute dtype; parameters stay fp32
  norm: str = "pre"  # "pre": pre-LN blocks + final LayerNorm; "post": BERT (embedding LN, post-LN, no final LN)
  norm_eps: float = 1e-6  # LayerNorm epsilon (BERT: 1e-12)
  type_vocab_size: int = 0  # >0: learned token-type (segment A/B) embeddings, BERT's token_type_ids
  seq_softmax: str = "ring"  # softmax's sequence-parallel form on a `seq` mesh axis: "ring" or "allgather"

  def __post_init__(self):
    for name in ("vocab_size", "max_len", "d_model", "num_heads", "num_layers", "mlp_dim"):
      if getattr(self, name) <= 0:
        raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")
    if self.d_model % self.num_heads:
      raise ValueError(f"model.d_model={self.d_model} is not divisible by model.num_heads={self.num_heads}")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
    checks = (
      ("positions", POSITIONS),
      ("mlp", MLPS),
      ("remat_policy", tuple(REMAT_POLICIES)),
      ("norm", NORMS),
      ("dtype", ("float32", "bfloat16", "float16")),
      ("seq_softmax", ("ring", "allgather")),
    )
    for name, allowed in checks:
      if getattr(self, name) not in allowed:
        raise ValueError(f"model.{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
    if self.scan_unroll < 1:
      raise ValueError(
        f"model.scan_unroll must be >= 1 (num_layers={self.num_layers} unrolls fully), got {self.scan_unroll}"
      )
    if self.conv_kernel < 0:
      raise ValueError(f"model.conv_kernel must be >= 0, got {self.conv_kernel}")
    if self.type_vocab_size < 0:
      raise ValueError(f"model.type_vocab_size must be >= 0, got {self.type_vocab_size}")
    if not 0.0 < self.norm_eps < 1.0:
      raise ValueError(f"model.norm_eps must be in (0, 1), got {self.norm_eps}")
    names = self.attention.split("+")
    if len(names) > 1 and len(names) != self.num_layers:
      raise ValueError(
        f"model.attention={self.attention!r} names {len(names)} layers but model.num_layers={self.num_layers}"
      )
    for name in dict.fromkeys(names):
      caps = attention.capabilities(name)  # unknown name -> clear error
      if self.positions not in caps.positions:
        raise ValueError(f"attention {name!r} does not support positions={self.positions!r}")
      if self.causal and not caps.supports_causal:
        raise ValueError(f"attention {name!r} does not support causal=True")
    object.__setattr__(self, "attention_cfg", _resolve_mixer_configs(names, self.attention_cfg, self.max_len))

  @property
  def layer_attention(self) -> tuple[str, ...]:
    """One registry name per layer."""
    names = self.attention.split("+")
    return tuple(names * self.num_layers if len(names) == 1 else names)

  @property
  def is_hybrid(self) -> bool:
    return "+" in self.attention

  @property
  def padded_vocab(self) -> int:
    return -(-self.vocab_size // 128) * 128

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads


def _resolve_mixer_configs(names: list[str], given: Any, max_len: int) -> Any:
  """One frozen Config (uniform stack) or a tuple of per-layer Configs (hybrid stack).

  An options mapping is applied to every layer whose variant accepts each option; an option that no listed
  variant accepts is an error. A variant with a `max_len` option (parameters sized by the longest sequence:
  linformer, synthesizer) gets the model's max_len unless the mapping sets it.
  """
  if given is None or isinstance(given, Mapping):
    options = dict(given or {})
    unknown = [o for o in options if not any(o in attention.config_fields(n) for n in names)]
    if unknown:
      raise ValueError(
        f"unknown attention option(s) {', '.join(map(repr, unknown))} for {'+'.join(names)}; "
        f"valid: {', '.join(sorted(set().union(*map(attention.config_fields, names))))}"
      )
    configs = tuple(
      attention.make_config(
        n,
        {
          **attention.length_options(n, max_len),
          **{k: v for k, v in options.items() if k in attention.config_fields(n)},
        },
      )
      for n in names
    )
  else:
    configs = tuple(given) if isinstance(given, (tuple, list)) else (given,)
    if len(configs) != len(names) or any(
      type(c) is not attention.get(n).Config for c, n in zip(configs, names, strict=True)
    ):
      raise ValueError(f"attention_cfg {given!r} does not match attention {'+'.join(names)}")
  return configs[0] if len(configs) == 1 else configs


def _init(init, axes):
  return nn.with_logical_partitioning(init, axes)


def layer_norm(cfg: EncoderConfig, name: str | None = None) -> nn.LayerNorm:
  return nn.LayerNorm(
    epsilon=cfg.norm_eps,
    dtype=jnp.dtype(cfg.dtype),
    name=name,
    scale_init=_init(nn.initializers.ones, ("embed",)),
    bias_init=_init(nn.initializers.zeros, ("embed",)),
  )


def rope(x_BxLxHxD: jax.Array, positions_BxL: jax.Array, base: float = 10_000.0) -> jax.Array:
  """Rotary embeddings (Su et al. 2021), rotate-half convention, positions restart per segment."""
  half = x_BxLxHxD.shape[-1] // 2
  freq_F = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_BxLx1xF = (positions_BxL[:, :, None].astype(jnp.float32) * freq_F)[:, :, None, :]
  x1, x2 = x_BxLxHxD[..., :half].astype(jnp.float32), x_BxLxHxD[..., half:].astype(jnp.float32)
  cos, sin = jnp.cos(angle_BxLx1xF), jnp.sin(angle_BxLx1xF)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxLxHxD.dtype)


class Proj(nn.Module):
  """Multi-axis projection `einsum(eq, x, kernel) + bias` with a kernel of the given shape and logical axes.

  (linen's DenseGeneral initialises a flattened kernel, which breaks multi-axis logical constraints.)
  """

  shape: tuple[int, ...]
  axes: tuple[str, ...]
  eq: str
  out_from: int  # kernel axes >= out_from (or == out_from for the output projection) are fan-out
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = len(self.shape)
    in_axis = tuple(range(self.out_from)) if self.out_from else 0
    out_axis = tuple(range(1, n)) if self.out_from == 0 else tuple(range(self.out_from, n))
    init = nn.initializers.lecun_normal(in_axis=in_axis, out_axis=out_axis)
    kernel = self.param("kernel", _init(init, self.axes), self.shape)
    out_shape = self.shape[1:] if self.out_from == 0 else self.shape[self.out_from :]
    out_axes = self.axes[1:] if self.out_from == 0 else self.axes[self.out_from :]
    bias = self.param("bias", _init(nn.initializers.zeros, out_axes), out_shape)
    return jnp.einsum(self.eq, x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


class Block(nn.Module):
  """Transformer block (pre-LN, or post-LN with `cfg.norm="post"`); the mixer comes from the registry."""

  cfg: EncoderConfig
  deterministic: bool = True
  layer: int = 0  # which layer's mixer (all layers share one under nn.scan)

  @nn.compact
  def __call__(self, x_BxLxE, segments: Segments):
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    pre = cfg.norm == "pre"
    dense_heads = lambda name: Proj(  # noqa: E731
      (cfg.d_model, cfg.num_heads, cfg.head_dim), ("embed", "heads", "kv"), "ble,ehd->blhd", 0, dtype, name=name
    )

    attn_norm, mlp_norm = layer_norm(cfg, "attn_norm"), layer_norm(cfg, "mlp_norm")
    h = attn_norm(x_BxLxE) if pre else x_BxLxE
    if cfg.conv_kernel:
      h = ShortConv(cfg.conv_kernel, cfg.causal, dtype, name="conv")(h, segments)
    q, k, v = (dense_heads(n)(h) for n in ("query", "key", "value"))
    if cfg.positions == "rope":
      q, k = rope(q, segments.positions), rope(k, segments.positions)
    mixer_cfg = cfg.attention_cfg[self.layer] if cfg.is_hybrid else cfg.attention_cfg
    name = cfg.layer_attention[self.layer]
    mixer = attention.get(name)(cfg=mixer_cfg, name="mixer")
    mesh = jax.sharding.get_abstract_mesh()
    if (
      "seq" in mesh.axis_names and mesh.shape["seq"] > 1 and name in sequence.supported() and not self.is_initializing()
    ):  # init creates the mixer's variables through its own call
      o_BxLxHxD = sequence.sequence_parallel_attention(
        name,
        q,
        k,
        v,
        segments,
        mesh=mesh,
        batch_axes=tuple(a for a in ("data", "fsdp") if a in mesh.axis_names),
        causal=cfg.causal,
        config=mixer_cfg,
        variables=mixer.variables,
        softmax_mode=cfg.seq_softmax,
      )
    else:  # (other variants on a `seq` mesh: XLA's automatic partitioning gathers what they need)
      o_BxLxHxD = mixer(q, k, v, segments, cfg.causal)
    if cfg.capture_attention and attention.capabilities(cfg.layer_attention[self.layer]).implied_weights:
      self.sow("intermediates", "attention_weights", mixer.implied_weights(q, k, v, segments, cfg.causal))
    o = Proj(
      (cfg.num_heads, cfg.head_dim, cfg.d_model), ("heads", "kv", "embed"), "blhd,hde->ble", 2, dtype, name="out"
    )(o_BxLxHxD)
    x_BxLxE = x_BxLxE + nn.Dropout(cfg.dropout)(o, deterministic=self.deterministic)
    if not pre:
      x_BxLxE = attn_norm(x_BxLxE)

    h = mlp_norm(x_BxLxE) if pre else x_BxLxE
    width = cfg.mlp_dim * (2 if cfg.mlp == "geglu" else 1)
    h = nn.Dense(
      width,
      dtype=dtype,
      name="mlp_in",
      kernel_init=_init(nn.initializers.lecun_normal(), ("embed", "mlp")),
      bias_init=_init(nn.initializers.zeros, ("mlp",)),
    )(h)
    if cfg.mlp == "geglu":
      gate, h = jnp.split(h, 2, axis=-1)
      h = nn.gelu(gate, approximate=cfg.gelu_approximate) * h
    else:
      h = nn.gelu(h, approximate=cfg.gelu_approximate)
    h = nn.Dense(
      cfg.d_model,
      dtype=dtype,
      name="mlp_out",
      kernel_init=_init(nn.initializers.lecun_normal(), ("mlp", "embed")),
      bias_init=_init(nn.initializers.zeros, ("embed",)),
    )(h)
    x_BxLxE = x_BxLxE + nn.Dropout(cfg.dropout)(h, deterministic=self.deterministic)
    if not pre:
      x_BxLxE = mlp_norm(x_BxLxE)
    self.sow("intermediates", "hidden", x_BxLxE)
    return nn.with_logical_constraint(x_BxLxE, ("batch", "length", "embed")), None


def _maybe_remat(cfg: EncoderConfig):
  if cfg.remat_policy == "none":
    return Block
  return nn.remat(Block, prevent_cse=False, policy=REMAT_POLICIES[cfg.remat_policy])


class Stack(nn.Module):
  """N blocks under nn.scan (stacked params on axis `layers`), optionally under remat."""

  cfg: EncoderConfig

  @nn.compact
  def __call__(self, x_BxLxE, segments: Segments, deterministic: bool):
    if self.cfg.is_hybrid:  # different mixers per layer: unrolled, parameters under layer_<i>
      for i in range(self.cfg.num_layers):
        x_BxLxE, _ = _maybe_remat(self.cfg)(self.cfg, deterministic, i, name=f"layer_{i}")(x_BxLxE, segments)
      return x_BxLxE
    block = _maybe_remat(self.cfg)
    scanned = nn.scan(
      block,
      variable_axes={"params": 0, "intermediates": 0, "random_features": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=nn.broadcast,
      length=self.cfg.num_layers,
      unroll=min(self.cfg.scan_unroll, self.cfg.num_layers),
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x_BxLxE, _ = scanned(self.cfg, deterministic, name="layers")(x_BxLxE, segments)
    return x_BxLxE


class Encoder(nn.Module):
  """tokens_BxL + Segments -> contextual vectors BxLxE (exact zeros at padding)."""

  cfg: EncoderConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(
      cfg.padded_vocab,
      cfg.d_model,
      dtype=jnp.dtype(cfg.dtype),
      embedding_init=_init(nn.initializers.normal(0.02), ("vocab", "embed")),
    )
    if cfg.positions == "learned":
      self.pos_embed = self.param(
        "pos_embedding", _init(nn.initializers.normal(0.02), (None, "embed")), (cfg.max_len, cfg.d_model)
      )
    if cfg.type_vocab_size:
      self.type_embed = self.param(
        "type_embedding", _init(nn.initializers.normal(0.02), (None, "embed")), (cfg.type_vocab_size, cfg.d_model)
      )
    if cfg.norm == "post":
      self.embed_norm = layer_norm(cfg)
    self.stack = Stack(cfg)
    if cfg.norm == "pre":
      self.final_norm = layer_norm(cfg)
    self.dropout = nn.Dropout(cfg.dropout)

  def __call__(
    self,
    tokens_BxL: jax.Array,
    segments: Segments,
    deterministic: bool = True,
    token_types_BxL: jax.Array | None = None,
  ) -> jax.Array:
    """`token_types_BxL`: BERT's segment ids (default all 0); only with `type_vocab_size > 0`."""
    cfg = self.cfg
    if tokens_BxL.shape[1] > cfg.max_len:
      raise ValueError(f"sequence length {tokens_BxL.shape[1]} exceeds model.max_len={cfg.max_len}")
    if token_types_BxL is not None and not cfg.type_vocab_size:
      raise ValueError("token_types_BxL given but model.type_vocab_size=0 (no token-type embeddings)")
    x_BxLxE = self.embed(tokens_BxL)
    if cfg.positions == "learned":
      x_BxLxE = x_BxLxE + jnp.take(self.pos_embed, segments.positions, axis=0).astype(x_BxLxE.dtype)
    if cfg.type_vocab_size:
      types_BxL = jnp.zeros_like(tokens_BxL) if token_types_BxL is None else token_types_BxL
      x_BxLxE = x_BxLxE + jnp.take(self.type_embed, types_BxL, axis=0).astype(x_BxLxE.dtype)
    if cfg.norm == "post":
      x_BxLxE = self.embed_norm(x_BxLxE)
    x_BxLxE = self.dropout(x_BxLxE, deterministic=deterministic)
    x_BxLxE = nn.with_logical_constraint(x_BxLxE, ("batch", "length", "embed"))
    self.sow("intermediates", "embedded", x_BxLxE)
    x_BxLxE = self.stack(x_BxLxE, segments, deterministic)
    if cfg.norm == "pre":
      x_BxLxE = self.final_norm(x_BxLxE)
    return jnp.where(segments.valid[..., None], x_BxLxE, 0).astype(x_BxLxE.dtype)

  def attend(self, x_BxLxE: jax.Array) -> jax.Array:
    """Tied output projection onto the (padded) vocabulary."""
    return self.embed.attend(x_BxLxE)
