"""`research bench peers`: our encoder train step vs the same encoder built from public PyTorch libraries.

Needs the optional extra (a CPU build of torch and three libraries): pip install -e '.[peers]'

Pairs (PAIRS): our attention variant -> the peer library whose non-causal encoder stack does the same job:

  softmax    x_transformers.Encoder                      (pre-LN, softmax attention; attn_flash=False, its default)
  performer  performer_pytorch.Performer                 (FAVOR+, nb_features = ours (64), fixed projection)
  linear     linear_attention_transformer.LinearAttentionTransformer
                                                         (Shen et al.'s efficient attention: softmax over the
                                                         features of q and over the positions of k; the nearest
                                                         peer of our elu+1 `linear`)

Both sides are the same classifier around the layer stack: token embedding (our padded vocabulary) + learned
absolute positions (max_len = the length timed) -> N pre-LN blocks (d_model, heads, GELU MLP of mlp_ratio x
d_model, no dropout) -> final LayerNorm -> CLS vector -> Dense(d) -> tanh -> Dense(classes); softmax cross-entropy.
Ours is `research.train.objectives.build_model("classify", ...)` stepped by `research.train.step.train_step`
(jitted and compiled as `research train` does, on a 1-device mesh, state donated: `OurStep`) with
`research.train.optimizer.make_optimizer` (global-norm clip + AdamW, decay on kernels and embeddings). The peer
step is forward, loss, backward, `clip_grad_norm_`, `torch.optim.AdamW.step` (decay on weights with ndim >= 2),
`zero_grad`, with the same hyper-parameters. The peers' own embedding and LM wrappers (TransformerWrapper,
PerformerLM, LinearAttentionTransformerLM) are not used: they bring rotary or axial positions and per-token LM
heads; the shared wrapper (`_PeerClassifier`) keeps everything outside the stack identical.

Parameter counts (`params_ours`, `params_peer`, `params_rel_diff` = peer / ours - 1; flagged when |diff| > 1%)
differ only inside the blocks, by the peers' bias conventions (per layer, d = d_model):
  x_transformers: no q/k/v/out biases and bias-less LayerNorms (gamma only): 6d fewer per layer, d fewer at the
                  final norm;
  performer_pytorch.Performer: q/k/v and out biases like ours: equal;
  linear_attention_transformer: no q/k/v biases: 3d fewer per layer.
At the issue's shape (4 layers, d256) that is under 0.2%. The Performer's random projection is a buffer there and
a non-trained collection here: counted on neither side.

Timing: `warmup` untimed steps, then `steps` timed steps, ours and the peer's ALTERNATING step by step in one
process, so that background load hits both alike; reported are the medians and ratio = peer_s / ours_s
(>= 1.0: ours is at least as fast). Threads: XLA's CPU client runs its intra-op work on one pool sized by
tsl::port::MaxParallelism(), i.e. the CPUs in this process's affinity mask (all cores by default); `torch_threads`
sets `torch.set_num_threads` to that same count: `len(os.sched_getaffinity(0))` (os.cpu_count() where there is no
affinity mask). Torch is a CPU build, so the comparison is only meaningful with JAX on CPU (enforced).

OpenMP: torch's CPU build parallelises with libgomp, whose threads SPIN at barriers by default. On this shared
2-core machine (background jobs at nice 19) that made a 2-thread torch step ~50x slower than a 1-thread one (a
tiny encoder: 1.0 s vs 0.02 s per step); with OMP_WAIT_POLICY=PASSIVE 2 threads take 0.02 s. Importing this module
therefore sets OMP_WAIT_POLICY=PASSIVE unless it is set already or torch is already loaded (libgomp reads it once,
when torch loads); the policy in force is recorded as `omp_wait_policy` (None: torch's default, active).

`performer_equivalence` checks numerically that our Performer mixer and performer-pytorch's FAVOR+ compute the
same function given the same projection matrix; see its docstring for the conventions and how they are aligned.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
import os
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.attention.masks import Segments
from research.attention.performer import PerformerAttention, draw_features
from research.bench.attention import device_dir
from research.models.encoder import EncoderConfig
from research.report import write_files
from research.train.objectives import build_model
from research.train.optimizer import make_optimizer
from research.train.sharding import LOGICAL_RULES, batch_sharding, make_mesh
from research.train.state import count_params, create_train_state
from research.train.step import train_step

INSTALL_HINT = "pip install -e '.[peers]'"
SCHEMA_VERSION = 1
PARAM_TOLERANCE = 0.01  # |peer / ours - 1| above this is flagged
ROW_FIELDS = (
  "variant",
  "peer",
  "length",
  "ours_s",
  "peer_s",
  "ratio",
  "ours_times_s",
  "peer_times_s",
  "ours_compile_s",
  "params_ours",
  "params_peer",
  "params_rel_diff",
  "params_flagged",
  "loss_ours",
  "loss_peer",
)
if "torch" not in sys.modules:  # libgomp reads it once, when torch loads (module docstring)
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
OPTIMIZER = types.SimpleNamespace(  # what make_optimizer reads; the torch side uses the same values
  learning_rate=1e-3, warmup_steps=0, num_steps=1_000, schedule="constant", clip_norm=1.0, weight_decay=0.01
)


@dataclasses.dataclass(frozen=True)
class Shape:
  """One encoder shape, shared by both sides."""

  layers: int = 4
  d_model: int = 256
  heads: int = 4
  length: int = 512
  batch: int = 4
  mlp_ratio: int = 4
  vocab_size: int = 256  # padded to a multiple of 128 on both sides (ours pads; the peer embedding takes it as is)
  num_classes: int = 10
  num_features: int = 64  # performer: random features m (our default)
  scan_unroll: int = 0  # ours: model.scan_unroll; 0 = `layers` (the layer loop fully unrolled, our fastest on CPU)

  def __post_init__(self):
    for key in (
      "layers",
      "d_model",
      "heads",
      "length",
      "batch",
      "mlp_ratio",
      "vocab_size",
      "num_classes",
      "num_features",
    ):
      if getattr(self, key) < 1:
        raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
    if self.scan_unroll < 0:
      raise ValueError(f"scan_unroll must be >= 0 (0: fully unrolled), got {self.scan_unroll}")
    if self.d_model % self.heads:
      raise ValueError(f"d_model={self.d_model} is not divisible by heads={self.heads}")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.heads

  def encoder_config(self, variant: str) -> EncoderConfig:
    options = {"num_features": self.num_features} if variant == "performer" else None
    return EncoderConfig(
      vocab_size=self.vocab_size,
      max_len=self.length,
      d_model=self.d_model,
      num_heads=self.heads,
      num_layers=self.layers,
      mlp_dim=self.mlp_ratio * self.d_model,
      attention=variant,
      attention_cfg=options,
      scan_unroll=self.scan_unroll or self.layers,
    )


def require(module: str):
  """Import an optional dependency of this benchmark, or raise a one-line ValueError naming the install command."""
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise ValueError(
      f"research bench peers needs {module} ({e.name or module} is not installed); run: {INSTALL_HINT}"
    ) from None


# --- the peer stacks: BxLxE -> BxLxE; the bool says whether the stack ends in its own final norm ------------------


def _x_transformers(shape: Shape):
  xt = require("x_transformers")
  return xt.Encoder(
    dim=shape.d_model,
    depth=shape.layers,
    heads=shape.heads,
    attn_dim_head=shape.head_dim,
    ff_mult=shape.mlp_ratio,
    attn_dropout=0.0,
    ff_dropout=0.0,
  ), True


def _performer_pytorch(shape: Shape):
  pp = require("performer_pytorch")
  return pp.Performer(
    dim=shape.d_model,
    depth=shape.layers,
    heads=shape.heads,
    dim_head=shape.head_dim,
    causal=False,
    ff_mult=shape.mlp_ratio,
    nb_features=shape.num_features,
    feature_redraw_interval=None,
    qkv_bias=True,
    attn_out_bias=True,
  ), False


def _linear_attention_transformer(shape: Shape):
  lat = require("linear_attention_transformer")
  if shape.mlp_ratio != 4:
    raise ValueError(
      f"linear_attention_transformer's MLP width is fixed at 4 x d_model; got mlp_ratio={shape.mlp_ratio}"
    )
  return lat.LinearAttentionTransformer(
    dim=shape.d_model,
    depth=shape.layers,
    max_seq_len=shape.length,
    heads=shape.heads,
    dim_head=shape.head_dim,
    causal=False,
  ), False


PAIRS: dict[str, tuple[str, Callable[[Shape], Any]]] = {
  "softmax": ("x_transformers", _x_transformers),
  "performer": ("performer_pytorch", _performer_pytorch),
  "linear": ("linear_attention_transformer", _linear_attention_transformer),
}
PACKAGES = {
  "torch": "torch",
  "x_transformers": "x-transformers",
  "performer_pytorch": "performer-pytorch",
  "linear_attention_transformer": "linear-attention-transformer",
}


def check_variants(variants: Sequence[str]) -> None:
  bad = [v for v in variants if v not in PAIRS]
  if not variants or bad:
    raise ValueError(
      f"no peer for variant(s) {', '.join(map(repr, bad)) or '(none given)'}; choose from {', '.join(PAIRS)}"
    )


def versions() -> dict[str, str]:
  out = {"jax": jax.__version__}
  for module, dist in PACKAGES.items():
    require(module)
    out[dist] = importlib.metadata.version(dist)
  return out


def jax_threads() -> int:
  """Threads XLA's CPU client computes with: the CPUs of this process's affinity mask (see the module docstring)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # no affinity masks on this OS
    return os.cpu_count() or 1


# --- the two models ------------------------------------------------------------------------------------------------


def peer_model(variant: str, shape: Shape, seed: int = 0):
  """The peer classifier (torch.nn.Module): tokens BxL int64 -> logits BxC."""
  torch = require("torch")
  check_variants([variant])
  torch.manual_seed(seed)
  stack, has_final_norm = PAIRS[variant][1](shape)
  padded_vocab = EncoderConfig(vocab_size=shape.vocab_size, max_len=1).padded_vocab

  class _PeerClassifier(torch.nn.Module):
    def __init__(self):
      super().__init__()
      e = shape.d_model
      self.embed = torch.nn.Embedding(padded_vocab, e)
      self.pos_embed = torch.nn.Parameter(0.02 * torch.randn(shape.length, e))
      torch.nn.init.normal_(self.embed.weight, std=0.02)
      self.stack = stack
      self.final_norm = torch.nn.Identity() if has_final_norm else torch.nn.LayerNorm(e)
      self.pre_logits = torch.nn.Linear(e, e)
      self.logits = torch.nn.Linear(e, shape.num_classes)

    def forward(self, tokens_BxL):
      x_BxLxE = self.embed(tokens_BxL) + self.pos_embed[: tokens_BxL.shape[1]]
      x_BxLxE = self.final_norm(self.stack(x_BxLxE))
      return self.logits(torch.tanh(self.pre_logits(x_BxLxE[:, 0])))

  return _PeerClassifier()


def peer_step(model, batch: dict[str, np.ndarray]) -> Callable[[], float]:
  """A closure running one AdamW train step of the peer (returns the loss)."""
  torch = require("torch")
  decay = [p for p in model.parameters() if p.ndim >= 2]
  no_decay = [p for p in model.parameters() if p.ndim < 2]
  opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": OPTIMIZER.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
    lr=OPTIMIZER.learning_rate,
    betas=(0.9, 0.98),
    eps=1e-9,
  )
  tokens = torch.from_numpy(batch["tokens"].astype(np.int64))
  targets = torch.from_numpy(batch["targets"].astype(np.int64))
  model.train()

  def step() -> float:
    loss = torch.nn.functional.cross_entropy(model(tokens), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIMIZER.clip_norm)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  return step


def synthetic_batch(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
  """Full-length rows (no padding) of random tokens and labels."""
  rng = np.random.default_rng(seed)
  b, n = shape.batch, shape.length
  return {
    "tokens": rng.integers(1, shape.vocab_size, (b, n)).astype(np.int32),
    "segment_ids": np.ones((b, n), np.int32),
    "positions": np.broadcast_to(np.arange(n, dtype=np.int32), (b, n)).copy(),
    "targets": rng.integers(0, shape.num_classes, b).astype(np.int32),
    "weights": np.ones(b, np.float32),
  }


class OurStep:
  """Our compiled train step on a 1-device mesh (works under any fake device count); call it to step once.

  Compiled as research/train/loop.py `compile_train_step` does (sharded, state donated), but without importing
  research.train.loop: that imports tensorboardX, which imports torch when it is installed, before
  OMP_WAIT_POLICY could be set (module docstring).
  """

  def __init__(self, variant: str, shape: Shape, batch: dict[str, np.ndarray], seed: int = 0):
    self.model = build_model("classify", shape.encoder_config(variant), shape.num_classes, "cls")
    self.tx = make_optimizer(OPTIMIZER)
    self.mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    bsh = batch_sharding(self.mesh)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(LOGICAL_RULES):
      self.state, state_sh = create_train_state(self.model, self.tx, seed, batch, self.mesh, "classify")
      tic = time.perf_counter()
      step_fn = functools.partial(train_step, model=self.model, tx=self.tx, grad_accum=1, kind="classify")
      self.step = (
        jax.jit(step_fn, in_shardings=(state_sh, bsh), out_shardings=(state_sh, None), donate_argnums=0)
        .lower(self.state, jax.device_put(batch, bsh))
        .compile()
      )
      self.compile_s = time.perf_counter() - tic
    self.batch = jax.device_put(batch, bsh)
    self.params = count_params(self.state.params)

  def __call__(self) -> float:
    self.state, metrics = self.step(self.state, self.batch)
    return float(jax.block_until_ready(metrics["loss"]))


def param_count(model) -> int:
  """Trainable parameters of a torch module (buffers, e.g. the Performer's projection, are not counted)."""
  return int(sum(p.numel() for p in model.parameters()))


def our_param_count(variant: str, shape: Shape) -> int:
  """Trainable parameters of our classifier (from shapes only: nothing is initialised or compiled)."""
  model = build_model("classify", shape.encoder_config(variant), shape.num_classes, "cls")
  batch = synthetic_batch(shape)
  abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch["tokens"], Segments.from_batch(batch))
  return count_params(abstract["params"])


def expected_param_gap(variant: str, shape: Shape) -> int:
  """ours - peer, by the peers' bias conventions (module docstring)."""
  d = shape.d_model
  return {"softmax": shape.layers * 6 * d + d, "performer": 0, "linear": shape.layers * 3 * d}[variant]


# --- the benchmark -------------------------------------------------------------------------------------------------


def run(
  variants: Sequence[str] = tuple(PAIRS),
  lengths: Sequence[int] = (512, 1024, 2048, 4096),
  batch: int = 4,
  layers: int = 4,
  d_model: int = 256,
  heads: int = 4,
  steps: int = 5,
  warmup: int = 1,
  torch_threads: int | None = None,
  **shape_options,
) -> dict[str, Any]:
  """Median train-step seconds of ours and the peer per (variant, length), measured alternately in one process."""
  variants, lengths = tuple(variants), tuple(int(n) for n in lengths)
  check_variants(variants)
  if not lengths or any(n < 1 for n in lengths):
    raise ValueError(f"lengths must be positive integers, got {list(lengths)}")
  if steps < 1 or warmup < 0:
    raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
  device = jax.devices()[0]
  if device.platform != "cpu":
    raise ValueError(
      f"research bench peers compares against CPU builds of torch; JAX runs on {device.platform}. "
      f"Run with JAX_PLATFORMS=cpu"
    )
  torch = require("torch")
  vers = versions()
  threads = torch_threads or jax_threads()
  torch.set_num_threads(threads)
  rows = []
  for variant in variants:
    for length in lengths:
      shape = Shape(layers=layers, d_model=d_model, heads=heads, length=length, batch=batch, **shape_options)
      rows.append(_measure(variant, shape, steps, warmup))
  summary = {}
  for variant in variants:
    ratios = [r["ratio"] for r in rows if r["variant"] == variant]
    summary[variant] = {"peer": PAIRS[variant][0], "min_ratio": min(ratios), "at_least_as_fast": min(ratios) >= 1.0}
  shape = Shape(layers=layers, d_model=d_model, heads=heads, length=lengths[0], batch=batch, **shape_options)
  spec = {
    **dataclasses.asdict(shape),
    "lengths": list(lengths),
    "variants": list(variants),
    "steps": steps,
    "warmup": warmup,
    "mlp_dim": shape.mlp_ratio * d_model,
  }
  del spec["length"]
  return {
    "schema_version": SCHEMA_VERSION,
    "kind": "peers",
    "spec": spec,
    "device": device.device_kind,
    "platform": device.platform,
    "jax_threads": jax_threads(),
    "torch_threads": torch.get_num_threads(),
    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    "versions": vers,
    "rows": rows,
    "summary": summary,
  }


def _measure(variant: str, shape: Shape, steps: int, warmup: int) -> dict[str, Any]:
  batch = synthetic_batch(shape)
  ours = OurStep(variant, shape, batch)
  model = peer_model(variant, shape)
  peer = peer_step(model, batch)
  ours_t, peer_t = [], []
  for i in range(warmup + steps):
    for fn, times in ((ours, ours_t), (peer, peer_t)):
      tic = time.perf_counter()
      loss = fn()
      if i >= warmup:
        times.append(time.perf_counter() - tic)
      if fn is ours:
        loss_ours = loss
      else:
        loss_peer = loss
  ours_s, peer_s = statistics.median(ours_t), statistics.median(peer_t)
  params_peer = param_count(model)
  rel = params_peer / ours.params - 1.0
  return {
    "variant": variant,
    "peer": PAIRS[variant][0],
    "length": shape.length,
    "ours_s": ours_s,
    "peer_s": peer_s,
    "ratio": peer_s / ours_s,
    "ours_times_s": ours_t,
    "peer_times_s": peer_t,
    "ours_compile_s": ours.compile_s,
    "params_ours": ours.params,
    "params_peer": params_peer,
    "params_rel_diff": rel,
    "params_flagged": abs(rel) > PARAM_TOLERANCE,
    "loss_ours": loss_ours,
    "loss_peer": loss_peer,
  }


def markdown(result: dict[str, Any]) -> str:
  s = result["spec"]
  unroll = s.get("scan_unroll") or s["layers"]  # 0 (or a result from before the field) = fully unrolled
  vers = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
  lines = [
    f"## Train step vs peer libraries on {result['device']}",
    "",
    f"{s['layers']}-layer d{s['d_model']} {s['heads']}-head encoder (MLP {s['mlp_dim']}, vocab {s['vocab_size']}, "
    f"{s['num_classes']} classes), batch {s['batch']}, AdamW step; median of {s['steps']} steps after {s['warmup']} "
    f"warm-up, ours and the peer alternating. Threads: JAX {result['jax_threads']}, torch {result['torch_threads']}. "
    f"Ours: model.scan_unroll={unroll} (the layer loop {'fully' if unroll >= s['layers'] else 'partly'} unrolled).",
    f"Versions: {vers}.",
    "",
    "| variant | peer | length | ours (s) | peer (s) | ratio peer/ours | params ours | params peer | diff |",
    "|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in result["rows"]:
    flag = " (> 1%)" if r["params_flagged"] else ""
    lines.append(
      f"| {r['variant']} | {r['peer']} | {r['length']} | {r['ours_s']:.3f} | {r['peer_s']:.3f} | "
      f"{r['ratio']:.2f} | {r['params_ours']:,} | {r['params_peer']:,} | "
      f"{100 * r['params_rel_diff']:+.2f}%{flag} |"
    )
  lines += [
    "",
    "ratio >= 1.0: ours is at least as fast. Minimum ratio per variant: "
    + ", ".join(f"{v} {x['min_ratio']:.2f}" for v, x in result["summary"].items())
    + ".",
    "",
  ]
  return "\n".join(lines)


def write(result: dict[str, Any], out_dir: Path, name: str = "peers") -> dict[str, Path]:
  return write_files(Path(out_dir) / device_dir(result["device"]), name, result, markdown(result))


# --- FAVOR+ equivalence --------------------------------------------------------------------------------------------


def performer_equivalence(
  batch: int = 2,
  length: int = 64,
  heads: int = 2,
  head_dim: int = 16,
  num_features: int = 32,
  scale: float = 1.0,
  seed: int = 0,
) -> dict[str, Any]:
  """Max |ours - performer-pytorch| of non-causal FAVOR+ given the same projection W (FxD) and q, k, v.

  Same on both sides: x' = x·D^(-1/4) before the projection, ‖x'‖²/2 subtracted, the ratio F^(-1/2), W used as
  given (rows not renormalised). Different (performer-pytorch `softmax_kernel` / `linear_attention` vs
  research/attention/performer.py `favor_features` / `linear_attention`):
    * feature eps: theirs adds eps=1e-4 INSIDE every feature, φ = F^(-1/2)(exp(·) + 1e-4). That is not a
      constant factor, so it changes the function (a floor under small kernel values). Ours adds nothing.
    * key stabiliser: theirs subtracts the max of W k' over all positions AND features per (batch, head),
      before subtracting ‖k'‖²/2; ours subtracts the max of W k' − ‖k'‖²/2 over the valid tokens of the
      segment and the features. Both are one constant per (batch, head) that cancels between numerator and
      denominator (exactly, without the feature eps).
    * query stabiliser: both subtract max_f (W q')_f per row; ours drops ‖q'‖²/2 (a per-row factor that cancels)
      and then divides φ(q_i) by s_i = max_f φ(q_i)_f Z_f, so that its denominator lies in [1, F].
    * denominator: theirs 1 / (φ(q)·Σφ(k)) with no eps; ours / (φ(q)·Σφ(k) + 1e-6) on the rescaled query,
      i.e. a relative change of at most 1e-6.
  Aligned comparison (`max_abs_diff`): their `softmax_kernel(..., eps=0.0)` and their `linear_attention` (the
  functions FastAttention.forward calls), against our real mixer (PerformerAttention with W put into its
  random_features collection, default eps). `max_abs_diff_default` is their FastAttention module as shipped
  (feature eps 1e-4) with W copied into its projection buffer. For scale, both are also compared with exact
  softmax attention (`ours_vs_exact_softmax`, `default_vs_exact_softmax`: the random-feature estimation error).
  """
  torch = require("torch")
  pp = require("performer_pytorch")
  rng = np.random.default_rng(seed)
  q, k, v = (scale * rng.standard_normal((batch, length, heads, head_dim)).astype(np.float32) for _ in range(3))
  w_FxD = np.asarray(draw_features(jax.random.PRNGKey(seed), num_features, head_dim))

  mixer = PerformerAttention(cfg=PerformerAttention.Config(num_features=num_features))
  segments = Segments.from_lengths(jnp.full((batch,), length, jnp.int32), length)
  ours = np.asarray(mixer.apply({"random_features": {"projection": {"w": jnp.asarray(w_FxD)}}}, q, k, v, segments))

  to_bhld = functools.partial(np.einsum, "blhd->bhld")
  qt, kt, vt = (torch.from_numpy(np.ascontiguousarray(to_bhld(x))) for x in (q, k, v))
  wt = torch.from_numpy(w_FxD)
  with torch.no_grad():
    phi_q = pp.performer_pytorch.softmax_kernel(qt, projection_matrix=wt, is_query=True, eps=0.0)
    phi_k = pp.performer_pytorch.softmax_kernel(kt, projection_matrix=wt, is_query=False, eps=0.0)
    aligned = pp.performer_pytorch.linear_attention(phi_q, phi_k, vt).numpy()
    fast = pp.FastAttention(head_dim, nb_features=num_features, causal=False)
    fast.projection_matrix.copy_(wt)
    default = fast(qt, kt, vt).numpy()
  ours_bhld = to_bhld(ours)
  logits_BxHxLxS = np.einsum("blhd,bshd->bhls", q.astype(np.float64), k.astype(np.float64)) * head_dim**-0.5
  weights = np.exp(logits_BxHxLxS - logits_BxHxLxS.max(-1, keepdims=True))
  exact = np.einsum("bhls,bshd->bhld", weights / weights.sum(-1, keepdims=True), v.astype(np.float64))
  return {
    "max_abs_diff": float(np.max(np.abs(ours_bhld - aligned))),
    "max_abs_diff_default": float(np.max(np.abs(ours_bhld - default))),
    "max_abs_out": float(np.max(np.abs(ours))),
    "ours_vs_exact_softmax": float(np.max(np.abs(ours_bhld - exact))),
    "default_vs_exact_softmax": float(np.max(np.abs(default - exact))),
    "shape": {
      "batch": batch,
      "length": length,
      "heads": heads,
      "head_dim": head_dim,
      "num_features": num_features,
      "scale": scale,
    },
  }
